"""LoRA adapters (r2m_hf/lora.py) checked against their own config before a merge starts, as peft checks them when it
loads one: ``r`` and ``rank_pattern`` against the saved factors' rank, A against B, ``lora_alpha`` a number, factors
floating-point, and ``rank_pattern``/``alpha_pattern`` keys that cannot hang the merge. Each refusal is one
``CheckpointError`` line naming the file and the key, through the API and ``r2m-hf merge``."""

from __future__ import annotations

import json
import shutil
import time

import pytest
import torch
from bad_input import Case, case_ids, check_api_error, check_cli_error, recipe
from conftest import write_yaml
from safetensors.torch import load_file, save_file

from r2m_hf.errors import CheckpointError


def _adapter(lora, tmp_path, config: dict | None = None, tensors=None):
    """A copy of the session's transformers-5 adapter with `config` merged into its adapter_config.json and
    `tensors(state)` applied to its weights."""
    folder = tmp_path / "adapter"
    shutil.copytree(lora.v5, folder)
    if config:
        path = folder / "adapter_config.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), **config}))
    if tensors is not None:
        state = load_file(folder / "adapter_model.safetensors")
        tensors(state)
        save_file(state, folder / "adapter_model.safetensors")
    return folder


def _case(zoo, tmp_path, folder, fragments) -> Case:
    models = [{"model": str(folder), "name": "lora"}, {"model": str(zoo.specialists[0])}]
    path = write_yaml(tmp_path / "m.yaml", recipe(zoo, "task_arithmetic", models=models))
    return Case(path, CheckpointError, fragments)


def r_zero(zoo, tmp_path, lora):
    return _case(zoo, tmp_path, _adapter(lora, tmp_path, {"r": 0}), ["adapter_config.json", "r must be a positive"])


def r_float_huge(zoo, tmp_path, lora):
    folder = _adapter(lora, tmp_path, {"r": 1e9})
    return _case(zoo, tmp_path, folder, ["adapter_config.json", "r must be a positive integer", "1000000000.0"])


def r_int_huge(zoo, tmp_path, lora):
    folder = _adapter(lora, tmp_path, {"r": 10**9})
    return _case(zoo, tmp_path, folder, ["adapter_config.json: r is 1000000000", "have rank 4", "peft refuses"])


def r_disagrees_with_the_weights(zoo, tmp_path, lora):
    folder = _adapter(lora, tmp_path, {"r": 8})
    return _case(zoo, tmp_path, folder, ["adapter_config.json: r is 8", "saved factors of", "have rank 4"])


def rank_pattern_disagrees(zoo, tmp_path, lora):
    folder = _adapter(lora, tmp_path, {"rank_pattern": {"q_proj": 2}})
    return _case(zoo, tmp_path, folder, ["rank_pattern['q_proj'] is 2", "q_proj.weight", "have rank 4"])


def lora_alpha_null(zoo, tmp_path, lora):
    folder = _adapter(lora, tmp_path, {"lora_alpha": None})
    return _case(zoo, tmp_path, folder, ["adapter_config.json", "lora_alpha must be a finite number, not None"])


def lora_alpha_text(zoo, tmp_path, lora):
    folder = _adapter(lora, tmp_path, {"lora_alpha": "8"})
    return _case(zoo, tmp_path, folder, ["lora_alpha must be a finite number, not '8'"])


def alpha_pattern_not_a_number(zoo, tmp_path, lora):
    folder = _adapter(lora, tmp_path, {"alpha_pattern": {"q_proj": [1]}})
    return _case(zoo, tmp_path, folder, ["alpha_pattern['q_proj'] must be a finite number"])


def a_b_ranks_disagree(zoo, tmp_path, lora):
    def cut(state):
        key = next(k for k in state if "q_proj.lora_B" in k)
        state[key] = state[key][:, :3].contiguous()

    folder = _adapter(lora, tmp_path, tensors=cut)
    return _case(zoo, tmp_path, folder, ["disagree on the rank: A has 4 rows, B has 3 columns"])


def integer_factor(zoo, tmp_path, lora):
    def to_int(state):
        key = next(k for k in state if "v_proj.lora_A" in k)
        state[key] = (state[key] * 100).to(torch.int32)

    folder = _adapter(lora, tmp_path, tensors=to_int)
    return _case(zoo, tmp_path, folder, ["is stored as int32", "floating-point parameter"])


def integer_saved_head(zoo, tmp_path, lora):
    def to_bool(state):
        key = next(k for k in state if k.endswith("classifier.weight") or "classifier.modules_to_save" in k)
        state[key] = state[key] > 0

    folder = _adapter(lora, tmp_path, tensors=to_bool)
    return _case(zoo, tmp_path, folder, ["is stored as bool", "classifier"])


def pattern_that_would_hang(zoo, tmp_path, lora):
    folder = _adapter(lora, tmp_path, {"rank_pattern": {"(a+)+$": 4}})
    return _case(zoo, tmp_path, folder, ["rank_pattern key", "too complex a pattern"])


def pattern_that_does_not_compile(zoo, tmp_path, lora):
    folder = _adapter(lora, tmp_path, {"alpha_pattern": {"q_proj(": 8}})
    return _case(zoo, tmp_path, folder, ["alpha_pattern key", "not a valid pattern"])


def config_is_a_list(zoo, tmp_path, lora):
    folder = _adapter(lora, tmp_path)
    (folder / "adapter_config.json").write_text("[1, 2]")
    return _case(zoo, tmp_path, folder, ["adapter_config.json: expected a JSON object, found list"])


CASES = [
    r_zero,
    r_float_huge,
    r_int_huge,
    r_disagrees_with_the_weights,
    rank_pattern_disagrees,
    lora_alpha_null,
    lora_alpha_text,
    alpha_pattern_not_a_number,
    a_b_ranks_disagree,
    integer_factor,
    integer_saved_head,
    pattern_that_would_hang,
    pattern_that_does_not_compile,
    config_is_a_list,
]


@pytest.mark.parametrize("builder", CASES, ids=case_ids(CASES))
def test_inconsistent_adapter_is_one_error_line(build_case, builder, tmp_path, cli, monkeypatch):
    check_cli_error(build_case(builder), tmp_path / "merged", cli, monkeypatch)


@pytest.mark.parametrize("builder", [r_disagrees_with_the_weights, lora_alpha_null, a_b_ranks_disagree])
def test_inconsistent_adapter_raises_checkpoint_error(build_case, builder, tmp_path):
    check_api_error(build_case(builder), tmp_path / "merged")


def test_a_hostile_pattern_is_refused_quickly(zoo, lora, tmp_path):
    from r2m_hf.planning import plan_merge

    folder = _adapter(lora, tmp_path, {"rank_pattern": {"(.*.*.*.*.*.*.*.*.*.*)*x": 4}})
    case = _case(zoo, tmp_path, folder, [])
    start = time.perf_counter()
    with pytest.raises(CheckpointError, match="too complex"):
        plan_merge(case.config)
    assert time.perf_counter() - start < 30


def test_matching_rank_pattern_and_alpha_pattern_use_peft_scaling(zoo, lora, tmp_path):
    """``rank_pattern`` naming the true rank passes; ``alpha_pattern`` changes the scaling to α'/r (peft's rule)."""
    from r2m_hf.planning import plan_merge

    plain = plan_merge(_case(zoo, tmp_path / "a", _adapter(lora, tmp_path / "a"), []).config)
    folder = _adapter(lora, tmp_path / "b", {"rank_pattern": {"q_proj": 4}, "alpha_pattern": {"q_proj": 16}})
    patterned = plan_merge(_case(zoo, tmp_path / "b", folder, []).config)
    a, b = plain.specialists[0].adapter, patterned.specialists[0].adapter
    name = next(n for n in a.targets if "q_proj" in n)
    torch.testing.assert_close(b.delta(name, torch.float64), 2 * a.delta(name, torch.float64))
    other = next(n for n in a.targets if "v_proj" in n)
    torch.testing.assert_close(b.delta(other, torch.float64), a.delta(other, torch.float64))
