"""``r2m-hf methods``: every registered method (built-in and third-party plugins) with its defaults, as text or as
the README's markdown table; plugins through the ``r2m_hf.merge_methods`` entry-point group merge like built-ins."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import torch
from conftest import recipe, write_yaml
from safetensors.torch import load_file

import r2m_hf
from r2m_hf.cli import main
from r2m_hf.methods.registry import method_table_markdown


def test_every_method_is_listed(capsys):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    for name in r2m_hf.available_methods():
        assert f"{name}: " in out
    assert "r2m: " in out and "alpha=1.5" in out


def test_markdown_prints_the_readme_table(cli):
    result = cli("methods", "--markdown")
    assert result.code == 0, result.err
    assert result.out == method_table_markdown() + "\n"
    rows = [line for line in result.out.splitlines() if line.startswith("| `")]
    assert sorted(row.split("`")[1] for row in rows) == sorted(r2m_hf.available_methods())


def test_console_script_lists_methods():
    script = Path(sys.executable).parent / "r2m-hf"
    assert script.is_file(), "the r2m-hf console script is not installed next to the interpreter"
    proc = subprocess.run([str(script), "methods"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert any(line.startswith("r2m: ") for line in proc.stdout.splitlines())


PLUGIN = '''
import torch
from r2m_hf.methods.base import MergeMethod


class MyAverage(MergeMethod):
    """A plugin: the plain mean of the specialists."""

    requires_base = False
    description = "plugin mean"

    def merge(self, slot):
        return slot.models.mean(dim=0)
'''


def test_entry_point_plugin_method(zoo, tmp_path, monkeypatch, cli):
    from r2m_hf.methods import registry

    site = tmp_path / "site"
    (site / "my_plugin-0.1.dist-info").mkdir(parents=True)
    (site / "my_plugin.py").write_text(textwrap.dedent(PLUGIN))
    (site / "my_plugin-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: my-plugin\nVersion: 0.1\n")
    (site / "my_plugin-0.1.dist-info" / "entry_points.txt").write_text(
        "[r2m_hf.merge_methods]\nmy_avg = my_plugin:MyAverage\n"
    )
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(registry, "_METHODS", dict(registry._METHODS))
    monkeypatch.setattr(registry, "_entry_points_loaded", False)
    monkeypatch.delitem(sys.modules, "my_plugin", raising=False)

    cls = r2m_hf.get_method("my_avg")
    assert cls.__name__ == "MyAverage" and cls.name == "my_avg"
    assert "my_avg" in r2m_hf.available_methods()

    plugin = write_yaml(tmp_path / "plugin.yaml", recipe(zoo, "my_avg"))
    builtin = write_yaml(tmp_path / "average.yaml", recipe(zoo, "average"))
    result = cli("merge", plugin, tmp_path / "plugin", "--no-progress")
    assert result.code == 0, result.err
    assert cli("merge", builtin, tmp_path / "average", "--no-progress").code == 0
    a, b = load_file(tmp_path / "plugin" / "model.safetensors"), load_file(tmp_path / "average" / "model.safetensors")
    for key in a:
        torch.testing.assert_close(a[key], b[key], msg=key)
    assert "my_avg: plugin mean" in cli("methods").out
