"""`tune`: choose the merge method and its hyperparameters on the user's own validation split.

One call reads the specialists once, preprocesses the validation split once, then runs Optuna trials: each trial
samples a method's parameters (TPE, seeded), merges in memory through the engine (:mod:`.session`), scores the
merged model chunk by chunk with the evaluation runner (:mod:`.validation`) and is stopped early when clearly
worse. The studies live in an RDB (``sqlite:///OUTPUT/tune.db`` by default), one per method with equal budgets
(:mod:`.storage`), so a crashed or interrupted run resumes where it stopped and several workers tune together:

* several processes on one machine: start the same ``r2m-hf tune`` command (or `tune` call) in each; they share
  ``OUTPUT/tune.db`` (SQLite serialises their writes) and each writes the leaderboard when it ends;
* several machines: give every worker the same ``--storage postgresql://user:password@host:5432/db`` (or
  ``mysql+pymysql://…``; the driver package must be installed) and ``--study NAME``, and its own ``--output``; the
  trials, their parameters and metrics are all in the database, so any worker's leaderboard lists them all.

Workers run *different trials in parallel*. Launching one worker on several devices instead,
``accelerate launch -m r2m_hf tune …`` or ``torchrun --nproc_per_node N -m r2m_hf tune …``, splits *one trial's
evaluation* across them, as ``r2m-hf eval`` does: the processes run the trials one at a time, together. Rank 0 alone
talks to the study (ask, report, prune, tell), reads the specialists and merges; it broadcasts each trial's method
and parameters, then the merged weights (:meth:`.MergeSession.share`), to the other ranks. Every rank scores its
shard of each validation chunk and the runner gathers the scores (``score_images``), so every rank computes the same
objective; rank 0's prune-or-continue decision is broadcast after each chunk, so all ranks stop or go on together.
Rank 0 alone writes the leaderboard, the plots and ``best.yaml``; every rank returns the same `TuneResult` (a
``merge_best`` merge is then itself split across the ranks, as ``merge`` is). Both combine: each worker of a shared
study may be such a multi-process launch. One process (no launcher) runs exactly as before.

A split whose name contains ``test`` is refused unless ``i_know_this_is_test=True``: hyperparameters chosen on the
test split make its numbers meaningless.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

from ..distributed import ProcessGroup, process_group
from ..errors import ConfigError, MethodError, OutputError, R2MError
from .records import TrialRecord, TuneResult, better
from .report import write_outputs
from .session import MergeSession, image_processor
from .space import MethodSpace, method_spaces, read_recipe
from .storage import (
    SurplusTrial,
    check_surplus,
    counted,
    default_storage,
    fail_dead_trials,
    make_pruner,
    make_sampler,
    open_storage,
    open_study,
    wait_for_running,
    worker_id,
)
from .validation import OBJECTIVES, ValidationSet

logger = logging.getLogger("r2m_hf")
DEFAULT_TRIALS = 40


def tune(
    config,
    dataset,
    *,
    output_dir: str | Path,
    split: str = "validation",
    methods: list[str] | None = None,
    trials: int | None = None,
    metric: str | None = None,
    storage: str | None = None,
    study_name: str | None = None,
    seed: int = 0,
    label_column: str = "label",
    family_column: str | None = None,
    video_column: str | None = None,
    max_samples: int | None = None,
    batch_size: int = 32,
    device: str = "cpu",
    prune: bool = True,
    chunks: int = 4,
    memory_limit: int | None = None,
    allow_pickle: bool = False,
    i_know_this_is_test: bool = False,
    merge_best: str | Path | None = None,
    overwrite: bool = False,
    push_to_hub: str | None = None,
    private: bool = False,
    plots: bool = True,
    progress: bool = True,
) -> TuneResult:
    """Tune merge methods and their hyperparameters on a validation split; write a leaderboard and ``best.yaml``.

    Args:
        config (`str`, `Path` or `MergeConfig`): the recipe (specialists, base, head policy); its optional ``tune:``
            section picks methods and narrows or widens their ranges (see :mod:`r2m_hf.tuning.space`).
        dataset: the validation data, anything `r2m_hf.evaluation.load_evaluation_data` reads.
        output_dir (`str` or `Path`): where ``leaderboard.md``/``.csv``, ``plots/``, ``best.yaml`` (and by default
            the study database) go; created if needed, reused on resume.
        split (`str`): the split to tune on; one named like ``test`` needs `i_know_this_is_test`.
        methods (`list[str]`, *optional*): methods to tune; default the ``tune:`` section's, else the recipe's.
        trials (`int`, *optional*): total budget, split equally between the methods (rounded up); default the
            section's, else 40. Calling again with a larger number continues the same studies.
        metric (`str`, *optional*): ``auc``, ``eer``, ``ap`` (pooled) or ``auc@families`` (mean over families);
            default the section's, else ``auc``.
        storage (`str`, *optional*): database URL; default ``sqlite:///OUTPUT/tune.db``.
        study_name (`str`, *optional*): name of the study family (``NAME/method`` per method); default the recipe
            file's stem.
        seed (`int`): seeds the sampler and the chunk order.
        label_column, family_column, video_column, max_samples: how the split is read.
        batch_size (`int`), device (`str`): scoring batch size; where merging and scoring run (``cpu``, ``cuda``,
            ``cuda:N`` or ``auto``).
        prune (`bool`), chunks (`int`): score in `chunks` parts and stop clearly worse trials after half of them.
        memory_limit (`int`, *optional*): bytes the kept task vectors may use (default half the free memory);
            above it every trial streams the specialists from disk.
        allow_pickle (`bool`): accept pickle checkpoints.
        i_know_this_is_test (`bool`): allow a test split.
        merge_best (`str` or `Path`, *optional*): merge ``best.yaml`` into this folder at the end.
        overwrite (`bool`): let `merge_best` replace an existing folder.
        push_to_hub (`str`, *optional*), private (`bool`): push the `merge_best` folder to this Hub repo.
        plots (`bool`): draw ``plots/*.png`` (needs matplotlib).
        progress (`bool`): show a progress bar.

    Under ``accelerate launch`` or ``torchrun`` (``WORLD_SIZE`` > 1) every process must call `tune` with the same
    arguments: they score each trial together (see the module docstring), rank 0 alone uses the study and writes the
    files, and every rank returns rank 0's result. ``device="cuda"`` (or ``auto``) then means each rank's own GPU.

    Returns:
        `TuneResult`: every trial, the best per method and overall, the files written.

    Raises:
        `ConfigError`: a test split, an unknown metric or method, an empty search space, a range the method rejects.
        `DatasetError`: a split without real or without fake rows. `OutputError`: a storage that cannot be written.
        `MethodError`: no trial completed.
    """
    import optuna

    start = time.perf_counter()
    _refuse_test(split, i_know_this_is_test)
    if push_to_hub and merge_best is None:
        raise ConfigError("push_to_hub needs merge_best: the folder of the best recipe to push (--merge-best OUT)")
    merge_config, section, path = read_recipe(config)
    where = str(path) if path is not None else "recipe"
    metric = metric or section.metric or "auc"
    if metric not in OBJECTIVES:
        raise ConfigError(f"metric {metric!r}: expected one of {', '.join(OBJECTIVES)}")
    direction = OBJECTIVES[metric][2]
    total = trials if trials is not None else section.trials or DEFAULT_TRIALS
    if total < 1:
        raise ConfigError(f"trials must be ≥ 1, got {total}")
    output_dir = _output_folder(output_dir)
    storage_url = storage or default_storage(output_dir)

    from ..merge import plan_merge, resolve_device

    torch_device = resolve_device(device)
    device = str(torch_device)
    group = process_group(torch_device)  # one process unless launched by accelerate / torchrun
    progress = progress and group.is_main
    rdb = _on_main(group, lambda: open_storage(storage_url))  # rank 0 alone talks to the study
    plan = plan_merge(merge_config, config_path=path, allow_pickle=allow_pickle)
    spaces = method_spaces(merge_config, section, methods, has_base=plan.base is not None, where=where)
    per_method = math.ceil(total / len(spaces))
    budgets = {m: per_method for m in spaces}
    processor = image_processor(plan)
    validation = ValidationSet(
        dataset, processor, split=split, label_column=label_column, family_column=family_column,
        video_column=video_column, max_samples=max_samples, metric=metric, chunks=chunks if prune else 1,
        seed=seed, batch_size=batch_size, device=device,
    )  # fmt: skip
    _refuse_test(validation.data.split, i_know_this_is_test)
    session = MergeSession(plan, processor, device=device, memory_limit=memory_limit, merging=group.is_main)

    name = study_name or (path.stem if path is not None else "r2m-tune")
    identity = {
        "metric": metric,
        "data": _data_fingerprint(validation.data),
        "recipe": _fingerprint(merge_config),
    }
    run = _Run(session, validation, spaces, budgets, metric, rdb, group)
    if not group.is_main:  # another rank of a multi-process launch: score rank 0's trials, then take its result
        _on_main(group, None)  # rank 0 opened the studies (or raised)
        run.follow()
        result = _on_main(group, None)
    else:
        verbosity = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        try:
            studies = _on_main(group, lambda: {
                method: open_study(
                    rdb, f"{name}/{method}", direction, make_sampler(seed, method, budgets[method]),
                    make_pruner(prune), {**identity, "method": method, "space": space.describe()}, space.start,
                ) for method, space in spaces.items()
            })  # fmt: skip
            try:
                run.all(studies, progress)
                group.broadcast(None)  # the other ranks' `follow` ends
                wait_for_running(studies.values(), rdb)  # other workers' last trials, so every leaderboard is complete
            except KeyboardInterrupt:
                _finish(studies, spaces, budgets, name, storage_url, metric, direction, validation, output_dir,
                        plan, merge_config, session, start, require_best=False, plots=plots,
                        processes=group.world_size)  # fmt: skip
                raise
            result = _on_main(group, lambda: _finish(
                studies, spaces, budgets, name, storage_url, metric, direction, validation, output_dir, plan,
                merge_config, session, start, require_best=True, plots=plots, processes=group.world_size,
            ), share=True)  # fmt: skip
        finally:
            optuna.logging.set_verbosity(verbosity)
    if merge_best is not None:  # under a multi-process launch every rank takes part, as in `merge`
        from ..merge import merge

        result.merged = merge(
            result.files["best_yaml"], merge_best, device=device, overwrite=overwrite, allow_pickle=allow_pickle,
            progress=progress, push_to_hub=push_to_hub, private=private,
        )  # fmt: skip
    return result


def _on_main(group: ProcessGroup, work, *, share: bool = False):
    """Run `work` on rank 0 only; the other ranks raise the `R2MError` it raised, so they all stop together.

    One process: just `work()`. With several, rank 0 broadcasts its outcome: the error, else its value when `share`
    (other ranks return it; they return None otherwise, and pass `work=None`).
    """
    if not group.distributed:
        return work()
    if group.is_main:
        try:
            value = work()
        except R2MError as exc:
            group.broadcast(("error", exc))
            raise
        group.broadcast(("ok", value if share else None))
        return value
    kind, value = group.broadcast(None)
    if kind == "error":
        raise value
    return value


class _Run:
    """One worker's trials: every method in order, each topped up to its budget.

    Under a multi-process launch rank 0 runs :meth:`all` (the study, the merge) and the other ranks :meth:`follow`;
    each trial is a fixed sequence of broadcasts from rank 0: the method and parameters, whether the merge worked,
    the merged weights, then after each chunk but the last whether to stop. Rank 0 broadcasts None instead of a
    trial when it is done. With one process every broadcast returns its value and nothing else happens.
    """

    def __init__(self, session, validation, spaces, budgets, metric, storage, group: ProcessGroup | None = None):
        self.session, self.validation, self.spaces = session, validation, spaces
        self.budgets, self.metric, self.storage = budgets, metric, storage
        self.group = group or ProcessGroup()
        self.failures = 0

    def all(self, studies, progress: bool) -> None:
        from tqdm.auto import tqdm

        done = {m: min(counted(s), self.budgets[m]) for m, s in studies.items()}
        with tqdm(total=sum(self.budgets.values()), initial=sum(done.values()), desc="Tuning", unit="trial",
                  disable=not progress) as bar:  # fmt: skip
            for method, study in studies.items():
                fail_dead_trials(study, self.storage)
                budget, self.failures = self.budgets[method], 0
                while self.failures < budget:  # a method stops after `budget` failures in a row
                    done[method] = min(counted(study), budget)
                    bar.n = sum(done.values())
                    bar.refresh()
                    if done[method] >= budget:
                        break
                    study.optimize(
                        lambda trial, m=method: self.trial(trial, m), n_trials=1, catch=(R2MError, SurplusTrial),
                        gc_after_trial=False, show_progress_bar=False,
                    )  # fmt: skip

    def trial(self, trial, method: str) -> float:
        import optuna

        check_surplus(trial, self.budgets[method])
        trial.set_user_attr("worker", worker_id())
        parameters = self.spaces[method].suggest(trial)
        trial.set_user_attr("parameters", parameters)
        self.group.broadcast((method, parameters))
        start = time.perf_counter()

        def prune(step: int, value: float) -> bool:
            trial.report(value, step)
            return trial.should_prune()

        try:
            model, warnings = self._merge(method, parameters)
            merged = time.perf_counter()
            rows, value, result, pruned = self._score(model, prune)
            self._record(trial, result, rows, value, start, merged, warnings)
            self.failures = 0
            if pruned:
                raise optuna.TrialPruned(f"{self.metric} {value:.4f} on {rows} rows")
        except R2MError as exc:
            self.failures += 1
            trial.set_user_attr("error", str(exc))
            raise
        if math.isnan(value):
            self.failures += 1
            trial.set_user_attr("error", f"{self.metric} is undefined on this split (NaN)")
        return value

    def _merge(self, method: str, parameters: dict) -> tuple[Any, list[str]]:
        """Rank 0 merges; the other ranks learn whether it worked and, if so, receive the merged weights."""
        try:
            model, warnings = self.session.load(method, parameters)
        except R2MError as exc:
            self.group.broadcast(("skip", str(exc)))  # the other ranks drop this trial too
            raise
        except Exception as exc:
            self.group.broadcast(("stop", f"{type(exc).__name__}: {exc}"))
            raise
        self.group.broadcast(None)
        return self.session.share(self.group), warnings

    def _score(self, model, prune) -> tuple[int, float, Any, bool]:
        """Score `model` chunk by chunk; after each chunk but the last, stop if rank 0's `prune(step, value)` says so.

        Returns:
            `tuple`: rows scored, the objective on them, the runner's result, whether the trial was stopped early.
        """
        last = len(self.validation.chunks) - 1
        for step, (rows, value, result) in enumerate(self.validation.evaluate(model)):
            # The gathered scores, hence `value`, are the same on every rank; the decision is rank 0's.
            if step < last and not math.isnan(value):
                if self.group.broadcast(prune(step, value) if self.group.is_main else None):
                    return rows, value, result, True
        return rows, value, result, False

    def follow(self) -> None:
        """A rank other than 0: take part in each of rank 0's trials until it broadcasts that it is done."""
        while (command := self.group.broadcast(None)) is not None:
            method, parameters = command
            status = self.group.broadcast(None)
            if status is not None:  # rank 0's merge failed: a trial error is skipped, anything else ends the run
                kind, message = status
                if kind == "stop":
                    raise R2MError(f"rank 0 stopped while merging {method}: {message}")
                continue
            try:
                self._score(self.session.share(self.group), None)
            except R2MError:  # the scores are gathered, so rank 0 met the same error: its trial failed
                continue

    def _record(self, trial, result, rows, value, start, merged, warnings) -> None:
        now = time.perf_counter()
        summary = result.to_dict()
        trial.set_user_attr(
            "record",
            {
                "metrics": {k: summary[k] for k in ("overall", "mean", "families")},
                "rows": int(rows),
                "last_value": None if math.isnan(value) else float(value),
                "seconds": now - start,
                "merge_seconds": merged - start,
                "eval_seconds": now - merged,
                "warnings": warnings,
            },
        )


def _finish(studies, spaces, budgets, name, storage_url, metric, direction, validation, output_dir, plan,
            merge_config, session, start, *, require_best: bool, plots: bool,
            processes: int = 1) -> TuneResult:  # fmt: skip
    trials = [
        TrialRecord.from_frozen(method, t)
        for method, study in studies.items()
        for t in study.get_trials(deepcopy=False)
        if not t.user_attrs.get("surplus")
    ]
    best_per_method: dict[str, TrialRecord] = {}
    for t in trials:
        if t.state == "COMPLETE" and t.value is not None:
            current = best_per_method.get(t.method)
            if current is None or better(t.value, current.value, direction):
                best_per_method[t.method] = t
    best = None
    for method in budgets:  # method order breaks ties
        candidate = best_per_method.get(method)
        if candidate is not None and (best is None or better(candidate.value, best.value, direction)):
            best = candidate
    result = TuneResult(
        output_dir=output_dir,
        study_name=name,
        storage=storage_url,
        metric=metric,
        direction=direction,
        split=validation.data.split,
        dataset=validation.data.name,
        rows=len(validation),
        budgets=budgets,
        trials=trials,
        best=best,
        best_per_method=best_per_method,
        best_recipe=recipe_for(merge_config, plan, best.method, best.parameters) if best else {},
        read_seconds=session.read_seconds,
        in_memory=session.in_memory,
        notes=list(validation.data.notes),
    )
    if processes > 1:
        result.notes.append(
            f"each trial was merged once and its evaluation split across {processes} processes "
            "(accelerate / torchrun); the seconds per trial are those of the whole group"
        )
    result.seconds = time.perf_counter() - start
    result.files = write_outputs(result, spaces, plots=plots)
    if best is None and require_best:
        errors = sorted({t.error for t in trials if t.error})
        raise MethodError(
            f"no trial completed ({len(trials)} tried); "
            + (f"errors: {'; '.join(errors)[:400]}" if errors else "see the leaderboard")
        )
    return result


def recipe_for(config, plan, method: str, parameters: dict[str, Any]) -> dict[str, Any]:
    """The merge recipe of one trial: the tuned recipe with this method and parameters, local paths made absolute.

    Args:
        config (`MergeConfig`): the recipe tuned (without its ``tune:`` section).
        plan (`MergePlan`): its plan (for the resolved local folders).
        method (`str`), parameters (`dict`): the trial's method and full parameters.

    Returns:
        `dict`: a mapping `r2m_hf.config.parse_config` accepts and `merge` merges to the trial's model.
    """
    data = config.model_dump(exclude_none=True, exclude={"tune"})
    data["merge_method"] = method
    head = config.parameters.get("head")
    data["parameters"] = {**parameters, **({"head": head} if head is not None else {})}
    if plan.base_source is not None and plan.base_source.repo_id is None and config.base_model:
        data["base_model"] = str(plan.base_source.path)
    for entry, specialist in zip(data["models"], plan.specialists):
        if specialist.source.repo_id is None:
            own = specialist.adapter_base_source
            model = str(specialist.source.path)
            if own is not None:
                model = f"{own.path if own.repo_id is None else own.spec}+{model}"
            entry["model"] = model
        entry.setdefault("name", specialist.name)
    return data


def _fingerprint(config) -> str:
    """What must not change when a study is resumed: the specialists, their weights and heads, the dtypes."""
    key = {
        "base": config.base_model,
        "models": [(m.display_name(), m.weight, m.fake_label) for m in config.models],
        "head": config.parameters.get("head", "mean"),
        "dtype": [config.dtype, config.out_dtype],
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _data_fingerprint(data) -> str:
    """The validation rows as the study knows them (split, size, labels and families), whatever path they came by."""
    digest = hashlib.sha256(data.labels.tobytes())
    digest.update("\0".join(str(f) for f in (data.families or [])).encode())
    return f"split {data.split}, {len(data)} rows, labels {digest.hexdigest()[:12]}"


def _refuse_test(split: str, allowed: bool) -> None:
    if "test" in str(split).lower() and not allowed:
        raise ConfigError(
            f"split {split!r}: tune chooses hyperparameters, so it runs on validation data; tuning on a test split "
            "makes its numbers meaningless (pass i_know_this_is_test=True / --i-know-this-is-test to do it anyway)"
        )


def _output_folder(output_dir) -> Path:
    folder = Path(output_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise OutputError(f"output {folder}: exists and is not a folder") from None
    except OSError as exc:
        raise OutputError(f"output {folder}: cannot be created: {exc.strerror}") from None
    return folder.resolve()


__all__ = ["MethodSpace", "recipe_for", "tune"]
