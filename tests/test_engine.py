"""The engine (r2m_hf/engine.py): building a method from validated parameters, the order of its passes, and the
in-memory merge, which must give exactly what the file-streaming merge writes."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import state

from r2m_hf.engine import build_method, merge_state_dicts, run_passes
from r2m_hf.errors import ConfigError
from r2m_hf.groups import Group
from r2m_hf.methods.base import MergeMethod, MethodParameters, TensorSlot


def test_file_merge_equals_the_in_memory_engine(r2m_out, zoo, base_state, specialist_states):
    from r2m_hf.groups import build_layout
    from r2m_hf.zoo import tiny_config

    layout = build_layout(tiny_config("vit"))
    groups = {n: g for n, g in layout.groups.items() if g is not Group.HEAD}
    merged, report = merge_state_dicts("r2m", {}, base_state, specialist_states, groups, names=zoo.names)
    written = state(r2m_out)
    assert set(merged) | set(layout.head_names) == set(written)
    for name, tensor in merged.items():
        torch.testing.assert_close(written[name], tensor, rtol=1e-5, atol=1e-6, msg=name)
    file_report = json.loads((r2m_out / "merge_report.json").read_text())["method"]
    assert file_report["coefficients"] == pytest.approx(report["coefficients"], rel=1e-6)
    assert file_report["eta"] == pytest.approx(report["eta"], rel=1e-6)


def test_build_method_validates_parameters_and_names_the_key():
    method = build_method("task_arithmetic", {"lambda": 0.5}, ["a", "b"], [1.0, 3.0])
    assert method.names == ["a", "b"] and method.parameters.model_dump(by_alias=True) == {"lambda": 0.5}
    with pytest.raises(ConfigError, match=r"^parameters\.lambada: unknown key$"):
        build_method("task_arithmetic", {"lambada": 0.5}, ["a", "b"])
    with pytest.raises(ConfigError, match="unknown method 'nope'"):
        build_method("nope", {}, ["a", "b"])


def test_merge_state_dicts_needs_a_base_for_methods_that_do():
    tensors = {"w": torch.ones(2, 2)}
    with pytest.raises(ConfigError, match="merge_method 'task_arithmetic' needs a base_model"):
        merge_state_dicts("task_arithmetic", {}, None, [tensors, tensors], {"w": Group.SUBSPACE})
    merged, _ = merge_state_dicts("average", {}, None, [tensors, {"w": 3 * torch.ones(2, 2)}], {"w": Group.SUBSPACE})
    torch.testing.assert_close(merged["w"], 2 * torch.ones(2, 2))


class _Recorder(MergeMethod):
    """Records the engine's calls: two statistics passes, then the merge pass."""

    name = "_recorder"
    statistics_passes = 2
    requires_base = False

    def __init__(self):
        super().__init__(MethodParameters(), torch.ones(2, dtype=torch.float64), ["a", "b"])
        self.calls: list[tuple] = []

    def observe(self, pass_index, slot):
        self.calls.append(("observe", pass_index, slot.name))

    def reduce(self, pass_index, all_reduce):
        self.calls.append(("reduce", pass_index))

    def end_pass(self, pass_index):
        self.calls.append(("end_pass", pass_index))

    def merge(self, slot):
        self.calls.append(("merge", slot.name))
        return slot.models.sum(0)


@pytest.mark.parametrize("distributed", [False, True])
def test_run_passes_streams_statistics_passes_then_the_merge_pass(distributed):
    method = _Recorder()
    asked = []

    def slots(pass_index):
        asked.append(pass_index)
        for i, name in enumerate(("x", "y")):
            yield TensorSlot(name=name, group=Group.VECTOR, base=None, models=torch.full((2, 3), float(i)), index=i)

    out = list(run_passes(method, slots, all_reduce=(lambda t: None) if distributed else None))
    assert asked == [0, 1, 2]
    assert [slot.name for slot, _ in out] == ["x", "y"]
    torch.testing.assert_close(out[1][1], torch.full((3,), 2.0))
    reduce = [("reduce", 0)] if distributed else []
    reduce1 = [("reduce", 1)] if distributed else []
    assert method.calls == [
        ("observe", 0, "x"), ("observe", 0, "y"), *reduce, ("end_pass", 0),
        ("observe", 1, "x"), ("observe", 1, "y"), *reduce1, ("end_pass", 1),
        ("merge", "x"), ("merge", "y"),
    ]  # fmt: skip


def test_a_decomposition_that_does_not_converge_is_a_method_error(monkeypatch):
    """LAPACK failing on a tensor (seen with Iso-CTS on real weights before the SVD fallback) is one line naming the
    method and the tensor, not a traceback, and the tuner records it as a failed trial."""
    from r2m_hf.errors import MethodError

    def no_convergence(*args, **kwargs):
        raise torch.linalg.LinAlgError("linalg.svd: The algorithm failed to converge (error code: 1).")

    monkeypatch.setattr(torch.linalg, "svd", no_convergence)
    monkeypatch.setattr(torch.linalg, "eigh", no_convergence)
    gen = torch.Generator().manual_seed(0)
    base = {"w": torch.randn(8, 6, generator=gen), "b": torch.randn(6, generator=gen)}
    models = [{k: v + 0.1 * torch.randn(v.shape, generator=gen) for k, v in base.items()} for _ in range(2)]
    groups = {"w": Group.TRUNCATABLE, "b": Group.VECTOR}
    with pytest.raises(MethodError, match=r"^iso_c: a matrix decomposition failed on tensor w \(linalg.svd: The"):
        merge_state_dicts("iso_c", {}, base, models, groups)
