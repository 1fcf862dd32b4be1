"""Merge-speed benchmark on synthetic specialists of real ViT shapes (a script that prints tables, not a test).

For each shape and N it writes a random base plus N specialists (base + structured low-rank + noise task vectors) as
real safetensors folders, then measures, each in a fresh process with the thread count set explicitly:

* every requested method through the ``r2m-hf merge`` command (whole process: wall time, peak RSS; and the merge's
  own time from its report);
* the read floor: reading every input byte once (warm page cache, as the merge sees it);
* a naive in-memory implementation of the same math (all models loaded whole, then
  ``r2m_hf.engine.merge_state_dicts``), skipped when it would not fit in memory;
* mergekit's ``mergekit-pytorch`` on the same inputs for the methods it has, when it is installed (optional; it is
  LGPL and is never vendored: ``--mergekit-venv DIR`` installs mergekit 0.1.5 into its own environment there, or pass
  ``--mergekit-bin``).

With ``--targets`` it also times what the speed targets compare against on the first shape and N: ``cat`` of the
inputs, ``python -c "import torch"``, a naive average with safetensors ``load_file`` + ``save_file``, and the start
of ``r2m-hf --help``, ``r2m-hf methods`` and ``r2m-hf check-specialist --help``. It writes a Markdown report (the
targets table, every row, the slope of time in N), results JSON and a time-vs-N plot; BENCHMARKS.md is edited by
hand from that report. Example::

    python examples/bench_merge.py --shapes vit-b16 --n 3 --methods average r2m ties --targets --threads 2 \
        --repeat 3 --mergekit-venv /tmp/mergekit-venv --json vitb.json
    python examples/bench_merge.py --shapes clip-vit-l14 --n 6 --methods r2m --threads 2 --json vitl.json
    python examples/bench_merge.py --from-json vitb.json vitl.json --output BENCHMARKS.generated.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

SHAPES = {
    "vit-tiny": {"arch": "vit", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                 "intermediate_size": 128, "image_size": 32, "patch_size": 8},  # a smoke test of the script
    "vit-b16": {"arch": "vit", "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
                "intermediate_size": 3072, "image_size": 224, "patch_size": 16},
    "clip-vit-l14": {"arch": "clip", "hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16,
                     "intermediate_size": 4096, "image_size": 224, "patch_size": 14},
}  # fmt: skip
MERGEKIT_METHODS = {"average": "linear", "task_arithmetic": "task_arithmetic", "ties": "ties"}
CHILD = r"""
import json, resource, sys, time, torch
torch.set_num_threads(int(sys.argv[1]))
kind, config, out = sys.argv[2], sys.argv[3], sys.argv[4]
t = time.perf_counter()
if kind == "r2m-hf":
    from r2m_hf import merge
    merge(config, out, progress=False)
elif kind == "naive":
    from safetensors.torch import load_file
    from r2m_hf.engine import merge_state_dicts
    from r2m_hf.groups import Group
    spec = json.loads(open(config).read())
    load = lambda p: {k: v for k, v in load_file(p).items()}
    base = load(spec["base"])
    models = [load(p) for p in spec["models"]]
    groups = {k: Group(g) for k, g in spec["groups"].items()}
    merge_state_dicts(spec["method"], spec["parameters"], base, models, groups)
elif kind == "naive-average":
    from safetensors.torch import load_file, save_file
    files = json.loads(open(config).read())
    t = time.perf_counter()  # after `import torch`: what the targets add the torch import to
    states = [load_file(p) for p in files[1:]]
    save_file({k: torch.stack([s[k] for s in states]).mean(0) for k in states[0]}, out)
elif kind == "read":
    from r2m_hf.checkpoint import SafetensorsFile
    for path in json.loads(open(config).read()):
        f = SafetensorsFile(path)
        for key in f.keys():
            f.get(key)
def peak_rss_gib():
    # VmHWM is this process image's high-water mark; ru_maxrss would also count the parent's before exec().
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024**2
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
print(json.dumps({"seconds": time.perf_counter() - t, "peak_rss_gib": peak_rss_gib()}))
"""


def _config(shape: str):
    from r2m_hf.zoo import tiny_config

    dims = {k: v for k, v in SHAPES[shape].items() if k != "arch"}
    return tiny_config(SHAPES[shape]["arch"], **dims)


def build_inputs(root: Path, shape: str, n: int, seed: int = 0) -> list[Path]:
    """Write (or reuse) a base and `n` specialists of `shape` under `root`; returns [base, spec1, …]."""
    from safetensors.torch import save_file

    from r2m_hf.groups import Group, build_layout

    config = _config(shape)
    layout = build_layout(config)
    disk = layout.disk_names()
    folders = [root / f"{shape}-base"] + [root / f"{shape}-spec{i}" for i in range(1, n + 1)]
    gen = torch.Generator().manual_seed(seed)
    base = None
    for i, folder in enumerate(folders):
        if (folder / "model.safetensors").exists():
            continue
        if base is None:
            g = torch.Generator().manual_seed(seed)
            base = {name: 0.02 * torch.randn(tuple(s), generator=g) for name, s in layout.shapes.items()}
        gen.manual_seed(seed + 1000 * i)
        state = {}
        for name, tensor in base.items():
            value = tensor
            if i > 0:
                if layout.groups[name] in (Group.TRUNCATABLE, Group.SUBSPACE) and tensor.dim() == 2:
                    u = torch.randn(tensor.shape[0], 16, generator=gen)
                    v = torch.randn(16, tensor.shape[1], generator=gen)
                    value = tensor + 2e-3 * (u @ v) / 16 + 2e-4 * torch.randn(tensor.shape, generator=gen)
                else:
                    value = tensor + 1e-3 * torch.randn(tensor.shape, generator=gen)
            state[disk[name]] = value.contiguous()
        folder.mkdir(parents=True, exist_ok=True)
        save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
        config.save_pretrained(folder)
    return folders


WRAPPER = r"""
import json, resource, subprocess, sys, time
t = time.perf_counter()
r = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
print(json.dumps({"rc": r.returncode, "seconds": time.perf_counter() - t,
                  "peak_rss_gib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024**2,
                  "stdout": r.stdout[-2000:], "stderr": r.stderr[-3000:]}))
"""


def _timed(cmd: list[str], threads: int, repeat: int = 1) -> dict:
    """Whole-process wall seconds and peak RSS (GiB) of a command in a fresh process: the fastest of `repeat` runs."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "PYTHONWARNINGS": "ignore"}
    best = None
    for _ in range(repeat):
        done = subprocess.run([sys.executable, "-c", WRAPPER, *cmd], capture_output=True, text=True, env=env)
        result = json.loads(done.stdout.strip().splitlines()[-1])
        if result["rc"] != 0:
            raise RuntimeError(f"{' '.join(cmd[:3])} … failed: {result['stderr']}")
        best = result if best is None or result["seconds"] < best["seconds"] else best
    return best


def warm_up(folders: list[Path], work: Path, threads: int) -> None:
    """One untimed `task_arithmetic` merge of these inputs (base included): it fills the layout cache and the
    input-hash cache, which every later merge of the same files reads instead of recomputing (the first merge of new
    files pays both)."""
    import yaml

    config = work / "warm-up.yaml"
    recipe = {
        "merge_method": "task_arithmetic",
        "base_model": str(folders[0]),
        "models": [{"model": str(f)} for f in folders[1:]],
    }
    config.write_text(yaml.safe_dump(recipe, sort_keys=False))
    out = work / "warm-up-out"
    shutil.rmtree(out, ignore_errors=True)
    _timed([*_cli(), "merge", str(config), str(out), "--no-progress"], threads)
    shutil.rmtree(out, ignore_errors=True)


def _median(runs: list[dict]) -> dict:
    """The run with the median whole-process time (the slower middle one for an even count)."""
    return sorted(runs, key=lambda r: r["seconds"])[len(runs) // 2]


def _runs_text(rows: list[dict]) -> str:
    """``3 runs`` (or ``1–3 runs`` when the rows differ) for the report's header."""
    counts = sorted({r.get("runs", 1) for r in rows}) or [1]
    return f"{counts[0]} run{'s' if counts[-1] > 1 else ''}" if len(counts) == 1 else f"{counts[0]}–{counts[-1]} runs"


def _child(kind: str, config: Path, out: Path, threads: int) -> dict:
    """Run one of CHILD's measurements; returns its own timing (seconds after `import torch`) and the whole process."""
    whole = _timed([sys.executable, "-c", CHILD, str(threads), kind, str(config), str(out)], threads)
    return {**json.loads(whole["stdout"].strip().splitlines()[-1]), "process_seconds": whole["seconds"]}


def _cli() -> list[str]:
    found = shutil.which("r2m-hf")
    return [found] if found else [sys.executable, "-m", "r2m_hf"]


def mergekit_bin(venv: Path) -> str:
    """mergekit-pytorch of mergekit 0.1.5 in its own environment at `venv` (created and installed when missing).

    The environment sees this one's packages (torch, transformers) so only mergekit itself is installed; mergekit is
    LGPL and stays outside the project.
    """
    binary = venv / "bin" / "mergekit-pytorch"
    if not binary.exists():
        subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "mergekit==0.1.5"], check=True)
    return str(binary)


def _mergekit(binary: str, folders: list[Path], method: str, work: Path, threads: int, repeat: int = 1) -> dict | None:
    import yaml

    if method not in MERGEKIT_METHODS:
        return None
    params = {"ties": {"density": 0.2, "weight": 1.0}, "task_arithmetic": {"weight": 0.3}}.get(method, {"weight": 1.0})
    recipe = {
        "merge_method": MERGEKIT_METHODS[method],
        "base_model": str(folders[0] / "model.safetensors"),
        "models": [{"model": str(f / "model.safetensors"), "parameters": params} for f in folders[1:]],
        "dtype": "float32",
    }
    if method == "average":
        recipe.pop("base_model")
    config = work / f"mergekit-{method}.yaml"
    config.write_text(yaml.safe_dump(recipe, sort_keys=False))
    out = work / f"mergekit-{method}-out"
    shutil.rmtree(out, ignore_errors=True)
    try:
        runs = []
        for _ in range(repeat):
            shutil.rmtree(out, ignore_errors=True)
            runs.append(_timed([binary, str(config), str(out), "--quiet"], threads))
        return _median(runs)
    except RuntimeError as exc:
        return {"error": str(exc)[-500:]}
    finally:
        shutil.rmtree(out, ignore_errors=True)


def measure_targets(files: list[str], work: Path, threads: int) -> dict:
    """What the speed targets compare against (fastest of 3 for the quick ones)."""
    cli = _cli()
    listing = work / "files.json"
    listing.write_text(json.dumps(files))
    naive = _child("naive-average", listing, work / "naive-average.safetensors", threads)
    (work / "naive-average.safetensors").unlink(missing_ok=True)
    return {
        "cat": _timed(["sh", "-c", 'cat "$@" > /dev/null', "cat", *files], threads, repeat=3)["seconds"],
        "import_torch": _timed([sys.executable, "-c", "import torch"], threads, repeat=3)["seconds"],
        "naive_average": naive["seconds"],
        "naive_average_process": naive["process_seconds"],
        "help": _timed([*cli, "--help"], threads, repeat=3)["seconds"],
        "methods": _timed([*cli, "methods"], threads, repeat=3)["seconds"],
        "check_specialist_help": _timed([*cli, "check-specialist", "--help"], threads, repeat=3)["seconds"],
        "files": len(files),
    }


def run(args: argparse.Namespace) -> dict:
    from r2m_hf.groups import build_layout

    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    mergekit = str(mergekit_bin(args.mergekit_venv)) if args.mergekit_venv else args.mergekit_bin
    rows, targets = [], None
    for shape in args.shapes:
        layout = build_layout(_config(shape))
        model_bytes = sum(torch.Size(s).numel() * 4 for s in layout.shapes.values())
        for n in args.n:
            print(f"\n== {shape} × {n}: writing inputs …", flush=True)
            folders = build_inputs(work, shape, n)
            files = [str(f / "model.safetensors") for f in folders]
            (work / "files.json").write_text(json.dumps(files))
            _child("read", work / "files.json", work, args.threads)  # warm the page cache once
            floor = min(_child("read", work / "files.json", work, args.threads)["seconds"] for _ in range(2))
            warm_up(folders, work, args.threads)
            if args.targets and targets is None:
                targets = {"shape": shape, "n": n, **measure_targets(files, work, args.threads)}
                print(json.dumps(targets), flush=True)
            for label in args.methods:
                rows.append(_measure(label, shape, n, folders, files, floor, model_bytes, layout, mergekit, args))
                print(_line(rows[-1]), flush=True)
            if not args.keep_inputs:
                for folder in folders:
                    shutil.rmtree(folder, ignore_errors=True)
    return {"rows": rows, "targets": targets, "machine": _machine(args.threads)}


def _measure(label, shape, n, folders, files, floor, model_bytes, layout, mergekit, args) -> dict:
    """One row: `label` through `r2m-hf merge` (whole process), the naive in-memory engine and mergekit."""
    import yaml

    work = args.workdir
    method, parameters = _parse_method(label)
    recipe = {
        "merge_method": method,
        "base_model": str(folders[0]),
        "models": [{"model": str(f)} for f in folders[1:]],
        "parameters": parameters,
    }
    config = work / f"{shape}-{n}-{label.replace(':', '_').replace('=', '-')}.yaml"
    config.write_text(yaml.safe_dump(recipe, sort_keys=False))
    out = work / "out"
    shutil.rmtree(out, ignore_errors=True)
    runs = []
    for _ in range(args.repeat):  # the median run (by whole-process time) of `--repeat` fresh processes
        shutil.rmtree(out, ignore_errors=True)
        whole = _timed([*_cli(), "merge", str(config), str(out), "--no-progress"], args.threads)
        runs.append({**whole, "merge_seconds": json.loads((out / "merge_report.json").read_text())["seconds"]})
    shutil.rmtree(out, ignore_errors=True)
    ours = _median(runs)
    merge_seconds = ours["merge_seconds"]
    row = {
        "shape": shape,
        "n": n,
        "method": label,
        "threads": args.threads,
        "read_floor": floor,
        "seconds": ours["seconds"],
        "merge_seconds": merge_seconds,
        "peak_rss_gib": ours["peak_rss_gib"],
        "input_gib": model_bytes * (n + 1) / 1024**3,
        "runs": args.repeat,
    }
    if model_bytes * (n + 1) * 2.2 < args.naive_limit_gib * 1024**3:
        spec = {
            "method": method,
            "parameters": parameters,
            "base": files[0],
            "models": files[1:],
            "groups": {layout.disk_names()[k]: g.value for k, g in layout.groups.items() if g.value != "head"},
        }
        (work / "naive.json").write_text(json.dumps(spec))
        naive = _child("naive", work / "naive.json", work, args.threads)
        row.update(naive_seconds=naive["seconds"], naive_peak_rss_gib=naive["peak_rss_gib"])
    if mergekit:
        mk = _mergekit(mergekit, folders, method, work, args.threads, args.repeat)
        if mk and "seconds" in mk:
            row.update(mergekit_seconds=mk["seconds"], mergekit_peak_rss_gib=mk["peak_rss_gib"])
    return row


def _parse_method(label: str) -> tuple[str, dict]:
    """``r2m:svd=exact,alpha=0.6`` → ("r2m", {"svd": "exact", "alpha": 0.6})."""
    import yaml

    name, _, rest = label.partition(":")
    parameters = {}
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        parameters[key] = yaml.safe_load(value)
    return name, parameters


def _line(row: dict) -> str:
    def fmt(key: str, unit: str = "s") -> str:
        return f"{row[key]:.2f}{unit}" if key in row else "–"

    return (
        f"{row['shape']} × {row['n']} {row['method']:>15s}: {fmt('seconds')} whole process, {fmt('merge_seconds')} "
        f"merging (read floor {fmt('read_floor')}, naive {fmt('naive_seconds')}, mergekit {fmt('mergekit_seconds')}), "
        f"peak RSS {fmt('peak_rss_gib', ' GiB')}"
    )


def _machine(threads: int) -> dict:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
        "threads": threads,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(default)"),
        "platform": platform.platform(),
        "date": time.strftime("%Y-%m-%d"),
    }


def _slopes(rows: list[dict]) -> dict[tuple[str, str], tuple[float, float]]:
    """Least-squares seconds = a + b·N per (shape, method): returns (b, a)."""
    out = {}
    for key in {(r["shape"], r["method"]) for r in rows}:
        pts = [(r["n"], r["seconds"]) for r in rows if (r["shape"], r["method"]) == key]
        if len({p[0] for p in pts}) < 2:
            continue
        n = torch.tensor([p[0] for p in pts], dtype=torch.float64)
        t = torch.tensor([p[1] for p in pts], dtype=torch.float64)
        b = float(((n - n.mean()) * (t - t.mean())).sum() / ((n - n.mean()) ** 2).sum())
        out[key] = (b, float(t.mean() - b * n.mean()))
    return out


def _verdict(ok: bool | None) -> str:
    return "–" if ok is None else ("yes" if ok else "**no**")


def target_lines(results: dict) -> list[str]:
    """The speed targets' table: what each is compared with, the measured value and whether it is met."""
    t, rows = results.get("targets"), results["rows"]
    if not t:
        return []

    def row(shape, n, method):
        return next((r for r in rows if (r["shape"], r["n"], r["method"]) == (shape, n, method)), None)

    avg, r2m, ties = (row(t["shape"], t["n"], m) for m in ("average", "r2m", "ties"))
    floor = t["import_torch"] + t["naive_average"]
    lines = [
        f"## Targets ({t['shape']} × {t['n']}, whole process, {results['machine']['threads']} threads)",
        "",
        "| what | measured | target | met? |",
        "|---|---|---|---|",
        f"| `cat` of the {t['files']} input files | {t['cat']:.2f} s | – | |",
        f'| `python -c "import torch"` | {t["import_torch"]:.2f} s | – | |',
        f"| naive in-memory average, safetensors `load_file` + `save_file` | {t['naive_average']:.2f} s after the "
        f"torch import ({t['naive_average_process']:.2f} s whole process) | – | |",
    ]
    for key, command in (
        ("help", "--help"),
        ("methods", "methods"),
        ("check_specialist_help", "check-specialist --help"),
    ):
        lines.append(f"| `r2m-hf {command}` | {t[key]:.2f} s | ≤ 0.5 s | {_verdict(t[key] <= 0.5)} |")
    if avg:
        lines.append(
            f"| `r2m-hf merge` average | {avg['seconds']:.2f} s (merging {avg['merge_seconds']:.2f} s) | ≤ 2 × "
            f"(torch import + naive average) = {2 * floor:.2f} s | {_verdict(avg['seconds'] <= 2 * floor)} |"
        )
    if r2m:
        ratio = r2m["seconds"] / avg["seconds"] if avg else None
        lines.append(
            f"| `r2m-hf merge` r2m (defaults) | {r2m['seconds']:.2f} s (merging {r2m['merge_seconds']:.2f} s), "
            f"{ratio:.2f} × average | ≤ 1.5 × average | {_verdict(None if ratio is None else ratio <= 1.5)} |"
        )
    if r2m and ties and "mergekit_seconds" in ties:
        speedup = ties["mergekit_seconds"] / r2m["seconds"]
        lines.append(
            f"| mergekit-pytorch 0.1.5 TIES | {ties['mergekit_seconds']:.2f} s: r2m is {speedup:.1f} × faster "
            f"| r2m ≥ 5 × faster | {_verdict(speedup >= 5)} |"
        )
    big = row("clip-vit-l14", 6, "r2m")
    if big:
        ok = big["seconds"] <= 50 and big["peak_rss_gib"] <= 3
        lines.append(
            f"| CLIP ViT-L/14 × 6, r2m | {big['seconds']:.1f} s (merging {big['merge_seconds']:.1f} s), peak RSS "
            f"{big['peak_rss_gib']:.2f} GiB | ≤ 50 s, ≤ 3 GiB | {_verdict(ok)} |"
        )
    for (shape, method), (b, a) in sorted(_slopes(rows).items()):
        if method in ("r2m", "average"):
            lines.append(f"| time in N, {shape} {method} | {a:.2f} s {b:+.2f} s per specialist | linear | – |")
    per_gib = [f"{r['shape']} × {r['n']}: {r['seconds'] / r['input_gib']:.1f}" for r in rows if r["method"] == "r2m"]
    if per_gib:
        lines.append(f"| r2m seconds per input GiB (model size) | {'; '.join(per_gib)} | about constant | – |")
    lines.append("| GPU: whole merge within 2 × the read time | not measured here (no device) | | – |")
    return lines + [""]


def write_report(results: dict, path: Path, plot: Path | None) -> None:
    rows = results["rows"]
    machine = results["machine"]
    lines = [
        "# Merge benchmarks",
        "",
        "Synthetic specialists of real ViT shapes (random base + rank-16 + noise task vectors, float32 safetensors), "
        f"written by `examples/bench_merge.py`. Machine: {machine['cpus']} CPUs, {machine['threads']} threads set "
        f"explicitly (OMP_WAIT_POLICY {machine.get('omp_wait_policy', '(default)')}), torch {machine['torch']}, "
        f"{machine['platform']}, {machine['date']}. A method written "
        "`name:key=value` ran with those parameters, otherwise with its defaults. Each merge number is "
        f"the median of {_runs_text(rows)} of the whole "
        'process (`r2m-hf merge`: imports, planning, reading, merging, writing); "merging" is the time the merge '
        "report gives; peak RSS is the process's maximum resident set. Before the timed runs, one untimed merge of "
        "the same inputs fills the layout and input-hash caches (the first merge of new files also hashes them, "
        "~1 s per GiB).",
        "",
        *target_lines(results),
        "| shape | N | method | r2m-hf (s) | merging (s) | × read floor | × average | peak RSS (GiB) | inputs (GiB) "
        "| naive in-memory (s / GiB) | mergekit-pytorch (s / GiB) |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    average = {(r["shape"], r["n"]): r["seconds"] for r in rows if r["method"] == "average"}
    for r in rows:
        avg = average.get((r["shape"], r["n"]))
        naive = f"{r['naive_seconds']:.1f} / {r['naive_peak_rss_gib']:.2f}" if "naive_seconds" in r else "–"
        mk = f"{r['mergekit_seconds']:.1f} / {r['mergekit_peak_rss_gib']:.2f}" if "mergekit_seconds" in r else "–"
        merging = f"{r['merge_seconds']:.1f}" if "merge_seconds" in r else "–"
        times_average = f"{r['seconds'] / avg:.2f}" if avg else "–"
        lines.append(
            f"| {r['shape']} | {r['n']} | {r['method']} | {r['seconds']:.1f} | {merging} | "
            f"{r['seconds'] / r['read_floor']:.0f} | {times_average} | "
            f"{r['peak_rss_gib']:.2f} | {r['input_gib']:.2f} | {naive} | {mk} |"
        )
    slopes = _slopes(rows)
    if slopes:
        lines += [
            "",
            "Time in N (least squares `seconds ≈ a + b·N`):",
            "",
            "| shape | method | b (s per specialist) | a (s) |",
            "|---|---|---:|---:|",
        ]
        for (shape, method), (b, a) in sorted(slopes.items()):
            lines.append(f"| {shape} | {method} | {b:.2f} | {a:.2f} |")
    path.write_text("\n".join(lines) + "\n")
    if plot is not None and slopes:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        for shape, method in sorted({(r["shape"], r["method"]) for r in rows}):
            pts = sorted((r["n"], r["seconds"]) for r in rows if (r["shape"], r["method"]) == (shape, method))
            if len(pts) < 2:  # single-N rows are in the table; the plot shows how time grows with N
                continue
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"{shape} {method}")
        ax.set_xlabel("N specialists")
        ax.set_ylabel("wall time (s)")
        ax.set_title("r2m-hf merge time vs N")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(plot, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", choices=sorted(SHAPES), default=["vit-b16"])
    parser.add_argument("--n", nargs="+", type=int, default=[3])
    parser.add_argument("--methods", nargs="+", default=["r2m", "average", "ties"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=1, help="merge runs per row; the median run is reported")
    parser.add_argument("--targets", action="store_true", help="also time what the speed targets compare against")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "r2m-bench-merge")
    parser.add_argument("--keep-inputs", action="store_true", help="keep the synthetic folders for the next run")
    parser.add_argument("--naive-limit-gib", type=float, default=12.0, help="skip the naive run above this estimate")
    parser.add_argument("--mergekit-bin", default=shutil.which("mergekit-pytorch"), help="mergekit-pytorch to compare")
    parser.add_argument("--mergekit-venv", type=Path, default=None, help="install mergekit 0.1.5 in a venv there")
    parser.add_argument(
        "--output",
        type=Path,
        default=Path("BENCHMARKS.generated.md"),
        help="the report (BENCHMARKS.md is edited by hand from it)",
    )
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--plot", type=Path, default=None)
    parser.add_argument("--from-json", nargs="+", type=Path, default=None, help="only write the report from these")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.from_json:
        parts = [json.loads(p.read_text()) for p in args.from_json]
        targets = next((p["targets"] for p in parts if p.get("targets")), None)
        results = {"rows": [r for p in parts for r in p["rows"]], "targets": targets, "machine": parts[0]["machine"]}
    else:
        results = run(args)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    write_report(results, args.output, args.plot)
    print(args.output.read_text())


if __name__ == "__main__":
    main()
