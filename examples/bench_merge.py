"""Merge-speed benchmark on synthetic specialists of real ViT shapes (a script that prints tables, not a test).

For each shape and N it writes a random base plus N specialists (base + structured low-rank + noise task vectors) as
real safetensors folders, then measures, each in a fresh process with the thread count set explicitly:

* every requested method through r2m-hf (``r2m_hf.merge``: wall time, peak RSS);
* the read floor: reading every input byte once (warm page cache, as the merge sees it);
* a naive in-memory implementation of the same math (all models loaded whole, then
  ``r2m_hf.engine.merge_state_dicts``), skipped when it would not fit in memory;
* mergekit's ``mergekit-pytorch`` on the same inputs for the methods it has, when it is installed (optional; it is
  LGPL and is never vendored: install it in its own environment and pass ``--mergekit-bin``).

It writes BENCHMARKS.md (tables + the slope of time in N), results JSON and a time-vs-N plot. Example::

    python examples/bench_merge.py --shapes vit-b --n 3 6 12 --methods r2m average ties --threads 2
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
    from r2m_hf.merge import merge
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


def _child(kind: str, config: Path, out: Path, threads: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(threads), kind, str(config), str(out)],
        capture_output=True,
        text=True,
        env=env,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{kind} failed: {done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _mergekit(binary: str, folders: list[Path], method: str, work: Path, threads: int) -> dict | None:
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
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    wrapper = (
        "import resource, subprocess, sys, time, json; t = time.perf_counter();"
        "r = subprocess.run(sys.argv[1:]);"
        "print(json.dumps({'rc': r.returncode, 'seconds': time.perf_counter() - t,"
        " 'peak_rss_gib': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024**2}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", wrapper, binary, str(config), str(out), "--quiet"],
        capture_output=True,
        text=True,
        env=env,
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    shutil.rmtree(out, ignore_errors=True)
    return result if result["rc"] == 0 else {"error": done.stderr[-500:]}


def run(args: argparse.Namespace) -> dict:
    import yaml

    from r2m_hf.groups import build_layout

    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    rows = []
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
            for label in args.methods:
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
                ours = _child("r2m-hf", config, out, args.threads)
                shutil.rmtree(out, ignore_errors=True)
                row = {
                    "shape": shape,
                    "n": n,
                    "method": label,
                    "threads": args.threads,
                    "read_floor": floor,
                    "seconds": ours["seconds"],
                    "peak_rss_gib": ours["peak_rss_gib"],
                    "input_gib": model_bytes * (n + 1) / 1024**3,
                }
                if model_bytes * (n + 1) * 2.2 < args.naive_limit_gib * 1024**3:
                    spec = {
                        "method": method,
                        "parameters": recipe["parameters"],
                        "base": files[0],
                        "models": files[1:],
                        "groups": {
                            layout.disk_names()[k]: g.value for k, g in layout.groups.items() if g.value != "head"
                        },
                    }
                    (work / "naive.json").write_text(json.dumps(spec))
                    naive = _child("naive", work / "naive.json", work, args.threads)
                    row.update(naive_seconds=naive["seconds"], naive_peak_rss_gib=naive["peak_rss_gib"])
                if args.mergekit_bin:
                    mk = _mergekit(args.mergekit_bin, folders, method, work, args.threads)
                    if mk and "seconds" in mk:
                        row.update(mergekit_seconds=mk["seconds"], mergekit_peak_rss_gib=mk["peak_rss_gib"])
                rows.append(row)
                print(_line(row), flush=True)
            if not args.keep_inputs:
                for folder in folders:
                    shutil.rmtree(folder, ignore_errors=True)
    return {"rows": rows, "machine": _machine(args.threads)}


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
        f"{row['shape']} × {row['n']} {row['method']:>15s}: {fmt('seconds')} "
        f"(read floor {fmt('read_floor')}, naive {fmt('naive_seconds')}, mergekit {fmt('mergekit_seconds')}), "
        f"peak RSS {fmt('peak_rss_gib', ' GiB')}"
    )


def _machine(threads: int) -> dict:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
        "threads": threads,
        "platform": platform.platform(),
        "date": time.strftime("%Y-%m-%d"),
    }


def _slopes(rows: list[dict]) -> dict[tuple[str, str], tuple[float, float]]:
    """Least-squares seconds = a + b·N per (shape, method): returns (b, a)."""
    out = {}
    for key in {(r["shape"], r["method"]) for r in rows}:
        pts = [(r["n"], r["seconds"]) for r in rows if (r["shape"], r["method"]) == key]
        if len(pts) < 2:
            continue
        n = torch.tensor([p[0] for p in pts], dtype=torch.float64)
        t = torch.tensor([p[1] for p in pts], dtype=torch.float64)
        b = float(((n - n.mean()) * (t - t.mean())).sum() / ((n - n.mean()) ** 2).sum())
        out[key] = (b, float(t.mean() - b * n.mean()))
    return out


def write_report(results: dict, path: Path, plot: Path | None) -> None:
    rows = results["rows"]
    machine = results["machine"]
    lines = [
        "# Merge benchmarks",
        "",
        "Synthetic specialists of real ViT shapes (random base + rank-16 + noise task vectors, float32 safetensors), "
        f"written by `examples/bench_merge.py`. Machine: {machine['cpus']} CPUs, {machine['threads']} threads set "
        f"explicitly, torch {machine['torch']}, {machine['platform']}, {machine['date']}. A method written "
        "`name:key=value` ran with those parameters, otherwise with its defaults. Each number is one run in a fresh "
        "process; peak RSS is the process's maximum resident set.",
        "",
        "| shape | N | method | r2m-hf (s) | × read floor | × average | peak RSS (GiB) | inputs (GiB) "
        "| naive in-memory (s / GiB) | mergekit-pytorch (s / GiB) |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    average = {(r["shape"], r["n"]): r["seconds"] for r in rows if r["method"] == "average"}
    for r in rows:
        avg = average.get((r["shape"], r["n"]))
        naive = f"{r['naive_seconds']:.1f} / {r['naive_peak_rss_gib']:.2f}" if "naive_seconds" in r else "–"
        mk = f"{r['mergekit_seconds']:.1f} / {r['mergekit_peak_rss_gib']:.2f}" if "mergekit_seconds" in r else "–"
        lines.append(
            f"| {r['shape']} | {r['n']} | {r['method']} | {r['seconds']:.1f} | {r['seconds'] / r['read_floor']:.0f} | "
            f"{(r['seconds'] / avg) if avg else float('nan'):.2f} | {r['peak_rss_gib']:.2f} | {r['input_gib']:.2f} | "
            f"{naive} | {mk} |"
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
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "r2m-bench-merge")
    parser.add_argument("--keep-inputs", action="store_true", help="keep the synthetic folders for the next run")
    parser.add_argument("--naive-limit-gib", type=float, default=12.0, help="skip the naive run above this estimate")
    parser.add_argument("--mergekit-bin", default=shutil.which("mergekit-pytorch"), help="mergekit-pytorch to compare")
    parser.add_argument("--output", type=Path, default=Path("BENCHMARKS.md"))
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--plot", type=Path, default=None)
    parser.add_argument("--from-json", nargs="+", type=Path, default=None, help="only write the report from these")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.from_json:
        parts = [json.loads(p.read_text()) for p in args.from_json]
        results = {"rows": [r for p in parts for r in p["rows"]], "machine": parts[0]["machine"]}
    else:
        results = run(args)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    write_report(results, args.output, args.plot)
    print(args.output.read_text())


if __name__ == "__main__":
    main()
