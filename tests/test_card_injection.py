"""The model card stays a valid ``huggingface_hub.ModelCard`` with exactly r2m-hf's metadata, and its body gains no
heading, HTML, link or image, whatever the names, folders, references, notes, licences and evaluation strings it is
built from (issue 10)."""

from __future__ import annotations

import re
import shutil

import yaml
from conftest import write_yaml
from huggingface_hub import ModelCard

HOSTILE = [
    "fs\n---\nlicense: evil\n---",
    "x</td><script>alert(1)</script>",
    "![img](https://evil/x.png) [click](https://evil)",
    "# Injected heading",
    "`code` | col | ```",
    "&anchor *star: {a: b} 'quote\"",
]


def test_card_of_hostile_folder_names_and_outputs_stays_a_valid_model_card(zoo, tmp_path, cli):
    """Specialists in folders with hostile names (the names derived from them are sanitised), a hostile output
    folder name and hostile evaluation strings: the card loads with ModelCard, its metadata is exactly ours, and
    the body has no injected heading, HTML, link or image."""
    work = tmp_path / "work"
    models = []
    for i, text in enumerate(HOSTILE[:3]):
        folder = work / f"m{i}{text.replace('/', '∕')}"
        shutil.copytree(zoo.specialists[i], folder)
        models.append({"model": f"./{folder.name}"})
    data = {"merge_method": "average", "base_model": str(zoo.base), "models": models}
    config = write_yaml(work / "m.yaml", data)
    out = tmp_path / ("out" + HOSTILE[3].replace("/", "∕") + HOSTILE[4].replace("/", "∕"))
    result = cli("merge", config, out, "--no-progress")
    assert result.code == 0, result.err
    text = (out / "README.md").read_text()
    card = ModelCard.load(out / "README.md")
    assert set(card.data.to_dict()) <= {"library_name", "pipeline_tag", "tags", "base_model_relation", "license"}
    assert card.data.base_model_relation == "merge" and card.data.pipeline_tag == "image-classification"
    _assert_no_injection(text, card.text)
    recipe_block = re.search(r"^(`{3,})yaml\n(.*?)\n\1$", card.text, re.S | re.M)
    assert recipe_block is not None
    recorded = yaml.safe_load(recipe_block[2])
    assert recorded == yaml.safe_load((out / "merge_config.yaml").read_text())  # the block holds the whole recipe
    assert [m["source"]["reference"] for m in recorded["models"]] == [m["model"] for m in models]
    assert all(re.fullmatch(r"[\w.+-]+", m["name"]) for m in recorded["models"])
    assert card.text.startswith("# out-Injected-heading-code-col\n")


def _assert_no_injection(text: str, body: str) -> None:
    """One front matter; outside the recipe's code block (where nothing renders) no heading, HTML, link or image."""
    assert text.count("\n---\n") == 1 and text.startswith("---\n")  # one front matter, closed once
    blocks = list(re.finditer(r"^(`{3,})yaml\n.*?\n\1$", body, re.S | re.M))
    assert len(blocks) == 1 and body.rstrip().endswith(blocks[0][1])
    body = body[: blocks[0].start()]
    headings = [line for line in body.splitlines() if line.startswith("#")]
    assert all(not h.lower().startswith("# injected") for h in headings), headings
    assert "<script>" not in body and "</td>" not in body
    assert not re.search(r"(?<!\\)\[click\]\(", body) and not re.search(r"(?<!\\)!\[img\]\(", body)


def test_card_built_from_hostile_recipe_report_and_evaluation(tmp_path):
    """Everything the card writes from the recipe, report and evaluation is escaped, and ModelCard accepts it."""
    from r2m_hf.card import build_model_card
    from r2m_hf.recipe import MergeReport, Recipe

    evil = " ".join(HOSTILE)
    source = {"reference": evil, "path": evil, "files": {}, "license": "<b>mit</b>"}
    recipe_data = {
        "r2m_hf_version": "0",
        "merge_method": "average",
        "base_model": {"reference": "org/b", "repo_id": "org/b\n# x", "revision": "`main` | x", "commit": "0" * 40},
        "models": [
            {"name": "ok", "kind": "full", "fake_index": 1, "parameters": {}, "source": source},
            {"name": "ok2", "kind": "full", "fake_index": 0, "parameters": {}, "source": dict(source, license="mit")},
        ],
        "parameters": {"head": "mean"},
        "dtype": "float32",
        "out_dtype": "float32",
        "evaluation": {"dataset": "data\n```\n# injected", "split": evil},
    }
    report = {
        "merge_method": "average",
        "architecture": evil,
        "specialists": ["ok", "ok2"],
        "tensors": 1,
        "files": ["model.safetensors"],
        "seconds": 1.0,
        "device": evil,
        "processes": 1,
        "notes": [evil, "```", "# injected"],
        "image_processor": evil,
        "method": {},
        "warnings": [evil],
    }
    evaluation = {
        "dataset": "x/" + HOSTILE[0],
        "split": evil,
        "n_samples": evil,
        "notes": [evil],
        "families": {f: {"auc": 0.5, "n": 2} for f in HOSTILE},
        "mean": {"auc": 0.5},
        "overall": {"auc": 0.5, "eer_threshold": 0.5},
    }
    card = build_model_card(
        Recipe.model_validate(recipe_data), MergeReport.model_validate(report), evaluation, repo_id="org/merged"
    )
    path = tmp_path / "README.md"
    card.save(path)
    loaded = ModelCard.load(path)
    assert loaded.data.license == "mit"  # the other input's "<b>mit</b>" is not a licence id: ignored
    assert loaded.data.base_model is None  # "org/b\n# x" is not a repo id
    _assert_no_injection(path.read_text(), loaded.text)
    fence = re.search(r"^(`{3,})yaml$", loaded.text, re.M)[1]
    assert len(fence) > 3 and loaded.text.rstrip().endswith(fence)  # the recipe's own ``` cannot close its block
