"""What every ``r2m-hf`` verb shares (r2m_hf/cli/__init__.py, _common.py): exit codes (0, 2 for user errors with
or without ``--debug``, 130 on Ctrl-C), one error line, tracebacks only with ``--debug``, progress bars only on a
terminal, and a parser that loads a verb's heavy options only when that verb runs."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest
from conftest import assert_nothing_written, recipe, write_yaml

from r2m_hf.cli import build_parser, main
from r2m_hf.cli._common import show_progress
from r2m_hf.errors import ConfigError


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["merge"])
    assert info.value.code == 2
    assert "usage: r2m-hf merge" in capsys.readouterr().err


def test_every_verb_is_registered_with_debug():
    parser = build_parser()
    verbs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    core = {"merge", "eval", "push", "check-specialist", "add", "demo", "bench", "methods"}
    assert core <= set(verbs)  # other verb groups (tuning, the detector) register theirs beside these
    for name, sub in verbs.items():
        assert "--debug" in sub.format_help(), name


def test_bench_options_load_only_when_bench_runs(capsys):
    verbs = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert not any("--tier" in a.option_strings for a in verbs["bench"]._actions)
    with pytest.raises(SystemExit) as info:
        main(["bench", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "--tier {quick,full}" in out and "--rerender" in out and "--debug" in out


def test_user_error_is_one_line_and_exit_2_with_or_without_debug(tmp_path, cli):
    missing = tmp_path / "absent.yaml"
    result = cli("merge", missing, tmp_path / "out")
    assert (result.code, result.out) == (2, "")
    assert result.err == f"r2m-hf: error: {missing}: no such config file\n"

    debug = cli("merge", missing, tmp_path / "out", "--debug")
    assert debug.code == 2
    assert "Traceback (most recent call last)" in debug.err
    assert f"r2m_hf.errors.ConfigError: {missing}: no such config file" in debug.err
    assert debug.err.splitlines()[-1] == f"r2m-hf: error: {missing}: no such config file"


def test_a_multi_line_message_is_printed_on_one_line(monkeypatch, cli):
    def fail(args):
        raise ConfigError("first part\n  second part\n")

    monkeypatch.setattr("r2m_hf.cli.methods.run_methods", fail)
    result = cli("methods")
    assert (result.code, result.err) == (2, "r2m-hf: error: first part second part\n")


def test_ctrl_c_exits_130_with_one_line(monkeypatch, cli):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr("r2m_hf.cli.methods.run_methods", interrupted)
    result = cli("methods")
    assert (result.code, result.out, result.err) == (130, "", "r2m-hf: interrupted\n")


def test_a_bug_is_not_hidden_as_a_user_error(monkeypatch, cli):
    def bug(args):
        raise RuntimeError("a bug")

    monkeypatch.setattr("r2m_hf.cli.methods.run_methods", bug)
    with pytest.raises(RuntimeError, match="a bug"):
        cli("methods")


@pytest.mark.parametrize(("tty", "flag", "expected"), [(True, False, True), (True, True, False), (False, False, False)])
def test_progress_bars_only_on_a_terminal(monkeypatch, tty, flag, expected):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: tty, raising=False)
    assert show_progress(argparse.Namespace(no_progress=flag)) is expected


def test_demo_passes_progress_only_on_a_terminal(monkeypatch, cli, tmp_path):
    seen = []
    monkeypatch.setattr("r2m_hf.demo.run_demo", lambda workdir, *, seed, progress: seen.append(progress))
    assert cli("demo", "--workdir", tmp_path).code == 0
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    assert cli("demo", "--workdir", tmp_path).code == 0
    assert cli("demo", "--workdir", tmp_path, "--no-progress").code == 0
    assert seen == [False, True, False]


def test_subprocess_error_exit_code_and_debug_traceback(zoo, tmp_path):
    models = [{"model": str(zoo.specialists[0])}, {"model": "./no/such/specialist"}]
    config = write_yaml(tmp_path / "m.yaml", recipe(zoo, models=models))
    out = tmp_path / "out"
    command = [sys.executable, "-m", "r2m_hf", "merge", str(config), str(out)]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert proc.stderr.startswith("r2m-hf: error: ./no/such/specialist: no such folder")
    assert "Traceback" not in proc.stderr
    assert_nothing_written(out)

    debug = subprocess.run([*command, "--debug"], capture_output=True, text=True, timeout=120)
    assert debug.returncode == 2
    assert "Traceback (most recent call last)" in debug.stderr
    assert "r2m_hf.errors.SourceError: ./no/such/specialist: no such folder" in debug.stderr
    assert debug.stderr.strip().splitlines()[-1].startswith("r2m-hf: error: ./no/such/specialist: no such folder")
    assert_nothing_written(out)


def test_a_closed_pipe_is_a_quiet_exit():
    """``r2m-hf methods | head -1``: the reader leaving is not an error, and no traceback is printed."""
    code = (
        "import sys, r2m_hf.cli.methods as verb\n"
        "from r2m_hf.cli import main\n"
        "def run(args):\n"
        "    raise BrokenPipeError(32, 'Broken pipe')\n"
        "verb.run_methods = run\n"
        "sys.exit(main(['methods']))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert (proc.returncode, proc.stderr) == (0, "")


def test_bench_draws_no_progress_bars_off_a_terminal(monkeypatch, cli):
    """The benchmark's own bars follow the same rule as every verb: only on a terminal."""
    import r2m_hf.bench.__main__ as bench_main

    seen = []
    monkeypatch.setattr(bench_main, "run_from_args", lambda args: seen.append(args.no_progress) or 0)
    result = cli("bench", "--output", "unused")
    assert (result.code, seen) == (0, [True])
