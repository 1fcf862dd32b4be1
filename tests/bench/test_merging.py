"""The benchmark's merge plumbing: recipes a user could have written, and compact method reports in results.json."""

from __future__ import annotations

import subprocess
import sys

import pytest

from r2m_hf.bench.merging import MAX_REPORT_ENTRIES, Merger, compact_report
from r2m_hf.config import load_config, method_parameters
from r2m_hf.errors import R2MError


def test_recipes_are_valid_user_recipes(tmp_path):
    merger = Merger(tmp_path, tmp_path / "backbone", [("FS", tmp_path / "fs"), ("FR", tmp_path / "fr")])
    path = merger.write_recipe("cart-0", "cart", {"rank_ratio": 0.03, "lambda": 0.5})
    config = load_config(path)
    assert config.merge_method == "cart" and [m.name for m in config.models] == ["FS", "FR"]
    assert method_parameters(config) == {"rank_ratio": 0.03, "lambda": 0.5}
    other = merger.write_recipe("lora", "average", {}, [("FS", tmp_path / "lora-fs"), ("FR", tmp_path / "fr")])
    assert [str(m.model) for m in load_config(other).models][0] == str(tmp_path / "lora-fs")


def test_compact_report_leaves_per_tensor_tables_out():
    per_matrix = {f"encoder.layer.{i}.q_proj.weight": [3] for i in range(MAX_REPORT_ENTRIES + 1)}
    report = {"eta": 1.5, "coefficients": [0.5, 0.5], "ranks": {"min": 3, "max": 3, "per_matrix": per_matrix}}
    assert compact_report(report) == {"eta": 1.5, "coefficients": [0.5, 0.5], "ranks": {"min": 3, "max": 3}}
    small = {"tensors": {"svd": 4, "vector_rule": 2}}
    assert compact_report(small) == small and compact_report({}) == {}


def test_bench_cli_module_imports_nothing_heavy():
    code = "import sys, r2m_hf.bench.__main__; print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_rerender_without_results_says_what_to_run(tmp_path):
    from r2m_hf.bench.__main__ import rerender

    with pytest.raises(R2MError, match="run the benchmark first"):
        rerender(tmp_path)
