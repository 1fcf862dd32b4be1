"""The merge API: config → sources → checkpoints → method → output folder → evaluation → model card → Hub.

:func:`merge` does what ``r2m-hf merge`` does, in this order: :func:`~r2m_hf.planning.plan_merge` (resolve and check
every input), :func:`~r2m_hf.running.run_merge` (stream the tensors through the method, write the folder
atomically), the recipe's ``evaluation:`` section, the model card (written once, with the metrics), and the push.
:func:`push` is the ``push`` verb: a finished folder to a Hub repo. The stages live in their own modules; this one
wires them and re-exports their public names.
"""

from __future__ import annotations

import errno
from pathlib import Path
from typing import TYPE_CHECKING

from .config import EvaluationSection, MergeConfig
from .errors import OutputError, R2MError
from .planning import MergePlan, Specialist, plan_merge
from .recipe import EVAL_FILE, Recipe
from .running import MergeResult, resolve_device, run_merge

if TYPE_CHECKING:
    from .evaluation import EvaluationResult
    from .hub import PushResult


def merge(
    config: MergeConfig | str | Path,
    output_dir: str | Path,
    *,
    device: str = "cpu",
    overwrite: bool = False,
    allow_pickle: bool = False,
    progress: bool = True,
    evaluate: bool = True,
    push_to_hub: str | None = None,
    private: bool = False,
    revision: str | None = None,
    create_pr: bool = False,
    token: str | None = None,
    overwrite_any: bool = False,
    record_local_paths: bool = False,
) -> MergeResult:
    """Merge the specialists of a recipe into one detector folder, evaluate it, write its card and push it.

    Args:
        config (`MergeConfig`, `str` or `Path`): the recipe or the path of its YAML file.
        output_dir (`str` or `Path`): the folder to write.
        device (`str`): ``cpu``, ``cuda`` or ``auto``: where the merge math runs (the evaluation runs where
            ``accelerate`` puts it).
        overwrite (`bool`): replace an existing non-empty output that r2m-hf wrote (never an input).
        allow_pickle (`bool`): accept pickle checkpoints (unpickled with ``weights_only=True``).
        progress (`bool`): show progress bars.
        evaluate (`bool`): run the recipe's ``evaluation:`` section when it has one (metrics in
            ``eval_results.json`` and the model card).
        push_to_hub (`str`, *optional*): push the folder to this model repo (``org/name``) at the end.
        private (`bool`): create that repo private.
        revision (`str`, *optional*): push to this branch.
        create_pr (`bool`): open a pull request instead of committing.
        token (`str`, *optional*): a Hub write token (default: ``HF_TOKEN`` or the stored login).
        overwrite_any (`bool`): also replace an existing folder r2m-hf did not write (still never an input).
        record_local_paths (`bool`): record local inputs by their absolute paths in the recipe, report and card
            (by default they are recorded relative to the recipe's folder, or by name, with their SHA-256).

    Returns:
        `MergeResult`: the folder, report, evaluation and push.

    Raises:
        `R2MError`: a bad recipe or input (before anything is written), an output folder that cannot be written, an
        evaluation dataset that cannot be used, or a failed push (the folder stays complete; retry with `push`).
    """
    plan = plan_merge(config, allow_pickle=allow_pickle)
    section = plan.config.evaluation if evaluate else None
    result = run_merge(  # without an evaluation the card is written before the folder appears, like every file
        plan,
        output_dir,
        device=device,
        overwrite=overwrite,
        progress=progress,
        write_card=section is None,
        card_repo_id=push_to_hub,
        overwrite_any=overwrite_any,
        record_local_paths=record_local_paths,
    )
    if not result.is_main_process:  # a multi-process merge: rank 0 evaluates, writes the card and pushes
        return result
    if section is not None:
        _evaluate_and_write_card(result, section, progress=progress, repo_id=push_to_hub)
    if push_to_hub:
        result.pushed = push(
            result.output_dir, push_to_hub, private=private, revision=revision, create_pr=create_pr, token=token
        )
    return result


def _evaluate_and_write_card(result: MergeResult, section: EvaluationSection, *, progress: bool, repo_id) -> None:
    """Evaluate the finished folder, then write its card once: with the metrics, or without them when it failed."""
    from .card import write_model_card

    try:
        try:
            result.evaluation = evaluate_section(result.output_dir, section, progress=progress)
            result.evaluation.save(result.output_dir / EVAL_FILE)
        finally:
            write_model_card(result.output_dir, eval_results=result.evaluation, repo_id=repo_id)
    except OSError as exc:
        if isinstance(exc, R2MError):
            raise
        code = errno.errorcode.get(exc.errno or 0, "error")
        raise OutputError(
            f"{result.output_dir}: the merged model is complete, but its model card or evaluation results cannot be "
            f"written ({exc.strerror or exc}) ({code}); free space and run the merge again with --overwrite"
        ) from None


def evaluate_section(
    model: str | Path, section: EvaluationSection, *, progress: bool = True, device: str | None = None
) -> EvaluationResult:
    """Evaluate `model` on the dataset a recipe's ``evaluation:`` section names.

    Args:
        model (`str` or `Path`): a model folder or Hub repo id.
        section (`EvaluationSection`): dataset, split, columns, batch size, sample cap.
        progress (`bool`): show a progress bar.
        device (`str`, *optional*): defaults to the ``accelerate`` device.

    Returns:
        `EvaluationResult`: metrics per forgery family, their mean and the pooled metrics.
    """
    from .evaluation import evaluate_model

    return evaluate_model(
        str(model),
        section.dataset,
        split=section.split,
        label_column=section.label_column,
        family_column=section.family_column,
        video_column=section.video_column,
        batch_size=section.batch_size,
        device=device,
        max_samples=section.max_samples,
        progress=progress,
        skip_unreadable=section.skip_unreadable,
    )


def push(
    folder: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    create_pr: bool = False,
    token: str | None = None,
) -> PushResult:
    """Push a merged output folder to a Hub model repo, in one commit named after its recipe.

    Args:
        folder (`str` or `Path`): the output folder of a merge.
        repo_id (`str`): ``org/name`` of the model repo (created when missing).
        private (`bool`): create the repo private.
        revision (`str`, *optional*): push to this branch (created from ``main`` when missing).
        create_pr (`bool`): open a pull request instead of committing.
        token (`str`, *optional*): a write token (default: ``HF_TOKEN`` or the stored login).

    Returns:
        `PushResult`: the commit and, with `create_pr`, the pull request.

    Raises:
        `OutputError`: `folder` is not a merged model folder.
        `ConfigError`: its recipe is damaged.
        `HubError`: the push failed (the message says how to retry).
    """
    from .hub import push_folder

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise OutputError(f"{folder}: not a merged model folder (no config.json); run `r2m-hf merge` first")
    recipe = Recipe.read(folder)
    message = f"Merge {', '.join(recipe.names)} with {recipe.merge_method} (r2m-hf)"
    return push_folder(
        folder, repo_id, token=token, private=private, revision=revision, create_pr=create_pr, commit_message=message
    )


__all__ = [
    "MergePlan",
    "MergeResult",
    "Specialist",
    "evaluate_section",
    "merge",
    "plan_merge",
    "push",
    "resolve_device",
    "run_merge",
]
