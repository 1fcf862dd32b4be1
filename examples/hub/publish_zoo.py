"""Publish a tiny seeded zoo to a Hub endpoint and write the merge YAML and an evaluation dataset (used by run.sh)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from r2m_hf.hub import push_folder
from r2m_hf.zoo import build_zoo, save_lora_specialist


def main(namespace: str, workdir: Path) -> None:
    zoo = build_zoo(workdir / "zoo", names=("fs", "fr", "efs"))
    lora = save_lora_specialist(workdir / "zoo" / "fe-lora", zoo.base, seed=7, legacy_names=True, scale=0.02)
    repos = {"backbone": zoo.base, **dict(zip(zoo.names, zoo.specialists)), "fe-lora": lora}
    for name, folder in repos.items():
        repo_id = f"{namespace}/r2m-demo-{name}"
        if name == "fe-lora":  # adapters name their base; point it at the published backbone
            import json

            config = json.loads((folder / "adapter_config.json").read_text())
            config["base_model_name_or_path"] = f"{namespace}/r2m-demo-backbone"
            (folder / "adapter_config.json").write_text(json.dumps(config, indent=2))
        result = push_folder(folder, repo_id, commit_message=f"r2m-hf demo: {name}")
        print(f"pushed {repo_id} @ {result.commit_sha[:12]}")

    rng = np.random.default_rng(0)
    data = workdir / "eval-data" / "test"
    rows = ["file_name,family"]
    for label in ("real", "fake"):
        (data / label).mkdir(parents=True, exist_ok=True)
        for i in range(12):
            pixels = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(data / label / f"{i}.png")
            rows.append(f"{label}/{i}.png,{'real' if label == 'real' else ('fs' if i % 2 else 'fr')}")
    (data / "metadata.csv").write_text("\n".join(rows) + "\n")

    recipe = {
        "merge_method": "r2m",
        "base_model": f"{namespace}/r2m-demo-backbone",
        "models": [{"model": f"{namespace}/r2m-demo-{n}", "name": n} for n in (*zoo.names, "fe-lora")],
        "parameters": {"alpha": 0.6, "residual_rank_ratio": 0.1},
        "evaluation": {"dataset": str(workdir / "eval-data"), "split": "test", "family_column": "family"},
    }
    (workdir / "merge.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    print(f"wrote {workdir / 'merge.yaml'}")


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
