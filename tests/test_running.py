"""The merged tensors are checked before they are written (r2m_hf/running.py, issue 10): a NaN or infinite merged
tensor, or one beyond the output dtype's range, is one ``MethodError`` line naming the tensor and the parameter to
look at, and nothing is written."""

from __future__ import annotations

import pytest
import torch
from bad_input import Case, case_ids, check_api_error, check_cli_error, recipe
from conftest import write_yaml

from r2m_hf.errors import MethodError


def overflowing_lambda(zoo, tmp_path):
    data = recipe(zoo, "task_arithmetic", parameters={"lambda": 1e39})  # finite, but beyond float32
    path = write_yaml(tmp_path / "m.yaml", data)
    return Case(path, MethodError, ["merged tensor", "NaN or infinite", "parameters.lambda (= 1e+39)"])


def beyond_float16(zoo, tmp_path):
    data = recipe(zoo, "task_arithmetic", parameters={"lambda": 1e7}, out_dtype="float16")
    path = write_yaml(tmp_path / "m.yaml", data)
    return Case(path, MethodError, ["beyond the range of out_dtype float16", "parameters.lambda (= 1e+07)"])


def overflow_in_float16_compute(zoo, tmp_path):
    data = recipe(zoo, "task_arithmetic", parameters={"lambda": 1e6}, dtype="float16")
    path = write_yaml(tmp_path / "m.yaml", data)
    return Case(path, MethodError, ["overflows in float16", "parameters.lambda", "or use dtype: float32"])


CASES = [overflowing_lambda, beyond_float16, overflow_in_float16_compute]


@pytest.mark.parametrize("builder", CASES, ids=case_ids(CASES))
def test_a_non_finite_merge_is_one_error_line_and_nothing_is_written(build_case, builder, tmp_path, cli, monkeypatch):
    check_cli_error(build_case(builder), tmp_path / "merged", cli, monkeypatch)


@pytest.mark.parametrize("builder", CASES[:1], ids=case_ids(CASES[:1]))
def test_a_non_finite_merge_raises_method_error(build_case, builder, tmp_path):
    check_api_error(build_case(builder), tmp_path / "merged")


def test_check_merged_names_the_head_policy_for_heads(zoo, tmp_path):
    from r2m_hf.planning import plan_merge
    from r2m_hf.running import check_merged

    plan = plan_merge(write_yaml(tmp_path / "m.yaml", recipe(zoo, "average")))
    check_merged("classifier.weight", torch.ones(2, 3), plan, None)
    with pytest.raises(MethodError, match=r"merged tensor classifier\.weight .* models\[\*\]\.parameters\.weight"):
        check_merged("classifier.weight", torch.tensor([[float("nan"), 1.0]]), plan, None)
