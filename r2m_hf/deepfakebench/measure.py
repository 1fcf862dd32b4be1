"""Time and peak memory of converting a full-size (CLIP ViT-L/14, ~1.2 GB float32) DeepfakeBench checkpoint, and of
exporting the converted folder back.

``python -m r2m_hf.deepfakebench.measure [WORKDIR]`` writes a random-weights DF40-style checkpoint (DDP ``module.``
prefix, ``{"state_dict": ...}`` wrapper) with the real ViT-L/14 vision sizes and a config-only backbone folder, then
runs each step in a fresh process and prints its seconds, its peak resident memory (``VmHWM``) and the peaks of the
anonymous and file-backed parts (sampled every 20 ms), beside a process that only imports the package. No download;
the files are left in WORKDIR (default: a new temporary folder).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

VIT_L14 = dict(
    hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16, patch_size=14,
    image_size=224, projection_dim=768, hidden_act="quick_gelu", layer_norm_eps=1e-5,
)  # fmt: skip

STEP = """
import sys, threading, time
peaks = {"RssAnon": 0, "RssFile": 0}
def status():
    fields = (line.partition(":") for line in open("/proc/self/status"))
    return {k: int(v.split()[0]) for k, _, v in fields if k in ("VmHWM", "RssAnon", "RssFile")}
def sample():
    while True:
        now = status()
        for key in peaks:
            peaks[key] = max(peaks[key], now[key])
        time.sleep(0.02)
threading.Thread(target=sample, daemon=True).start()
from r2m_hf.deepfakebench import convert_dfb, export_dfb
start = time.perf_counter()
if sys.argv[1] == "convert":
    convert_dfb(sys.argv[2], sys.argv[3], backbone=sys.argv[4], overwrite=True)
elif sys.argv[1] == "export":
    export_dfb(sys.argv[2], sys.argv[3], overwrite=True)
seconds = time.perf_counter() - start
time.sleep(0.05)
print(seconds, status()["VmHWM"], peaks["RssAnon"], peaks["RssFile"])
"""


def write_inputs(workdir: Path) -> tuple[Path, Path]:
    """A config-only ViT-L/14 CLIP folder and a random DF40-style checkpoint of that size."""
    import torch

    from .modeling_deepfakebench_clip import DeepfakeBenchCLIPConfig
    from .state_dict import expected_shapes

    backbone = workdir / "clip-vit-large-patch14"
    backbone.mkdir(parents=True, exist_ok=True)
    (backbone / "config.json").write_text(json.dumps({"model_type": "clip", "vision_config": VIT_L14}))
    checkpoint = workdir / "vitl14-df40.pth"
    generator = torch.Generator().manual_seed(0)
    shapes = expected_shapes(DeepfakeBenchCLIPConfig(**VIT_L14))
    state = {f"module.{name}": torch.randn(shape, generator=generator) * 0.02 for name, shape in shapes.items()}
    torch.save({"state_dict": state}, checkpoint)
    return backbone, checkpoint


def _step(*args: str) -> str:
    out = subprocess.run([sys.executable, "-c", STEP, *args], check=True, capture_output=True, text=True).stdout
    seconds, peak, anon, file = (float(x) for x in out.split())
    mib = 1024
    return (
        f"{seconds:.1f} s, VmHWM {peak / mib:.0f} MiB (peak anonymous {anon / mib:.0f} MiB, "
        f"file-backed {file / mib:.0f} MiB)"
    )


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    workdir = Path(argv[0]) if argv else Path(tempfile.mkdtemp(prefix="dfb-measure-"))
    backbone, checkpoint = write_inputs(workdir)
    folder, exported = workdir / "converted", workdir / "exported.pth"
    print(f"checkpoint: {checkpoint} ({checkpoint.stat().st_size / 2**20:.0f} MiB)")
    print(f"import only: {_step('none')}")
    print(f"convert-dfb: {_step('convert', str(checkpoint), str(folder), str(backbone))}")
    print(f"export-dfb:  {_step('export', str(folder), str(exported))}")


if __name__ == "__main__":
    main()
