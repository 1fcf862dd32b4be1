"""One trial scored by several processes: ``torchrun -m r2m_hf tune`` with two CPU ranks (gloo) runs the same trials
as one process with the same seed (same parameters, same prune decisions, same metrics), each rank scores only its
shard of every chunk, and rank 0 alone writes the leaderboard and ``best.yaml``.

About 40 s on two cores, most of it starting the two ranks (torch, transformers) and reading the split in each."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import torch

from r2m_hf.config import load_config
from r2m_hf.tuning import TrialRecord, tune

torch.set_num_threads(1)
LAUNCHER = Path(__file__).with_name("launch_tune.py")
TRIALS, BATCH = 8, 4  # 96 rows in 4 chunks of 24: 6 batches of 4 per chunk, 3 for each rank


def _records(out: Path) -> list[TrialRecord]:
    study = optuna.load_study(study_name="recipe/task_arithmetic", storage=f"sqlite:///{out}/tune.db")
    return [TrialRecord.from_frozen("task_arithmetic", t) for t in study.get_trials()]


def _log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_two_processes_score_each_trial_together(planted, tmp_path):
    # A range wide enough that some trials are clearly worse after half the split, so the pruner has work to do.
    config = planted.write_recipe(tmp_path, tune={"space": {"task_arithmetic": {"lambda": {"low": 0.05, "high": 6}}}})
    one = tune(config, planted.data, output_dir=tmp_path / "one", trials=TRIALS, batch_size=BATCH, progress=False)

    log = tmp_path / "ranks"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(LAUNCHER),
        str(log), "tune", str(config), "--dataset", str(planted.data), "--output", str(tmp_path / "two"),
        "--trials", str(TRIALS), "--batch-size", str(BATCH), "--no-progress",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=150)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]

    # The same trials: the points rank 0 sampled, its prune decisions and the gathered scores' metrics.
    two = _records(tmp_path / "two")
    assert [t.number for t in two] == [t.number for t in one.trials] == list(range(TRIALS))
    assert any(t.state == "PRUNED" for t in one.trials)  # the split makes the pruner stop some trials
    for a, b in zip(one.trials, two):
        assert (b.state, b.parameters, b.rows) == (a.state, a.parameters, a.rows), (a, b)
        assert b.value == pytest.approx(a.value, abs=1e-9)
        for key in ("auc", "eer", "ap", "acc"):
            assert b.overall[key] == pytest.approx(a.overall[key], abs=1e-9), (b.label, key)
        assert {f: m["auc"] for f, m in b.families.items()} == pytest.approx(
            {f: m["auc"] for f, m in a.families.items()}
        )

    # Each rank scored its own shard of every chunk, and both scored the same chunks (same prune decisions).
    scored = [_log(Path(f"{log}.rank{r}")) for r in (0, 1)]
    chunks = [[e for e in events if "scored" in e] for events in scored]
    assert len(chunks[0]) == len(chunks[1]) == sum(4 if t.state == "COMPLETE" else 2 for t in one.trials)
    for mine, theirs in zip(*chunks):
        assert mine["of"] == theirs["of"] == 24
        assert mine["scored"] == theirs["scored"] == 12

    # Rank 0 alone wrote the outputs, once, and reported once; its best.yaml is the single-process one.
    assert [e for e in scored[1] if "wrote" in e] == []
    writes = [e["wrote"] for e in scored[0] if "wrote" in e]
    assert len(writes) == 1 and str(tmp_path / "two" / "best.yaml") in writes[0]
    assert done.stdout.count("winner:") == 1
    best = load_config(tmp_path / "two" / "best.yaml")
    assert best.merge_method == "task_arithmetic" and best.parameters["lambda"] == one.best.parameters["lambda"]
    board = (tmp_path / "two" / "leaderboard.md").read_text()
    assert "task_arithmetic: 8" in board and "split across 2 processes" in board
    assert board.count("| task_arithmetic#") == TRIALS + 1  # every trial + the best of the method
