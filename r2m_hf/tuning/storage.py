"""The tuner's Optuna plumbing: the study database, one study per method, its seeded sampler and its pruner.

**Equal budgets that hold with parallel workers.** Each method gets its own study, ``NAME/method``, and the same
number of trials. A worker tunes the methods in order and, in each, runs trials until the study holds its budget
of trials that did not fail (running trials of other workers count). Two workers that ask for a trial at the same
moment can overshoot by one: the trial whose number comes after the budget is filled ends at once as a failed
``surplus`` trial and is left out of every table. A failed trial (an error, Ctrl-C, a killed process) frees its
slot, so a resumed run tops the study up to its budget and never repeats a finished trial.

**Reproducible trials.** The sampler is TPE, re-seeded for each trial from (seed, method, trial number): a
single-worker run proposes the same points every time, a resumed or parallel run proposes new ones. Each trial
stores its full parameters, so its recipe can be rebuilt exactly (:func:`~r2m_hf.tuning.recipe_for`). A method
whose trials fail `budget` times in a row (an error in every merge) is given up.

**Crashes.** A trial left ``RUNNING`` by a process that no longer exists on this host is marked failed when a worker
starts; one left by another machine is failed by Optuna's heartbeat after ``GRACE_SECONDS``.
"""

from __future__ import annotations

import hashlib
import os
import random
import socket
import time
import warnings
from pathlib import Path

from ..errors import ConfigError, OutputError

HEARTBEAT_SECONDS = 60
GRACE_SECONDS = 180


class SurplusTrial(Exception):
    """A trial asked for after the method's budget was filled by other workers (ends as a failed trial)."""


def default_storage(output_dir: Path) -> str:
    """``sqlite:///<output_dir>/tune.db`` (absolute)."""
    return f"sqlite:///{(Path(output_dir).resolve() / 'tune.db').as_posix()}"


def open_storage(url: str):
    """An Optuna RDB storage for `url`, refused in one line when it cannot be written.

    Args:
        url (`str`): an SQLAlchemy URL: ``sqlite:///path/tune.db`` (one machine, several processes) or
            ``postgresql://user:password@host/db`` / ``mysql+pymysql://…`` (several machines).

    Returns:
        `optuna.storages.RDBStorage`: with heartbeats, so trials of a crashed machine are failed and freed.
    """
    import optuna

    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        if str(path) not in ("", ":memory:"):
            folder = path.parent
            if not folder.is_dir():
                raise OutputError(f"storage {url}: folder {folder} does not exist; create it or give another path")
            if path.exists() and not path.is_file():
                raise OutputError(f"storage {url}: {path} is not a file")
            if not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
                raise OutputError(f"storage {url}: {path} cannot be written; give a writable path")
    elif "://" not in url:
        raise ConfigError(f"storage {url!r}: not a database URL; use sqlite:///path/tune.db or postgresql://…")
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    last = None
    for _ in range(5):  # several workers creating the schema at once may collide; the loser retries
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                storage = optuna.storages.RDBStorage(
                    url, engine_kwargs=engine, heartbeat_interval=HEARTBEAT_SECONDS, grace_period=GRACE_SECONDS
                )
            if url.startswith("sqlite"):
                _fast_sqlite(storage.engine)
            return storage
        except Exception as exc:  # SQLAlchemy raises many types (driver missing, refused, read-only, ...)
            last = exc
            if type(exc).__name__ not in ("IntegrityError", "OperationalError"):
                break
            time.sleep(0.2 + random.random() / 2)
    detail = " ".join(str(last).split())[:300]
    raise OutputError(f"storage {url}: cannot open the study database: {detail}") from None


def _fast_sqlite(engine) -> None:
    """Write-ahead logging without a sync per commit: a trial writes a few dozen small rows, and the default journal
    syncs the disk on every one of them. The database stays consistent if a process crashes (not on power loss)."""
    from sqlalchemy import event

    def pragmas(connection, _record):
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    event.listen(engine, "connect", pragmas)
    engine.dispose()  # connections opened before the listener reopen with it


def trial_seed(seed: int, method: str, number: int) -> int:
    """The seed of one trial's sampler: stable across runs, distinct across methods and trial numbers."""
    digest = hashlib.sha256(f"{seed}:{method}:{number}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def make_sampler(seed: int, method: str, budget: int):
    """TPE re-seeded per trial number (see the module docstring)."""
    from optuna.samplers import BaseSampler, TPESampler

    startup = min(10, max(3, budget // 4))

    class TrialSeededTPE(BaseSampler):
        def __init__(self):
            self._number = None
            self._tpe = None

        def _for(self, trial):
            if trial.number != self._number:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    self._tpe = TPESampler(
                        seed=trial_seed(seed, method, trial.number), n_startup_trials=startup, constant_liar=True
                    )
                self._number = trial.number
            return self._tpe

        def infer_relative_search_space(self, study, trial):
            return self._for(trial).infer_relative_search_space(study, trial)

        def sample_relative(self, study, trial, search_space):
            return self._for(trial).sample_relative(study, trial, search_space)

        def sample_independent(self, study, trial, param_name, param_distribution):
            return self._for(trial).sample_independent(study, trial, param_name, param_distribution)

        def before_trial(self, study, trial):
            self._for(trial).before_trial(study, trial)

        def after_trial(self, study, trial, state, values):
            self._for(trial).after_trial(study, trial, state, values)

        def reseed_rng(self):
            pass

    return TrialSeededTPE()


def make_pruner(enabled: bool):
    """Stop a trial, after half the split or more, whose objective is below the worst quarter of complete trials."""
    import optuna

    if not enabled:
        return optuna.pruners.NopPruner()
    return optuna.pruners.PercentilePruner(75.0, n_startup_trials=3, n_warmup_steps=1, n_min_trials=3)


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:  # a killed child not yet reaped by its parent is a zombie: gone for our purpose
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[-1].split()[0] == "Z"
    except OSError:
        return False


def fail_dead_trials(study, storage) -> int:
    """Mark failed the trials left running by processes of this host that no longer exist; return how many."""
    from optuna.trial import TrialState

    host = socket.gethostname()
    study_id = storage.get_study_id_from_name(study.study_name)
    failed = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        who = str(t.user_attrs.get("worker", ""))
        worker_host, _, pid = who.rpartition(":")
        if worker_host == host and pid.isdigit() and _process_gone(int(pid)):
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
            storage.set_trial_user_attr(trial_id, "error", f"worker {who} died while running this trial")
            storage.set_trial_state_values(trial_id, TrialState.FAIL)
            failed += 1
    return failed


def wait_for_running(studies, storage, timeout: float = GRACE_SECONDS, poll: float = 0.5) -> int:
    """Wait until no trial of `studies` runs (other workers finishing theirs), at most `timeout` seconds.

    Returns:
        `int`: trials still running when it gave up (a crashed remote worker's, until its heartbeat expires).
    """
    from optuna.storages import fail_stale_trials
    from optuna.trial import TrialState

    deadline = time.monotonic() + timeout
    while True:
        running = 0
        for study in studies:
            fail_dead_trials(study, storage)
            with warnings.catch_warnings():  # experimental in Optuna's eyes since 2.9
                warnings.simplefilter("ignore")
                fail_stale_trials(study)  # another machine's trial whose heartbeat stopped more than the grace ago
            running += len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
        if not running or time.monotonic() >= deadline:
            return running
        time.sleep(poll)


def counted(study) -> int:
    """Trials that use the budget: every trial that did not fail (running ones included)."""
    from optuna.trial import TrialState

    return sum(1 for t in study.get_trials(deepcopy=False) if t.state != TrialState.FAIL)


def check_surplus(trial, budget: int) -> None:
    """Raise `SurplusTrial` when the budget was filled by trials numbered before this one."""
    from optuna.trial import TrialState

    ahead = sum(
        1 for t in trial.study.get_trials(deepcopy=False) if t.number < trial.number and t.state != TrialState.FAIL
    )
    if ahead >= budget:
        trial.set_user_attr("surplus", True)
        raise SurplusTrial(f"the budget of {budget} trials was filled by other workers")


def open_study(storage, name: str, direction: str, sampler, pruner, identity: dict, start: dict | None = None):
    """Create or load one method's study; refuse to resume a study tuned on other data, recipe or metric.

    A new study gets `start` (the method's package defaults, see `MethodSpace.start`) queued as its first trial.
    """
    import optuna

    study = optuna.create_study(
        storage=storage, study_name=name, direction=direction, sampler=sampler, pruner=pruner, load_if_exists=True
    )
    stored = study.user_attrs.get("r2m_hf")
    if stored is None:
        study.set_user_attr("r2m_hf", identity)
        if start:
            study.enqueue_trial(dict(start), skip_if_exists=True)  # two workers creating it queue it once
    else:
        for key in ("metric", "data", "recipe"):
            if stored.get(key) != identity.get(key):
                raise ConfigError(
                    f"study {name!r} was tuned with {key} {stored.get(key)!r}, not {identity.get(key)!r}; resume it "
                    "with the same inputs or give another study name"
                )
    return study


__all__ = [
    "SurplusTrial",
    "check_surplus",
    "counted",
    "default_storage",
    "fail_dead_trials",
    "make_pruner",
    "make_sampler",
    "open_storage",
    "open_study",
    "trial_seed",
    "wait_for_running",
    "worker_id",
]


def redact_url(url: str) -> str:
    """`url` with any password replaced by ``***`` (``postgresql://user:***@host/db``), for reports and logs."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[2]}"))
