"""Can a community specialist join a merge? Checks against a base, and appending a checked model to a recipe.

:func:`check_specialist` runs on one model the checks of :mod:`r2m_hf.checks` that a merge runs fail-fast (with the
same functions, sources, layout and readers) and collects their outcomes instead of stopping at the first: each
yields a :class:`Check` that says what was found and, when it failed, what to fix. It also reads what a merge does
not need to: every weight against the base, and which module naming an adapter uses. :func:`add_specialist` appends a
model that passes to a merge YAML, keeping the file's comments.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .checkpoint import LEGACY_VIT_MODULES, Checkpoint
from .checks import (
    Finding,
    check_adapter_base,
    check_adapter_shapes,
    check_architectures,
    check_labels,
    check_shares_base,
    require_model_config,
)
from .config import ModelEntry, SourceSpec, load_config, load_yaml, parse_config, read_yaml_text
from .errors import ConfigError, R2MError, format_validation_error
from .lora import LoraAdapter
from .planning import Specialist, adapter_labels, layout_for
from .sources import ResolvedSource, resolve_source


@dataclass
class Check:
    """The outcome of one check.

    Args:
        name (`str`): what was checked (``architecture``, ``shapes``, ``base``, ``labels``, ``head``, …).
        ok (`bool` or `None`): passed, failed, or None when it could not run because an earlier check failed.
        detail (`str`): what was found.
        fix (`str`, *optional*): what to do about a failure.
    """

    name: str
    ok: bool | None
    detail: str
    fix: str | None = None

    def line(self) -> str:
        mark = {True: "✓", False: "✗", None: "·"}[self.ok]
        text = f"{mark} {self.name}: {self.detail}"
        return f"{text} — fix: {self.fix}" if self.ok is False and self.fix else text


@dataclass
class SpecialistReport:
    """All checks of one specialist against one base.

    Args:
        reference (`str`): the specialist as given.
        base (`str`): the base as given.
        kind (`str`, *optional*): ``full`` or ``lora`` once known.
        checks (`list[Check]`): one per check, in order.
        fake_index (`int`, *optional*), fake_name (`str`, *optional*): the resolved fake class.
        source (`ResolvedSource`, *optional*): where the specialist's files are.
    """

    reference: str
    base: str
    kind: str | None = None
    checks: list[Check] = field(default_factory=list)
    fake_index: int | None = None
    fake_name: str | None = None
    source: ResolvedSource | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        """True when the specialist can join a merge over this base."""
        return bool(self.checks) and all(c.ok is not False for c in self.checks)

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if c.ok is False]

    def lines(self) -> list[str]:
        return [c.line() for c in self.checks]

    def add(self, name: str, ok: bool | None, detail: str, fix: str | None = None) -> Check:
        check = Check(name, ok, detail, fix)
        self.checks.append(check)
        return check

    def skip(self, *names: str) -> None:
        for name in names:
            self.add(name, None, "not checked (an earlier check failed)")


def check_specialist(
    reference: str,
    base: str,
    *,
    fake_label: str | int | None = None,
    base_dir: Path | None = None,
    allow_pickle: bool = False,
    compare_weights: bool = True,
) -> SpecialistReport:
    """Check whether a specialist (full model or LoRA adapter) can join a merge over `base`.

    Runs the checks of :mod:`r2m_hf.checks` that a merge runs, in order, and records each outcome; a check whose
    input an earlier failure left undefined is marked as not run.

    Args:
        reference (`str`): local folder or Hub repo id[@revision] of the specialist.
        base (`str`): local folder or Hub repo id[@revision] of the merge's base model.
        fake_label (`str` or `int`, *optional*): the fake class, when its ``id2label`` does not say.
        base_dir (`Path`, *optional*): folder relative references are resolved against first (a YAML's folder).
        allow_pickle (`bool`): accept pickle checkpoints.
        compare_weights (`bool`): read the weights to see whether the model was fine-tuned from `base` (full models),
            or whether an adapter's declared local base holds the given base's weights.

    Returns:
        `SpecialistReport`: one :class:`Check` per property (source, architecture, shapes, base, labels, head, and
        adapter naming for adapters); ``report.ok`` says whether it can join.
    """
    report = SpecialistReport(reference=reference, base=base)
    who = f"specialist {reference}"
    try:
        source = resolve_source(SourceSpec.parse(reference), base_dir=base_dir, allow_pickle=allow_pickle)
    except (R2MError, ValueError) as exc:
        report.add("source", False, str(exc), "give a local model folder or a Hub repo id[@revision]")
        report.skip("architecture", "shapes", "base", "labels", "head")
        return report
    report.source = source
    report.kind = "lora" if source.is_adapter else "full"
    report.add("source", True, f"{report.kind} model at {_where(source)}")
    try:
        base_source = resolve_source(SourceSpec.parse(base), base_dir=base_dir, allow_pickle=allow_pickle)
        base_config = require_model_config(base_source.path, f"base {base}")
    except (R2MError, ValueError) as exc:
        report.add("base", False, str(exc), "give the base model the specialist was fine-tuned from (--base)")
        report.skip("architecture", "shapes", "labels", "head")
        return report
    inputs = _Inputs(report, who, source, base_source, base_config, fake_label, allow_pickle, compare_weights)
    if report.kind == "full":
        _check_full(inputs)
    else:
        _check_adapter(inputs)
    return report


def _where(source: ResolvedSource) -> str:
    if source.repo_id:
        return f"{source.repo_id}@{source.spec.revision or 'main'} (commit {(source.commit or '?')[:12]})"
    return str(source.path)


@dataclass
class _Inputs:
    """What every check of one specialist reads, and the report its outcomes go to."""

    report: SpecialistReport
    who: str
    source: ResolvedSource
    base_source: ResolvedSource
    base_config: Any
    fake_label: str | int | None
    allow_pickle: bool
    compare_weights: bool

    def run(self, name: str, check: Callable[[], Finding | tuple[Any, Finding]], fix: str) -> Any:
        """Run one check and record ✓ with what it found, or ✗ with its error and `fix`.

        Returns:
            The value a check returns beside its finding (the finding itself when there is none); None on failure.
        """
        try:
            found = check()
        except R2MError as exc:  # the report is about this one specialist: its name need not open every line
            self.report.add(name, False, str(exc).removeprefix(f"{self.who}: "), fix)
            return None
        value, finding = found if isinstance(found, tuple) else (found, found)
        self.report.add(name, True, finding.detail)
        return value


def _check_full(c: _Inputs) -> None:
    def architecture():
        config = require_model_config(c.source.path, c.who)
        check_architectures([(c.who, config)], c.base_config, "base")
        layout = layout_for(c.base_config)
        return (config, layout), Finding(f"{config.model_type} ({layout.model_class}), like the base")

    found = c.run("architecture", architecture, f"fine-tune the specialist from the base ({c.base_config.model_type})")
    if found is None:
        c.report.skip("shapes", "base", "labels", "head")
        return
    config, layout = found

    def shapes():
        checkpoint = Checkpoint(c.source.path, layout, c.who, allow_pickle=c.allow_pickle)
        checkpoint.check_covers(layout.backbone_names, layout, "the merge")
        return checkpoint, Finding(f"{len(layout.backbone_names)} backbone tensors have the base's shapes")

    checkpoint = c.run("shapes", shapes, "use a specialist fine-tuned from this base (same sizes and layers)")
    if checkpoint is None:
        c.report.skip("base", "labels", "head")
        return

    def shares_base():
        base = Checkpoint(c.base_source.path, layout, "base", allow_pickle=c.allow_pickle)
        base.check_covers(layout.backbone_names, layout, "the merge")
        return check_shares_base(checkpoint, base, layout.backbone_names, c.who)

    if c.compare_weights:
        fix = "check --base with the checkpoint the specialist was fine-tuned from; merge only specialists of one base"
        c.run("base", shares_base, fix)
    else:
        c.report.add("base", None, "weights not compared (--no-weights)")
    _check_labels(c, dict(config.id2label or {}))
    _check_head(c, Specialist(name=c.who, source=c.source, weight=1.0, who=c.who, checkpoint=checkpoint), layout)


def _check_adapter(c: _Inputs) -> None:
    def architecture():
        layout = layout_for(c.base_config)
        adapter = LoraAdapter(c.source.path, layout, c.who, allow_pickle=c.allow_pickle)
        detail = f"adapter modules land on {layout.model_class} ({c.base_config.model_type})"
        return (adapter, layout), Finding(detail)

    found = c.run("architecture", architecture, f"use a LoRA adapter trained on the base ({c.base_config.model_type})")
    if found is None:
        c.report.skip("shapes", "base", "labels", "head", "adapter targets")
        return
    adapter, layout = found
    fix = "the adapter belongs to another base; check --base or retrain it on this one"
    c.run("shapes", lambda: check_adapter_shapes(adapter, layout, c.who), fix)
    declared = (c.source.read_json("adapter_config.json") or {}).get("base_model_name_or_path")
    compare = layout if c.compare_weights else None
    c.run(
        "base",
        lambda: check_adapter_base(c.source, c.base_source, c.who, layout=compare, allow_pickle=c.allow_pickle),
        f"check with --base {declared}, or retrain the adapter on the given base",
    )
    _check_labels(c, adapter_labels(c.source, c.base_config))
    _check_head(c, Specialist(name=c.who, source=c.source, weight=1.0, who=c.who, adapter=adapter), layout)
    _check_adapter_naming(c.report, adapter)


def _check_labels(c: _Inputs, id2label: dict) -> None:
    labels = {int(k): str(v) for k, v in id2label.items()}
    how = f"fake_label {c.fake_label!r}" if c.fake_label is not None else "its id2label"

    def labels_check():
        index = check_labels(labels, c.fake_label, c.who)
        return index, Finding(f"fake = index {index} ({labels.get(index, '?')!r}) from {how} {labels}")

    index = c.run("labels", labels_check, "state the fake class: `fake_label: <name or index>` (add --fake-label)")
    if index is not None:
        c.report.fake_index, c.report.fake_name = index, labels.get(index)


def _check_head(c: _Inputs, specialist: Specialist, layout) -> None:
    fix = "a specialist is a binary real/fake classifier: save the *ForImageClassification model with its 2-row head"
    c.run("head", lambda: specialist.check_head(layout), fix)


def _check_adapter_naming(report: SpecialistReport, adapter: LoraAdapter) -> None:
    modules = [entry["module"] for entry in adapter.targets.values()]
    legacy = sorted({old for _, old in LEGACY_VIT_MODULES for m in modules if old in m})
    targets = adapter.config.get("target_modules")
    if legacy:
        report.add(
            "adapter targets",
            True,
            f"legacy transformers 4 names (target_modules={targets}); r2m-hf maps them. Loaded directly with peft "
            "under transformers 5 this adapter is silently dropped: rename its keys and targets to the current names "
            "(query/value → q_proj/v_proj, encoder.layer.N → layers.N) to use it outside r2m-hf",
        )
    else:
        report.add("adapter targets", True, f"current transformers 5 names (target_modules={targets})")


# ---------------------------------------------------------------------------------------------------------- add
@dataclass
class AddResult:
    """What :func:`add_specialist` did."""

    report: SpecialistReport
    name: str
    entry: dict
    comments_kept: bool
    written: bool


def add_specialist(
    config_path: str | Path,
    reference: str,
    *,
    name: str | None = None,
    fake_label: str | int | None = None,
    allow_pickle: bool = False,
) -> AddResult:
    """Check a specialist against a recipe's ``base_model`` and append it to ``models:`` when it passes.

    The entry is inserted as text at the end of the ``models:`` block, so the file's comments and layout are kept;
    when the block cannot be found (flow style), the file is re-dumped without comments. The result is validated
    with :func:`r2m_hf.config.load_config` before it replaces the file.

    Args:
        config_path (`str` or `Path`): the merge YAML.
        reference (`str`): local folder or Hub repo id[@revision] of the specialist.
        name (`str`, *optional*): its name in the recipe (default: the folder or repo name).
        fake_label (`str` or `int`, *optional*): its fake class, when its labels do not say.
        allow_pickle (`bool`): accept pickle checkpoints.

    Returns:
        `AddResult`: the checks and, when they passed, the appended entry (``written`` is False otherwise).
    """
    config_path = Path(config_path)
    config = load_config(config_path)
    if not config.base_model:
        raise ConfigError(f"{config_path}: base_model: the recipe names no base to check the specialist against")
    text_ref = _reference_for(config_path, reference)
    entry: dict = {"model": text_ref}
    if name:
        entry["name"] = name
    if fake_label is not None:
        entry["fake_label"] = int(fake_label) if str(fake_label).isdecimal() else fake_label
    try:
        display = ModelEntry(**entry).display_name()
    except ValueError as exc:  # pydantic's ValidationError: a name outside the allowed characters
        raise ConfigError(f"{config_path}: {format_validation_error(exc) if hasattr(exc, 'errors') else exc}") from None
    if display in config.names():
        raise ConfigError(f"{config_path}: a model named {display!r} is already in the recipe; pass --name")
    report = check_specialist(
        reference, config.base_model, fake_label=fake_label, base_dir=config_path.parent, allow_pickle=allow_pickle
    )
    if not report.ok:
        return AddResult(report, display, entry, comments_kept=True, written=False)
    text = read_yaml_text(config_path)
    new_text, kept = _append_entry(text, entry)
    try:
        checked = parse_config(load_yaml(new_text, str(config_path)), str(config_path))
    except R2MError:
        checked = None
    if checked is None or checked.names() != [*config.names(), display]:
        data = load_yaml(text, str(config_path))
        data["models"].append(entry)
        new_text, kept = yaml.safe_dump(data, sort_keys=False, allow_unicode=True), False
    tmp = config_path.with_name(f".{config_path.name}.tmp")
    tmp.write_text(new_text, encoding="utf-8")
    try:
        load_config(tmp)
    except R2MError:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, config_path)
    return AddResult(report, display, entry, comments_kept=kept, written=True)


def _reference_for(config_path: Path, reference: str) -> str:
    """A local folder as the YAML should name it (relative to the YAML's folder when inside it); repo ids as is."""
    local = Path(reference).expanduser()
    if not local.is_dir():
        return reference
    local = local.resolve()
    try:
        return local.relative_to(config_path.resolve().parent).as_posix()
    except ValueError:
        return str(local)


_MODELS_KEY = re.compile(r"^models:\s*(#.*)?$")
_TOP_KEY = re.compile(r"^[^\s#-]")


def _append_entry(text: str, entry: dict) -> tuple[str, bool]:
    """Insert `entry` as the last item of the block-style ``models:`` list; (text, True) or (text, False)."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if _MODELS_KEY.match(line)), None)
    if start is None:
        return text, False
    end = len(lines)
    for i in range(start + 1, len(lines)):
        if _TOP_KEY.match(lines[i]):
            end = i
            break
    items = [line for line in lines[start + 1 : end] if line.lstrip().startswith("- ")]
    indent = (len(items[0]) - len(items[0].lstrip())) if items else 2
    last = max(
        (i for i in range(start + 1, end) if lines[i].strip() and not lines[i].lstrip().startswith("#")), default=start
    )
    dumped = yaml.safe_dump([entry], sort_keys=False, allow_unicode=True).splitlines()
    block = [" " * indent + line for line in dumped]
    new = lines[: last + 1] + block + lines[last + 1 :]
    return "\n".join(new) + "\n", True


__all__ = ["AddResult", "Check", "SpecialistReport", "add_specialist", "check_specialist"]
