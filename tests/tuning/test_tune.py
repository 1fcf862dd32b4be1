"""`tune` end to end on the tiny zoo and a planted split: the optimum is found, the outputs are complete and
``best.yaml`` merges to the model the best trial scored; the in-memory merge equals the streamed one; bad inputs fail
in one line before any trial runs."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch
import yaml

from r2m_hf.config import load_config
from r2m_hf.errors import ConfigError, DatasetError, OutputError
from r2m_hf.evaluation import evaluate_model
from r2m_hf.tuning import TuneResult, tune

from .conftest import LAMBDA_STAR, save_split

torch.set_num_threads(1)
TUNE = {"methods": ["task_arithmetic", "ties"]}


@pytest.fixture(scope="module")
def tuned(planted, tmp_path_factory) -> TuneResult:
    work = tmp_path_factory.mktemp("tuned")
    config = planted.write_recipe(work, tune=TUNE)
    return tune(config, planted.data, output_dir=work / "out", trials=16, progress=False)


def test_finds_the_planted_optimum(tuned):
    assert tuned.budgets == {"task_arithmetic": 8, "ties": 8}
    assert len(tuned.trials) == 16
    assert all(t.state in ("COMPLETE", "PRUNED") for t in tuned.trials)
    best = tuned.best
    assert best.method == "task_arithmetic"
    assert abs(best.parameters["lambda"] - LAMBDA_STAR) < 0.1, best.parameters
    assert best.value >= 0.99
    # The planted split separates the settings: the other method and far-away λ are clearly worse.
    assert tuned.best_per_method["ties"].value < 0.97
    assert min(t.value for t in tuned.trials if t.value is not None) < 0.9
    ordered = sorted((t for t in tuned.trials if t.method == "task_arithmetic"), key=lambda t: t.number)
    assert ordered[tuned.trials_to_reach("task_arithmetic", best.value) - 1] is best
    assert tuned.trials_to_reach("ties", 1.01) is None
    timing = tuned.timing()
    assert timing["seconds_per_trial"] > 0 and 0 < timing["merge_share"] < 1 and 0 < timing["eval_share"] < 1
    assert math.isclose(timing["merge_share"] + timing["eval_share"], 1.0, abs_tol=0.05)


def test_every_method_starts_at_its_package_defaults(tuned):
    """A new study's first trial is the method's defaults (inside the searched range), so the tuned result is never
    below what the defaults score on validation."""
    from r2m_hf.methods.registry import get_method

    for method in ("task_arithmetic", "ties"):
        first = min((t for t in tuned.trials if t.method == method), key=lambda t: t.number)
        defaults = get_method(method).parameters_model().model_dump(by_alias=True)
        searched = get_method(method).search_space
        assert {k: first.parameters[k] for k in searched} == {k: defaults[k] for k in searched}, method
        assert tuned.best_per_method[method].value >= first.value


def test_defaults_outside_a_narrowed_range_are_not_queued(planted, tmp_path):
    narrowed = {"methods": ["task_arithmetic"], "space": {"task_arithmetic": {"lambda": {"low": 0.5, "high": 0.6}}}}
    config = planted.write_recipe(tmp_path, tune=narrowed)
    result = tune(config, planted.data, output_dir=tmp_path / "out", trials=2, progress=False, prune=False)
    assert all(0.5 <= t.parameters["lambda"] <= 0.6 for t in result.trials)


def test_outputs(tuned):
    out = tuned.output_dir
    board = (out / "leaderboard.md").read_text()
    assert "task_arithmetic: 8, ties: 8" in board
    assert "| task_arithmetic | 8 |" in board and "| ties | 8 |" in board
    assert board.count("| task_arithmetic#") + board.count("| ties#") == 16 + 2  # every trial + best per method
    with open(out / "leaderboard.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 16 and {r["method"] for r in rows} == {"task_arithmetic", "ties"}
    best_row = next(r for r in rows if r["trial"] == tuned.best.label)
    assert float(best_row["objective"]) == pytest.approx(tuned.best.value)
    assert {"family:a:auc", "family:b:auc", "overall:eer", "param:lambda", "param:density"} <= set(rows[0])
    for name in ("task_arithmetic.png", "ties.png", "best_per_method.png"):
        assert (out / "plots" / name).stat().st_size > 1000
    assert tuned.files["best_yaml"] == out / "best.yaml"


def test_best_yaml_merges_to_the_model_of_the_best_trial(tuned, planted, tmp_path):
    from r2m_hf.merge import merge

    config = load_config(tuned.files["best_yaml"])
    assert config.merge_method == "task_arithmetic"
    assert config.parameters["lambda"] == tuned.best.parameters["lambda"]
    folder = merge(tuned.files["best_yaml"], tmp_path / "best", progress=False).output_dir
    result = evaluate_model(str(folder), str(planted.data), split="validation", progress=False)
    for key in ("auc", "eer", "ap", "acc"):
        assert result.overall[key] == pytest.approx(tuned.best.overall[key], abs=1e-9), key
    for family in ("a", "b"):
        assert result.families[family]["auc"] == pytest.approx(tuned.best.families[family]["auc"], abs=1e-9)


def test_resuming_with_other_inputs_is_refused(tuned, planted):
    config = tuned.output_dir.parent / "recipe.yaml"
    for changes, fragment in (({"metric": "ap"}, "metric 'auc'"), ({"max_samples": 60}, "96 rows")):
        with pytest.raises(ConfigError) as exc:
            tune(config, planted.data, output_dir=tuned.output_dir, trials=16, progress=False, **changes)
        assert "study 'recipe/task_arithmetic' was tuned with" in _one_line(exc) and fragment in str(exc.value)


def test_streaming_merge_equals_the_kept_one(planted):
    from r2m_hf.config import parse_config
    from r2m_hf.merge import plan_merge
    from r2m_hf.tuning.session import MergeSession, image_processor

    plan = plan_merge(parse_config(planted.recipe))
    kept = MergeSession(plan, image_processor(plan))
    streamed = MergeSession(plan, image_processor(plan), memory_limit=0)
    assert kept.in_memory and not streamed.in_memory
    a, _ = kept.merge("ties", {"lambda": 1.3, "density": 0.4})
    b, _ = streamed.merge("ties", {"lambda": 1.3, "density": 0.4})
    assert a.keys() == b.keys() == set(plan.layout.shapes)
    for name in a:
        assert torch.equal(a[name], b[name]), name
    # The kept tensors are copied into each trial's slots: a merge cannot edit them.
    again, _ = kept.merge("ties", {"lambda": 1.3, "density": 0.4})
    assert all(torch.equal(a[n], again[n]) for n in a)


def _one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message and message
    return message


@pytest.mark.parametrize(
    ("tune_section", "fragments"),
    [
        ({"methods": ["average"]}, ["'average' has an empty search space"]),
        ({"space": {"task_arithmetic": {"lambda": None}}}, ["'task_arithmetic' has an empty search space"]),
        (
            {"space": {"task_arithmetic": {"lambda": {"low": -1.0, "high": 1.0}}}},
            ["tune.space.task_arithmetic.lambda", "low -1.0", "task_arithmetic accepts"],
        ),
        ({"methods": ["ties"], "space": {"ties": {"density": {"high": 1.5}}}}, ["tune.space.ties.density", "high 1.5"]),
        (
            {"methods": ["ties"], "space": {"ties": {"trim": ["tensor", "layer"]}}},
            ["tune.space.ties.trim", "choice 'layer'"],
        ),
        (
            {"space": {"task_arithmetic": {"lamda": {"low": 0.1, "high": 1}}}},
            ["task_arithmetic has no parameter 'lamda'"],
        ),
        ({"space": {"ties": {"density": {"low": 0.1, "high": 1}}}}, ["tune.space names ties", "not tuned"]),
    ],
)  # fmt: skip
def test_bad_search_space(planted, tmp_path, tune_section, fragments):
    config = planted.write_recipe(tmp_path, tune=tune_section)
    with pytest.raises(ConfigError) as exc:
        tune(config, planted.data, output_dir=tmp_path / "out", trials=2, progress=False)
    message = _one_line(exc)
    for fragment in fragments:
        assert fragment in message, message


def test_dataset_without_fakes(planted, tmp_path):
    data = save_split(tmp_path / "reals", planted.images[:20], [0] * 20)
    with pytest.raises(DatasetError) as exc:
        tune(planted.write_recipe(tmp_path), data, output_dir=tmp_path / "out", trials=2, progress=False)
    assert "has no fake rows" in _one_line(exc)


@pytest.mark.parametrize("where", ["missing", "file"])
def test_unwritable_storage(planted, tmp_path, where):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    folder = tmp_path / "no" / "such" if where == "missing" else blocker
    with pytest.raises(OutputError) as exc:
        tune(planted.write_recipe(tmp_path), planted.data, output_dir=tmp_path / "out",
             storage=f"sqlite:///{folder}/tune.db", trials=2, progress=False)  # fmt: skip
    assert "storage sqlite:///" in _one_line(exc)


def test_test_split_refused(planted, tmp_path):
    with pytest.raises(ConfigError) as exc:
        tune(planted.write_recipe(tmp_path), planted.data, split="test", output_dir=tmp_path / "out", trials=2,
             progress=False)  # fmt: skip
    assert "i_know_this_is_test" in _one_line(exc)
    assert not (tmp_path / "out").exists()


def test_test_split_allowed_when_asked_and_metric_eer(planted, tmp_path):
    config = planted.write_recipe(tmp_path, tune={"metric": "eer", "space": {"task_arithmetic": {"lambda": 0.8}}})
    with pytest.raises(ConfigError, match="empty search space"):  # λ fixed: nothing left to search
        tune(config, planted.data, split="test", i_know_this_is_test=True, output_dir=tmp_path / "o", progress=False)
    config = planted.write_recipe(
        tmp_path, tune={"metric": "eer", "space": {"task_arithmetic": {"lambda": {"low": 0.7, "high": 0.9}}}}
    )
    result = tune(config, planted.data, split="test", i_know_this_is_test=True, output_dir=tmp_path / "out",
                  trials=3, prune=False, plots=False, progress=False)  # fmt: skip
    assert result.split == "test" and result.direction == "minimize" and result.metric == "eer"
    assert all(0.7 <= t.parameters["lambda"] <= 0.9 for t in result.trials)
    assert result.best.value == min(t.value for t in result.trials)
    assert yaml.safe_load((tmp_path / "out" / "best.yaml").read_text())["parameters"]["lambda"] == pytest.approx(
        result.best.parameters["lambda"]
    )
    assert np.isfinite(result.best.value)


def test_a_recipe_with_a_tune_section_merges_and_tunes_from_the_cli(planted, tmp_path, cli):
    config = planted.write_recipe(tmp_path, tune={"space": {"task_arithmetic": {"lambda": {"low": 0.7, "high": 0.9}}}})
    merged = cli("merge", config, tmp_path / "merged", "--no-progress")
    assert merged.code == 0, merged.err
    assert "tune" not in yaml.safe_load((tmp_path / "merged" / "merge_config.yaml").read_text())
    tuned = cli("tune", config, "--dataset", planted.data, "--trials", 2, "--output", tmp_path / "out", "--no-progress")
    assert tuned.code == 0, tuned.err
    best = yaml.safe_load((tmp_path / "out" / "best.yaml").read_text())
    assert 0.7 <= best["parameters"]["lambda"] <= 0.9


def test_in_memory_merge_equals_the_file_merge_with_lora_adapters(zoo, lora, tmp_path):
    from conftest import state

    from r2m_hf.merge import merge, plan_merge
    from r2m_hf.tuning.session import MergeSession, image_processor

    recipe = {
        "merge_method": "ties",
        "base_model": str(zoo.base),
        "models": [{"model": str(zoo.specialists[0]), "name": "fs"}, {"model": str(lora.v5), "name": "v5"},
                   {"model": str(lora.legacy), "name": "legacy"}],
        "parameters": {"lambda": 1.2, "density": 0.3, "head": "mean"},
    }  # fmt: skip
    path = tmp_path / "lora.yaml"
    path.write_text(yaml.safe_dump(recipe))
    written = state(merge(path, tmp_path / "merged", progress=False).output_dir)
    plan = plan_merge(path)
    merged, _ = MergeSession(plan, image_processor(plan)).merge("ties", {"lambda": 1.2, "density": 0.3})
    assert merged.keys() == written.keys()
    for name, tensor in written.items():
        assert torch.equal(merged[name], tensor), name


def test_metric_auc_at_families(planted, tmp_path):
    config = planted.write_recipe(tmp_path, tune={"metric": "auc@families"})
    result = tune(config, planted.data, output_dir=tmp_path / "out", trials=2, prune=False, plots=False,
                  merge_best=tmp_path / "best", progress=False)  # fmt: skip
    for t in result.trials:
        assert t.value == pytest.approx(np.mean([t.families["a"]["auc"], t.families["b"]["auc"]]))
    assert result.merged.output_dir == (tmp_path / "best").resolve()
    written = yaml.safe_load((result.merged.output_dir / "merge_config.yaml").read_text())
    assert written["merge_method"] == "task_arithmetic"
    assert written["parameters"]["lambda"] == pytest.approx(result.best.parameters["lambda"])
    plain = save_split(tmp_path / "plain", planted.images, planted.labels)  # no family column
    with pytest.raises(ConfigError) as exc:
        tune(config, plain, output_dir=tmp_path / "out2", trials=2, progress=False)
    assert "auc@families" in _one_line(exc) and "no family column" in str(exc.value)


def test_trials_that_fail_are_recorded_and_a_method_that_always_fails_stops(planted, tmp_path, monkeypatch):
    from r2m_hf.errors import MethodError
    from r2m_hf.methods import registry
    from r2m_hf.methods.task_arithmetic import TaskArithmetic

    class Broken(TaskArithmetic):
        """Task arithmetic whose every `fail_every`-th merge fails (a method that cannot run on some inputs)."""

        name = "sometimes_broken"
        fail_every, merges = 2, 0

        def merge(self, slot):
            if slot.index == 0:
                Broken.merges += 1
            if Broken.merges % Broken.fail_every == 0:
                raise MethodError(f"merge {Broken.merges} cannot run")
            return super().merge(slot)

    registry.get_method("task_arithmetic")  # the built-ins first, then the test's method beside them
    monkeypatch.setitem(registry._METHODS, Broken.name, Broken)
    config = planted.write_recipe(tmp_path, tune={"methods": ["sometimes_broken"]})
    result = tune(config, planted.data, output_dir=tmp_path / "out", trials=4, prune=False, plots=False,
                  progress=False)  # fmt: skip
    failed = [t for t in result.trials if t.state == "FAIL"]
    assert [t.state for t in result.trials] == ["COMPLETE", "FAIL"] * 3 + ["COMPLETE"]  # failures use no budget
    assert all("cannot run" in t.error and "lambda" in t.parameters for t in failed)
    board = (tmp_path / "out" / "leaderboard.md").read_text()
    assert "| sometimes_broken | 4 | 4 | 0 | 3 | 0 |" in board

    Broken.fail_every = 1  # every merge fails: the method stops after its budget of failures in a row
    with pytest.raises(MethodError) as exc:
        tune(config, planted.data, output_dir=tmp_path / "out2", trials=3, plots=False, progress=False)
    assert "no trial completed" in _one_line(exc) and "cannot run" in str(exc.value)
    assert "| sometimes_broken | 3 | 0 | 0 | 3 | 0 |" in (tmp_path / "out2" / "leaderboard.md").read_text()
