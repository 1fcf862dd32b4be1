"""r2m_hf.merge: the API does what the CLI does (plan → run → evaluate → card once → push), and the plan's memory
estimate is the engine's part plus the method's own."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from huggingface_hub import ModelCard

from r2m_hf.merge import merge, plan_merge
from r2m_hf.recipe import EVAL_FILE, MergeReport, Recipe
from tests.conftest import write_imagefolder, write_yaml
from tests.hub_server import HubServer

pytest_plugins = ["tests.hub_fixtures"]


def _recipe(zoo, tmp_path: Path, **extra) -> Path:
    models = [{"model": str(p), "name": n} for p, n in zip(zoo.specialists, zoo.names, strict=True)]
    return write_yaml(
        tmp_path / "m.yaml", {"merge_method": "r2m", "base_model": str(zoo.base), "models": models, **extra}
    )


@pytest.fixture
def card_writes(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every call of `write_model_card` during the test, by folder."""
    import r2m_hf.card

    calls: list[Path] = []
    original = r2m_hf.card.write_model_card

    def counting(folder, **kwargs):
        calls.append(Path(folder))
        return original(folder, **kwargs)

    monkeypatch.setattr(r2m_hf.card, "write_model_card", counting)
    return calls


@pytest.fixture
def datasets_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "datasets-cache"))


def test_merge_runs_the_evaluation_section_and_writes_the_card_once(
    zoo, tmp_path: Path, card_writes, datasets_cache
) -> None:
    data = write_imagefolder(tmp_path / "data", 12)
    config = _recipe(zoo, tmp_path, evaluation={"dataset": str(data), "split": "test", "batch_size": 4})

    result = merge(config, tmp_path / "out", progress=False)
    out = result.output_dir
    assert card_writes == [out]
    assert result.evaluation is not None and result.pushed is None
    assert set(result.evaluation.families) == {"fs", "fr"} and result.evaluation.n_samples == 12
    saved = json.loads((out / EVAL_FILE).read_text())
    assert saved["mean"]["auc"] == pytest.approx(result.evaluation.mean["auc"])

    card = ModelCard.load(out / "README.md")
    auc = {r.dataset_config: r.metric_value for r in card.data.eval_results if r.metric_type == "roc_auc"}
    assert set(auc) == {"fs", "fr", "mean"} and auc["mean"] == pytest.approx(saved["mean"]["auc"], abs=1e-6)
    assert "## Evaluation" in card.text and "![AUC per forgery family](eval_auc.png)" in card.text
    assert result.report == MergeReport.read(out) and result.warnings == result.report.warnings
    assert Recipe.read(out).evaluation.dataset == "data"  # a local dataset: relative to the recipe, not absolute


def test_evaluate_false_skips_the_section(zoo, tmp_path: Path, card_writes) -> None:
    config = _recipe(zoo, tmp_path, evaluation={"dataset": str(tmp_path / "absent")})
    result = merge(config, tmp_path / "out", progress=False, evaluate=False)
    assert result.evaluation is None and not (result.output_dir / EVAL_FILE).exists()
    # written once, into the temporary folder before it is renamed into place (no evaluation to wait for)
    assert len(card_writes) == 1 and card_writes[0].name.startswith(".out.tmp-")
    assert "## Evaluation" not in (result.output_dir / "README.md").read_text()


def test_a_failed_evaluation_keeps_the_merge_and_its_card(zoo, tmp_path: Path, card_writes, datasets_cache) -> None:
    from r2m_hf.errors import R2MError

    config = _recipe(zoo, tmp_path, evaluation={"dataset": str(tmp_path / "no-such-dataset")})
    with pytest.raises(R2MError):
        merge(config, tmp_path / "out", progress=False)
    out = (tmp_path / "out").resolve()
    assert card_writes == [out]
    assert (out / "model.safetensors").is_file() and "## Merge diagnostics" in (out / "README.md").read_text()
    assert not (out / EVAL_FILE).exists()


def test_merge_pushes_with_the_given_token(zoo, tmp_path: Path, hub_server: HubServer, hub_token: str) -> None:
    config = _recipe(zoo, tmp_path)
    result = merge(config, tmp_path / "out", progress=False, push_to_hub="r2m-tester/api", token=hub_token)
    assert result.pushed is not None and result.pushed.repo_id == "r2m-tester/api"
    head = hub_server.repo("r2m-tester/api").history()[0]
    assert head.oid == result.pushed.commit_sha and head.title == "Merge fs, fr, efs with r2m (r2m-hf)"
    assert 'model="r2m-tester/api"' in (result.output_dir / "README.md").read_text()


def test_memory_estimate_is_the_engines_part_plus_the_methods(zoo, tmp_path: Path) -> None:
    def estimate(**parameters):
        plan = plan_merge(_recipe(zoo, tmp_path, parameters=parameters))
        layout = plan.layout
        backbone = layout.backbone_names
        largest = max(math.prod(s) for s in layout.shapes.values())
        extra = plan.method().extra_memory_bytes(
            {n: tuple(layout.shapes[n]) for n in backbone}, {n: layout.groups[n] for n in backbone}, 4
        )
        return plan.memory_estimate(), (3 * 3 + 5) * largest * 4, extra  # this tensor, the next (read ahead), work

    cached, engine, extra = estimate()
    assert extra > 0 and cached == engine + extra  # R²M's residual cache is counted by R²M
    recomputed, engine_again, none = estimate(residual_cache="recompute")
    assert none == 0 and recomputed == engine_again == engine
    larger, _, more = estimate(residual_rank_ratio=0.25)
    assert more > extra and larger > cached
