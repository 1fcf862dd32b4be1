"""Merge-speed benchmark on synthetic specialists of real ViT shapes (not a test).

Writes a random ViT base plus N specialists (base + structured low-rank + noise task vectors) as real safetensors
folders, then times `r2m-hf merge` for each method in a fresh process (wall time and peak RSS) next to the read floor
(reading every input byte once). Usage::

    python examples/bench_merge.py --shape vit-b --n 3 --methods r2m average ties --threads 2
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

SHAPES = {
    "vit-b": {
        "hidden_size": 768,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "intermediate_size": 3072,
        "image_size": 224,
        "patch_size": 16,
    },
    "vit-l": {
        "hidden_size": 1024,
        "num_hidden_layers": 24,
        "num_attention_heads": 16,
        "intermediate_size": 4096,
        "image_size": 224,
        "patch_size": 14,
    },
}


def build_inputs(root: Path, shape: str, n: int, seed: int = 0) -> Path:
    """Write a base and `n` specialists of the given shape; returns the YAML path (reused when present)."""
    import yaml
    from safetensors.torch import save_file
    from transformers import ViTConfig

    from r2m_hf.groups import build_layout

    yaml_path = root / f"{shape}-n{n}.yaml"
    if yaml_path.exists():
        return yaml_path
    config = ViTConfig(**SHAPES[shape], num_labels=2, id2label={0: "real", 1: "fake"}, label2id={"real": 0, "fake": 1})
    layout = build_layout(config)
    disk = layout.disk_names()
    gen = torch.Generator().manual_seed(seed)
    base = {name: 0.02 * torch.randn(tuple(s), generator=gen) for name, s in layout.shapes.items()}
    folders = []
    for i in range(n + 1):
        folder = root / (f"{shape}-base" if i == 0 else f"{shape}-spec{i}")
        folders.append(folder)
        if folder.exists():
            continue
        folder.mkdir(parents=True)
        state = {}
        for name, tensor in base.items():
            value = tensor
            if i > 0:
                if tensor.dim() == 2 and min(tensor.shape) > 8:
                    u = torch.randn(tensor.shape[0], 8, generator=gen)
                    v = torch.randn(8, tensor.shape[1], generator=gen)
                    value = tensor + 1e-3 * (u @ v) / 8 + 1e-4 * torch.randn(tensor.shape, generator=gen)
                else:
                    value = tensor + 1e-3 * torch.randn(tensor.shape, generator=gen)
            state[disk[name]] = value.contiguous()
        save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
        config.save_pretrained(folder)
    recipe = {"merge_method": "r2m", "base_model": folders[0].name, "models": [{"model": f.name} for f in folders[1:]]}
    yaml_path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return yaml_path


def read_floor(folders: list[Path]) -> float:
    """Seconds to read every input byte once (page cache warm, as the merge sees it)."""
    from safetensors import safe_open

    start = time.perf_counter()
    for folder in folders:
        with safe_open(str(folder / "model.safetensors"), "pt") as fh:
            for key in fh.keys():
                fh.get_tensor(key)
    return time.perf_counter() - start


def run_method(yaml_path: Path, method: str, threads: int, extra: dict) -> dict:
    import yaml

    recipe = yaml.safe_load(yaml_path.read_text())
    recipe["merge_method"] = method
    recipe["parameters"] = extra
    run_yaml = yaml_path.with_name(f"run-{method}.yaml")
    run_yaml.write_text(yaml.safe_dump(recipe, sort_keys=False))
    out = Path(tempfile.mkdtemp(prefix="bench-out-")) / "merged"
    code = (
        f"import resource, sys, time, torch; torch.set_num_threads({threads});"
        "from r2m_hf.merge import merge; t=time.perf_counter();"
        "merge(sys.argv[1], sys.argv[2], progress=False);"
        "print(time.perf_counter()-t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    )
    done = subprocess.run([sys.executable, "-c", code, str(run_yaml), str(out)], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    seconds, rss_kb = done.stdout.strip().splitlines()[-1].split()
    return {"method": method, "seconds": float(seconds), "peak_rss_gib": int(rss_kb) / 1024**2}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="vit-b")
    parser.add_argument("--n", type=int, default=3)
    parser.add_argument("--methods", nargs="+", default=["r2m", "average", "ties"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "r2m-bench-merge")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.workdir.mkdir(parents=True, exist_ok=True)
    yaml_path = build_inputs(args.workdir, args.shape, args.n)
    folders = [args.workdir / f"{args.shape}-base"] + [
        args.workdir / f"{args.shape}-spec{i}" for i in range(1, args.n + 1)
    ]
    floor = read_floor(folders)
    rows = [run_method(yaml_path, m, args.threads, {}) for m in args.methods]
    print(f"\n{args.shape} × {args.n}, {args.threads} threads; read floor {floor:.2f} s\n")
    print("| method | wall time (s) | × read floor | peak RSS (GiB) |")
    print("|---|---:|---:|---:|")
    for row in rows:
        print(f"| {row['method']} | {row['seconds']:.2f} | {row['seconds'] / floor:.1f} | {row['peak_rss_gib']:.2f} |")
    if args.json:
        args.json.write_text(
            json.dumps({"shape": args.shape, "n": args.n, "read_floor": floor, "rows": rows}, indent=2)
        )


if __name__ == "__main__":
    main()
