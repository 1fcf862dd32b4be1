"""Can a community specialist join a merge? Checks against a base, and appending a checked model to a recipe.

:func:`check_specialist` runs the checks a merge would run on one model (and a few it cannot: does a full model
look fine-tuned from this base, which naming its adapter uses) with the machinery the merge itself uses: sources,
layout, checkpoint and adapter readers, label resolution and head alignment. Each check yields a :class:`Check`
that says what was found and, when it fails, what to fix. :func:`add_specialist` appends a model that passes to a
merge YAML, keeping the file's comments.
"""

from __future__ import annotations

import os
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml

from .checkpoint import Checkpoint, LoraAdapter, compare_to_base, looks_unrelated
from .config import ModelEntry, SourceSpec, load_config, parse_config
from .errors import ConfigError, R2MError
from .groups import ModelLayout, build_layout
from .heads import fake_index_or_error
from .merge import Specialist, _adapter_labels, _check_adapter_base, _load_config, _target_config
from .sources import ResolvedSource, resolve_source
from .zoo import LEGACY_VIT_MODULES


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

    Args:
        reference (`str`): local folder or Hub repo id[@revision] of the specialist.
        base (`str`): local folder or Hub repo id[@revision] of the merge's base model.
        fake_label (`str` or `int`, *optional*): the fake class, when its ``id2label`` does not say.
        base_dir (`Path`, *optional*): folder relative references are resolved against first (a YAML's folder).
        allow_pickle (`bool`): accept pickle checkpoints.
        compare_weights (`bool`): for full models, read the weights to see whether they look fine-tuned from `base`.

    Returns:
        `SpecialistReport`: one :class:`Check` per property (architecture, shapes, base, labels, head, and adapter
        naming for adapters); ``report.ok`` says whether it can join.
    """
    report = SpecialistReport(reference=reference, base=base)
    who = f"specialist {reference}"
    later = ("architecture", "shapes", "base", "labels", "head")
    try:
        source = resolve_source(SourceSpec.parse(reference), base_dir=base_dir, allow_pickle=allow_pickle)
    except (R2MError, ValueError) as exc:
        report.add("source", False, str(exc), "give a local model folder or a Hub repo id[@revision]")
        report.skip(*later)
        return report
    report.source = source
    report.kind = "lora" if source.is_adapter else "full"
    try:
        base_source = resolve_source(SourceSpec.parse(base), base_dir=base_dir, allow_pickle=allow_pickle)
        base_config = _load_config(base_source.path, f"base {base}")
        if base_config is None:
            raise ConfigError(f"base {base} ({base_source.path}): no config.json")
    except (R2MError, ValueError) as exc:
        report.add("source", True, f"{report.kind} model at {_where(source)}")
        report.add("base", False, str(exc), "give the base model the specialist was fine-tuned from (--base)")
        report.skip("architecture", "shapes", "labels", "head")
        return report
    report.add("source", True, f"{report.kind} model at {_where(source)}")

    if report.kind == "full":
        _check_full(report, source, base_source, base_config, who, fake_label, allow_pickle, compare_weights)
    else:
        _check_adapter(report, source, base_source, base_config, who, fake_label, allow_pickle)
    return report


def _where(source: ResolvedSource) -> str:
    if source.repo_id:
        return f"{source.repo_id}@{source.spec.revision or 'main'} (commit {(source.commit or '?')[:12]})"
    return str(source.path)


def _base_layout(base_config) -> ModelLayout:
    return build_layout(_target_config([], base_config, "base"))


def _check_full(report, source, base_source, base_config, who, fake_label, allow_pickle, compare_weights) -> None:
    config = None
    try:
        config = _load_config(source.path, who)
        if config is None:
            raise ConfigError(f"{who}: no config.json; a full specialist is a transformers model folder")
        _target_config([(who, config)], base_config, "base")
        layout = _base_layout(base_config)
    except R2MError as exc:
        fix = f"fine-tune the specialist from the base ({base_config.model_type})"
        report.add("architecture", False, str(exc), fix)
        report.skip("shapes", "base", "labels", "head")
        return
    report.add("architecture", True, f"{config.model_type} ({layout.model_class}), like the base")

    try:
        checkpoint = Checkpoint(source.path, layout, who, allow_pickle=allow_pickle)
        checkpoint.check_covers(layout.backbone_names, layout, "the merge")
    except R2MError as exc:
        report.add("shapes", False, str(exc), "use a specialist fine-tuned from this base (same sizes and layers)")
        report.skip("base", "labels", "head")
        return
    report.add("shapes", True, f"{len(layout.backbone_names)} backbone tensors have the base's shapes")

    if compare_weights:
        _check_looks_finetuned(report, checkpoint, base_source, layout, allow_pickle)
    else:
        report.add("base", None, "weights not compared (--no-weights)")
    index = _check_labels(report, dict(config.id2label or {}), fake_label, who)
    specialist = Specialist(name=who, source=source, weight=1.0, checkpoint=checkpoint, fake_index=index or 1)
    _check_head(report, specialist, layout)


def _check_looks_finetuned(report, checkpoint, base_source, layout, allow_pickle) -> None:
    """Flag a full model none of whose tensors equals the base's and whose matrices are far from them."""
    try:
        base = Checkpoint(base_source.path, layout, "base", allow_pickle=allow_pickle)
        base.check_covers(layout.backbone_names, layout, "the merge")
    except R2MError as exc:
        report.add("base", False, str(exc), "give a base with the full backbone (--base)")
        return
    same, distances = compare_to_base(checkpoint, base, layout.backbone_names)
    total = len(layout.backbone_names)
    median = statistics.median(distances) if distances else 0.0
    detail = f"{same}/{total} backbone tensors equal the base's; median relative distance {median:.3g}"
    if looks_unrelated(same, distances):
        report.add(
            "base",
            False,
            detail + ": it does not look fine-tuned from this base",
            "check --base with the checkpoint the specialist was fine-tuned from; merge only specialists of one base",
        )
    else:
        report.add("base", True, detail)


def _check_labels(report, id2label: dict, fake_label, who: str) -> int | None:
    labels = {int(k): str(v) for k, v in id2label.items()}
    try:
        index = fake_index_or_error(labels, fake_label, who)
    except R2MError as exc:
        report.add("labels", False, str(exc), "state the fake class: `fake_label: <name or index>` (add --fake-label)")
        return None
    report.fake_index, report.fake_name = index, labels.get(index)
    how = f"fake_label {fake_label!r}" if fake_label is not None else "its id2label"
    report.add("labels", True, f"fake = index {index} ({labels.get(index, '?')!r}) from {how} {labels}")
    return index


def _check_head(report, specialist: Specialist, layout: ModelLayout) -> None:
    weight_name = next(n for n in layout.head_names if n.endswith("weight"))
    if specialist.checkpoint is not None and not specialist.checkpoint.has(weight_name):
        report.add("head", False, f"no classifier ({weight_name}) in the checkpoint",
                   "save the full *ForImageClassification model with its binary head")
        return
    try:
        weight, _ = specialist.head(layout, torch.float32)
    except R2MError as exc:
        report.add("head", False, str(exc), "a specialist is a binary real/fake classifier with a 2-row head")
        return
    report.add("head", True, f"2 classes over {weight.shape[1]} features")


def _check_adapter(report, source, base_source, base_config, who, fake_label, allow_pickle) -> None:
    layout = _base_layout(base_config)
    try:
        adapter = LoraAdapter(source.path, layout, who, allow_pickle=allow_pickle)
    except R2MError as exc:
        fix = f"use a LoRA adapter trained on the base ({base_config.model_type})"
        report.add("architecture", False, str(exc), fix)
        report.skip("shapes", "base", "labels", "head", "adapter targets")
        return
    report.add("architecture", True, f"adapter modules land on {layout.model_class} ({base_config.model_type})")

    bad = _adapter_shape_error(adapter, layout)
    if bad:
        report.add("shapes", False, bad, "the adapter belongs to another base; check --base or retrain it on this one")
    else:
        report.add("shapes", True, f"{len(adapter.targets)} LoRA pairs fit the base's matrices")

    _check_adapter_base_match(report, source, base_source, layout, who, allow_pickle)
    index = _check_labels(report, _adapter_labels(source, base_config), fake_label, who)
    specialist = Specialist(name=who, source=source, weight=1.0, adapter=adapter, fake_index=index or 1)
    _check_head(report, specialist, layout)
    _check_adapter_naming(report, adapter)


def _adapter_shape_error(adapter: LoraAdapter, layout: ModelLayout) -> str | None:
    for name, entry in adapter.targets.items():
        a, b = adapter.files.shape(entry["A"]), adapter.files.shape(entry["B"])
        expected = tuple(layout.shapes[name])
        out_in = (b[0], int(torch.tensor(a[1:]).prod()))
        if adapter.fan_in_fan_out:
            out_in = out_in[::-1]
        if len(expected) < 2 or out_in != (expected[0], int(torch.tensor(expected[1:]).prod())):
            return f"LoRA pair of {name} gives a {out_in[0]}×{out_in[1]} delta, the base's tensor is {list(expected)}"
    return None


def _check_adapter_base_match(report, source, base_source, layout, who, allow_pickle) -> None:
    declared = (source.read_json("adapter_config.json") or {}).get("base_model_name_or_path")
    if not declared:
        report.add("base", True, "adapter_config.json names no base; the given base is assumed")
        return
    notes: list[str] = []
    try:
        _check_adapter_base(source, base_source, who, notes)
    except R2MError as exc:
        report.add("base", False, str(exc), f"check with --base {declared}, or retrain the adapter on the base")
        return
    local = Path(declared).expanduser()
    if base_source.repo_id and declared.rstrip("/") == base_source.repo_id:
        report.add("base", True, f"adapter_config.json names the base ({declared})")
        return
    if not local.is_dir():
        report.add("base", True, f"adapter_config.json names {declared}; cannot verify that it is the given base")
        return
    if local.resolve() == base_source.path:
        report.add("base", True, f"adapter_config.json names the base ({declared})")
        return
    try:  # another local folder: the adapter's own base must hold the same weights as the given one
        own = Checkpoint(local, layout, f"adapter base {declared}", allow_pickle=allow_pickle)
        own.check_covers(layout.backbone_names, layout, "the merge")
        given = Checkpoint(base_source.path, layout, "base", allow_pickle=allow_pickle)
        differing = [n for n in layout.backbone_names if not torch.allclose(own.get(n).float(), given.get(n).float())]
    except R2MError as exc:
        differing, reason = ["?"], str(exc)
    else:
        reason = f"{len(differing)} of its backbone tensors differ from the given base's"
    if differing:
        report.add("base", False, f"adapter was trained on base {declared}: {reason}",
                   f"check with --base {declared}, or retrain the adapter on the given base")
    else:
        report.add("base", True, f"adapter_config.json names {declared}, whose weights equal the given base's")


def _check_adapter_naming(report, adapter: LoraAdapter) -> None:
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
        entry["fake_label"] = int(fake_label) if str(fake_label).isdigit() else fake_label
    display = ModelEntry(**entry).display_name()
    if display in config.names():
        raise ConfigError(f"{config_path}: a model named {display!r} is already in the recipe; pass --name")
    report = check_specialist(
        reference, config.base_model, fake_label=fake_label, base_dir=config_path.parent, allow_pickle=allow_pickle
    )
    if not report.ok:
        return AddResult(report, display, entry, comments_kept=True, written=False)
    text = config_path.read_text(encoding="utf-8")
    new_text, kept = _append_entry(text, entry)
    try:
        checked = parse_config(yaml.safe_load(new_text), str(config_path))
    except (R2MError, yaml.YAMLError):
        checked = None
    if checked is None or checked.names() != [*config.names(), display]:
        data = yaml.safe_load(text)
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
    last = max((i for i in range(start + 1, end) if lines[i].strip() and not lines[i].lstrip().startswith("#")),
               default=start)
    dumped = yaml.safe_dump([entry], sort_keys=False, allow_unicode=True).splitlines()
    block = [" " * indent + line for line in dumped]
    new = lines[: last + 1] + block + lines[last + 1 :]
    return "\n".join(new) + "\n", True


__all__ = ["AddResult", "Check", "SpecialistReport", "add_specialist", "check_specialist"]
