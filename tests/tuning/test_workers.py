"""Studies in the database: an interrupted or killed run resumes without repeating a trial, and two worker processes
share one SQLite study without running a trial twice or overshooting its budget."""

from __future__ import annotations

import multiprocessing
import os
import re
import signal
import time
from pathlib import Path

import optuna
import sqlalchemy
import torch

from r2m_hf.tuning import tune

torch.set_num_threads(1)


def _worker(config, data, out, trials, delay, ready, log):
    """One worker process (forked: no second start-up of torch and transformers). It waits until `ready` workers
    have started (a barrier), logs every trial it runs and slows each evaluation down; while the file `OUT.hold`
    exists, a trial that reaches its evaluation writes `OUT.blocked` and waits, so a test can stop it mid-trial."""
    from r2m_hf.tuning import storage, tuner, validation

    run_trial, evaluate = tuner._Run.trial, validation.ValidationSet.evaluate
    hold, blocked = Path(f"{out}.hold"), Path(f"{out}.blocked")

    def logged(self, trial, method):
        storage.check_surplus(trial, self.budgets[method])
        with open(log, "a") as f:
            f.write(f"{os.getpid()} {method} {trial.number}\n")
        return run_trial(self, trial, method)

    def slow(self, model, fake_index=1):
        time.sleep(delay)
        if hold.exists():  # the test wants this worker stopped inside a trial: wait here until it acts
            blocked.touch()
            while hold.exists():
                time.sleep(0.02)
        yield from evaluate(self, model, fake_index)

    tuner._Run.trial, validation.ValidationSet.evaluate = logged, slow
    barrier = Path(f"{out}.ready")
    (barrier / str(os.getpid())).touch()
    while len(list(barrier.iterdir())) < ready:
        time.sleep(0.02)
    tuner.tune(config, data, output_dir=out, trials=trials, plots=False, progress=False)


def _start(tmp_path: Path, config: Path, data: Path, out: Path, trials: int, delay: float, ready: int):
    Path(f"{out}.ready").mkdir(exist_ok=True)
    process = multiprocessing.get_context("fork").Process(
        target=_worker, args=(config, data, out, trials, delay, ready, tmp_path / "trials.log")
    )
    process.start()
    return process


def _study(out: Path, method: str = "task_arithmetic"):
    return optuna.load_study(study_name=f"recipe/{method}", storage=f"sqlite:///{out}/tune.db")


def _log(tmp_path: Path) -> list[tuple[int, str, int]]:
    lines = (tmp_path / "trials.log").read_text().split()
    return [(int(lines[i]), lines[i + 1], int(lines[i + 2])) for i in range(0, len(lines), 3)]


def _stop_when(worker, out: Path, finished: int, sig: int) -> None:
    """Send `sig` to `worker` inside a trial, once the study holds `finished` finished trials that did not fail."""
    hold, blocked = Path(f"{out}.hold"), Path(f"{out}.blocked")
    deadline = time.monotonic() + 120
    while not blocked.exists():
        assert time.monotonic() < deadline and worker.is_alive(), worker.exitcode
        time.sleep(0.05)
        if hold.exists() or not (out / "tune.db").exists():
            continue
        try:
            trials = _study(out).get_trials()
        except (KeyError, sqlalchemy.exc.SQLAlchemyError):  # the worker is still creating the schema or the study
            continue
        if sum(t.state.is_finished() and t.state.name != "FAIL" for t in trials) >= finished:
            hold.touch()  # the worker's next trial blocks in its evaluation and says so
    os.kill(worker.pid, sig)
    worker.join(60)
    assert worker.exitcode is not None, "the worker did not stop"
    hold.unlink()
    blocked.unlink()


def test_resume_after_ctrl_c_and_after_a_killed_run(planted, tmp_path):
    config = planted.write_recipe(tmp_path)
    out = tmp_path / "out"
    # Ctrl-C: Optuna fails the running trial, `tune` writes the partial leaderboard and re-raises.
    _stop_when(_start(tmp_path, config, planted.data, out, trials=6, delay=0.4, ready=1), out, 1, signal.SIGINT)
    interrupted = [t for t in _study(out).get_trials() if t.state.name == "FAIL"]
    assert len(interrupted) == 1 and "| task_arithmetic | 6 | " in (out / "leaderboard.md").read_text()
    # A crash: SIGKILL runs no handler, the trial stays RUNNING in the database.
    _stop_when(_start(tmp_path, config, planted.data, out, trials=6, delay=0.4, ready=1), out, 2, signal.SIGKILL)
    before = {t.number: t for t in _study(out).get_trials()}
    finished = {n: t for n, t in before.items() if t.state.is_finished()}
    killed = [n for n, t in before.items() if t.state.name == "RUNNING"]
    assert len(finished) >= 3 and len(killed) == 1, before
    first_runs = {n for _, _, n in _log(tmp_path)}

    result = tune(config, planted.data, output_dir=out, trials=6, plots=False, progress=False)

    after = {t.number: t for t in _study(out).get_trials()}
    assert after[killed[0]].state.name == "FAIL" and "died" in after[killed[0]].user_attrs["error"]
    for n, t in finished.items():  # nothing finished was run again or changed
        assert after[n].state == t.state and after[n].value == t.value and after[n].params == t.params
    counted = [t for t in after.values() if t.state.name != "FAIL"]
    assert len(counted) == 6 and len(result.trials) == 8  # the budget, plus the two stopped trials shown as failed
    new = set(after) - set(before)
    assert new and min(new) > max(before) and not new & first_runs
    # Re-seeded per trial number: a resumed run proposes new points, it does not replay an earlier run's.
    lambdas = [t.params["lambda"] for t in counted]
    assert len(set(lambdas)) == len(lambdas)


def test_two_workers_share_one_study(planted, tmp_path):
    config = planted.write_recipe(tmp_path, tune={"methods": ["task_arithmetic", "ties"]})
    out = tmp_path / "out"
    workers = [_start(tmp_path, config, planted.data, out, trials=8, delay=0.2, ready=2) for _ in range(2)]
    for worker in workers:
        worker.join(240)
        assert worker.exitcode == 0, "a worker failed (its traceback is in the captured stderr)"
    runs = _log(tmp_path)
    assert {pid for pid, _, _ in runs} == {w.pid for w in workers}  # both took trials
    for method in ("task_arithmetic", "ties"):
        trials = _study(out, method).get_trials()
        surplus = [t for t in trials if t.user_attrs.get("surplus")]
        kept = [t for t in trials if not t.user_attrs.get("surplus")]
        assert len(kept) == 4 and all(t.state.name in ("COMPLETE", "PRUNED") for t in kept), trials
        assert all(t.state.name == "FAIL" for t in surplus)
        evaluated = [n for _, m, n in runs if m == method]
        assert sorted(evaluated) == sorted(t.number for t in kept)  # each trial run once, by one worker
        points = [tuple(sorted(t.params.items())) for t in kept]
        assert len(set(points)) == len(points)
    board = (out / "leaderboard.md").read_text()
    assert "task_arithmetic: 4, ties: 4" in board
    for method in ("task_arithmetic", "ties"):  # budget, complete, pruned, failed, running
        complete, pruned = re.search(rf"\| {method} \| 4 \| (\d+) \| (\d+) \| 0 \| 0 \|", board).groups()
        assert int(complete) + int(pruned) == 4
