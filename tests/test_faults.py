"""Fault injection on the output side (issue 10): a merge killed (SIGKILL) or terminated (SIGTERM) half-way and then
rerun, a full filesystem (a tiny tmpfs when this runs as root, and an injected ENOSPC always), a read-only parent (a
read-only tmpfs, and an injected EROFS/EACCES always), a parent that is a file, and concurrent merges to one output.

Every case ends in one error line (or the signal's exit code and one line), and the directory listings before and
after prove that nothing outside the output's temporary sibling (and, while a merge runs, its ``.OUT.lock``) was ever
created, and that nothing is left behind.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from bad_input import visible_lines
from conftest import load_model, recipe, write_yaml

# A merge that stops after its first tensor is written, says so by writing READY (its PID), and waits for GO.
HOOK = """
import os, sys, time
from pathlib import Path
import r2m_hf.writer as writer
ready, go = Path(sys.argv[1]), Path(sys.argv[2])
original = writer.StreamingSafetensorsWriter.add
def add(self, name, tensor):
    original(self, name, tensor)
    if not ready.exists():
        ready.write_text(str(os.getpid()))
        while not go.exists():
            time.sleep(0.05)
writer.StreamingSafetensorsWriter.add = add
from r2m_hf.cli import main
sys.exit(main(sys.argv[3:]))
"""


def listing(root: Path) -> set[str]:
    """Every path below `root`, relative to it (hidden files included)."""
    return {p.relative_to(root).as_posix() for p in Path(root).rglob("*")}


def snapshot(*roots: Path) -> dict[Path, set[str]]:
    return {root: listing(root) for root in roots}


def created(before: dict[Path, set[str]]) -> dict[Path, set[str]]:
    return {root: listing(root) - paths for root, paths in before.items() if listing(root) - paths}


class Hooked:
    """A ``r2m-hf merge`` subprocess paused after its first tensor."""

    def __init__(self, tmp_path: Path, *args):
        control = tmp_path / "control"
        control.mkdir(exist_ok=True)
        self.ready, self.go = control / "ready", control / "go"
        script = control / "hook.py"
        script.write_text(HOOK)
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
        command = [sys.executable, str(script), str(self.ready), str(self.go), "merge", *map(str, args)]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)

    def wait_ready(self, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready.exists():
            if self.process.poll() is not None:
                raise AssertionError(f"the merge ended early: {self.process.communicate()}")
            if time.monotonic() > deadline:
                self.process.kill()
                raise AssertionError("the merge never reached its first tensor")
            time.sleep(0.1)

    def release(self) -> None:
        self.go.write_text("go")

    def finish(self, timeout: float = 300) -> tuple[int, str, str]:
        out, err = self.process.communicate(timeout=timeout)
        return self.process.returncode, out, err


@pytest.fixture
def work(zoo, tmp_path):
    """A recipe over the zoo in ``tmp_path/work``; the output goes to ``work/out``."""
    folder = tmp_path / "work"
    folder.mkdir()
    write_yaml(folder / "m.yaml", recipe(zoo, "average"))
    return folder


def _is_temp_sibling(path: str, name: str = "out") -> bool:
    first = path.split("/")[0]
    return first.startswith(f".{name}.tmp-") or first == f".{name}.lock"


# ------------------------------------------------------------------------------------------------ signals
def test_sigkill_mid_merge_leaves_only_the_temp_sibling_and_a_rerun_cleans_it(zoo, work, tmp_path, cli, caplog):
    before = snapshot(work, zoo.root)
    hooked = Hooked(tmp_path, work / "m.yaml", work / "out", "--no-progress")
    hooked.wait_ready()
    during = created(before)
    assert set(during) == {work} and all(_is_temp_sibling(p) for p in during[work]), during
    assert ".out.lock" in during[work] and any(p.startswith(".out.tmp-") for p in during[work])
    assert (work / ".out.lock").read_text().strip() == hooked.ready.read_text()  # the lock holds the writer's PID
    hooked.process.send_signal(signal.SIGKILL)
    assert hooked.finish()[0] == -signal.SIGKILL
    left = created(before)
    assert all(_is_temp_sibling(p) for p in left[work]) and not (work / "out").exists()

    caplog.set_level("WARNING", logger="r2m_hf")
    result = cli("merge", work / "m.yaml", work / "out", "--no-progress")
    assert result.code == 0, result.err
    assert "removed 1 temporary folder(s) of an interrupted r2m-hf run" in caplog.text
    after = created(before)
    assert set(after) == {work} and all(p == "out" or p.startswith("out/") for p in after[work]), after
    load_model(work / "out")


def test_sigterm_mid_merge_cleans_up_and_exits_143_with_one_line(zoo, work, tmp_path):
    before = snapshot(work, zoo.root)
    hooked = Hooked(tmp_path, work / "m.yaml", work / "out", "--no-progress")
    hooked.wait_ready()
    hooked.process.send_signal(signal.SIGTERM)
    code, out, err = hooked.finish()
    assert code == 143, err
    assert visible_lines(err) == ["r2m-hf: terminated (SIGTERM); temporary files removed"], err
    assert out == ""
    assert created(before) == {}  # the temporary folder and the lock are gone


# ------------------------------------------------------------------------------------------------ concurrency
def test_a_second_merge_to_the_same_output_is_refused_while_the_first_runs(zoo, work, tmp_path, cli):
    before = snapshot(work, zoo.root)
    hooked = Hooked(tmp_path, work / "m.yaml", work / "out", "--no-progress")
    hooked.wait_ready()
    second = cli("merge", work / "m.yaml", work / "out", "--no-progress")
    assert second.code == 2
    line = second.err.strip()
    pid = hooked.ready.read_text()
    assert "\n" not in line and f"another r2m-hf process (PID {pid}) is writing this output" in line
    hooked.release()
    code, _, err = hooked.finish()
    assert code == 0, err
    assert all(p == "out" or p.startswith("out/") for p in created(before)[work])
    load_model(work / "out")


def test_the_final_rename_never_replaces_a_folder_that_appeared_meanwhile(zoo, work, tmp_path):
    before = snapshot(zoo.root)
    hooked = Hooked(tmp_path, work / "m.yaml", work / "out", "--no-progress")
    hooked.wait_ready()
    (work / "out").mkdir()
    (work / "out" / "theirs.txt").write_text("written by someone else")
    hooked.release()
    code, _, err = hooked.finish()
    assert code == 2 and len(visible_lines(err)) == 1 and "appeared while merging" in err, err
    assert sorted(p.name for p in (work / "out").iterdir()) == ["theirs.txt"]
    assert sorted(listing(work)) == ["m.yaml", "out", "out/theirs.txt"]
    assert created(before) == {}


def test_two_simultaneous_merges_to_one_output_one_wins_the_other_is_refused(zoo, work):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "r2m_hf", "merge", str(work / "m.yaml"), str(work / "out"), "--no-progress"]
    processes = [subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    results = [(p.wait(timeout=600), p.stderr.read()) for p in processes]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    loser = next(err for code, err in results if code == 2)
    assert len(loser.strip().splitlines()) == 1
    assert any(text in loser for text in ("another r2m-hf process", "not empty", "appeared while merging")), loser
    assert all(p == "out" or p.startswith("out/") for p in listing(work) - {"m.yaml"})
    load_model(work / "out")


# --------------------------------------------------------------------------------------- full or read-only disk
@pytest.fixture
def tmpfs(tmp_path):
    """``tmpfs(size, read_only=False)``: a fresh tmpfs mounted under tmp_path (root only; skipped otherwise)."""
    mounted = []

    def mount(size: str, read_only: bool = False) -> Path:
        point = tmp_path / f"fs{len(mounted)}"
        point.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)], capture_output=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
        mounted.append(point)
        if read_only:
            subprocess.run(["mount", "-o", "remount,ro", str(point)], check=True)
        return point

    yield mount
    for point in reversed(mounted):
        subprocess.run(["umount", "-l", str(point)], check=False)


def test_a_full_filesystem_is_one_line_and_leaves_nothing(zoo, work, tmpfs, cli):
    disk = tmpfs("64k")  # the tiny model needs ~100 KB
    before = snapshot(work, zoo.root)
    result = cli("merge", work / "m.yaml", disk / "out", "--no-progress")
    assert result.code == 2 and len(result.err.strip().splitlines()) == 1, result.err
    assert "No space left on device (ENOSPC)" in result.err and "nothing was written" in result.err
    assert "Traceback" not in result.err
    assert listing(disk) == set() and created(before) == {}


def test_a_read_only_filesystem_is_one_line_and_leaves_nothing(zoo, work, tmpfs, cli):
    disk = tmpfs("1m", read_only=True)
    before = snapshot(work, zoo.root)
    for out in (disk / "out", disk / "new" / "deeper" / "out"):
        result = cli("merge", work / "m.yaml", out, "--no-progress")
        assert result.code == 2 and len(result.err.strip().splitlines()) == 1, result.err
        assert "Read-only file system (EROFS)" in result.err
    assert listing(disk) == set() and created(before) == {}


@pytest.mark.parametrize(
    ("where", "code"),
    [
        ("writer", errno.ENOSPC),
        ("metadata", errno.ENOSPC),
        ("card", errno.EDQUOT),
        ("mkdtemp", errno.EACCES),
        ("lock", errno.EROFS),
        ("rename", errno.EXDEV),
    ],
)
def test_injected_output_errors_are_one_line_and_leave_nothing(zoo, work, cli, monkeypatch, where, code):
    """The same guarantees without root: an OSError injected at each output step."""
    import tempfile

    from r2m_hf import recipe as recipe_module
    from r2m_hf import writer

    def fail(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    if where == "writer":
        original = writer.StreamingSafetensorsWriter.add
        calls = []

        def add(self, name, tensor):
            calls.append(name)
            if len(calls) == 5:
                fail()
            original(self, name, tensor)

        monkeypatch.setattr(writer.StreamingSafetensorsWriter, "add", add)
    elif where == "metadata":
        monkeypatch.setattr(recipe_module.MergeReport, "write", fail)
    elif where == "card":
        from huggingface_hub import ModelCard

        monkeypatch.setattr(ModelCard, "save", fail)
    elif where == "mkdtemp":
        monkeypatch.setattr(tempfile, "mkdtemp", fail)
    elif where == "lock":
        monkeypatch.setattr(writer, "OutputLock", fail)
    else:
        monkeypatch.setattr(writer, "_rename_noreplace", fail)
    before = snapshot(work, zoo.root)
    result = cli("merge", work / "m.yaml", work / "out", "--no-progress")
    assert result.code == 2 and len(result.err.strip().splitlines()) == 1, result.err
    assert f"({errno.errorcode[code]})" in result.err and str(work / "out") in result.err
    assert "Traceback" not in result.err
    assert created(before) == {}, created(before)


def test_an_output_whose_parent_is_a_file(zoo, work, cli):
    (work / "file").write_text("not a folder")
    before = snapshot(work, zoo.root)
    for out in (work / "file" / "out", work / "file" / "a" / "b"):
        result = cli("merge", work / "m.yaml", out, "--no-progress")
        assert result.code == 2 and len(result.err.strip().splitlines()) == 1, result.err
        assert "Traceback" not in result.err and ("is a file" in result.err or "ENOTDIR" in result.err)
    assert created(before) == {} and (work / "file").read_text() == "not a folder"


def test_missing_parents_created_for_a_failed_merge_are_removed(zoo, work, cli, monkeypatch):
    from r2m_hf import recipe as recipe_module

    def fail(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(recipe_module.MergeReport, "write", fail)
    before = snapshot(work)
    result = cli("merge", work / "m.yaml", work / "a" / "b" / "out", "--no-progress")
    assert result.code == 2
    assert created(before) == {}
