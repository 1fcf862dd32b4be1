"""DeepfakeBench checkpoints in: a weights-only load, the naming variants seen in the wild, and the checks that a file
is a CLIP (or Effort) detector of the given backbone's size.

DeepfakeBench saves its detectors' ``state_dict()`` flat: ``backbone.<CLIP vision tower key>`` and
``head.{weight,bias}`` (a 2-way ``nn.Linear``, real = 0, fake = 1). Files in the wild add a DDP ``module.`` prefix,
a ``{"state_dict": ...}`` (or ``{"model": ...}``) wrapper, DF40's older names (``base_model.`` for ``backbone.``,
``classifier.`` for ``head.``), ``embeddings.position_ids`` from transformers < 4.31 and ``loss_func.*`` buffers; the
Effort detector stores each attention projection as ``weight_main`` plus ``U_residual · diag(S_residual) · V_residual``.
:func:`load_dfb_state_dict` maps all of them onto DeepfakeBench's own names, folding Effort's factors when a tensor is
read.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError, SourceError
from .modeling_deepfakebench_clip import DeepfakeBenchCLIPConfig, DeepfakeBenchCLIPForImageClassification

BACKBONE, HEAD = "backbone.", "head."
HF_BACKBONE, HF_HEAD = "vision_model.", "classifier."
EFFORT_PARTS = ("weight_main", "U_residual", "S_residual", "V_residual")
WRAPPER_KEYS = ("state_dict", "model")
SHOWN = 5  # how many names an error lists


def to_hf_name(name: str) -> str:
    """DeepfakeBench name → transformers name: ``backbone.X`` → ``vision_model.X``, ``head.*`` → ``classifier.*``."""
    if name.startswith(BACKBONE):
        return HF_BACKBONE + name[len(BACKBONE) :]
    if name.startswith(HEAD):
        return HF_HEAD + name[len(HEAD) :]
    raise KeyError(name)


def to_dfb_name(name: str) -> str:
    """Transformers name → DeepfakeBench's (the inverse of :func:`to_hf_name`)."""
    if name.startswith(HF_BACKBONE):
        return BACKBONE + name[len(HF_BACKBONE) :]
    if name.startswith(HF_HEAD):
        return HEAD + name[len(HF_HEAD) :]
    raise KeyError(name)


def expected_shapes(config: DeepfakeBenchCLIPConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor of a DeepfakeBench detector of this size, DeepfakeBench-named, in the model's order."""
    with torch.device("meta"):
        model = DeepfakeBenchCLIPForImageClassification(config)
    return {to_dfb_name(name): tuple(t.shape) for name, t in model.state_dict().items()}


def _list_names(names: list[str]) -> str:
    shown = ", ".join(names[:SHOWN])
    return shown + (f", ... ({len(names) - SHOWN} more)" if len(names) > SHOWN else "")


# ---------------------------------------------------------------------------------------------------- loading
def _refusal(path: Path, exc: Exception) -> str:
    """One line saying what a weights-only load refused, without torch's advice to disable the check."""
    text = str(exc)
    match = re.search(r"GLOBAL ([\w.]+)", text)
    if match:
        what = f"it asks to call {match[1]}"
    else:
        parts = [p.strip() for p in text.split("\n\n") if p.strip()]
        useful = [p for p in parts if not p.startswith(("Weights only load failed", "Check the documentation"))]
        what = useful[0].splitlines()[-1] if useful else "it holds objects other than tensors"
    return (
        f"{path}: refused: {what}; a checkpoint may only hold tensors (the pickle was not run). Re-save it as a "
        "plain state_dict where it was trained, or get it from a source you trust"
    )


def _torch_load(path: Path, map_location: Any) -> Any:
    if not path.is_file():
        raise SourceError(f"{path}: no such checkpoint file")
    # Files written by torch >= 1.6 are zip archives and can be memory-mapped; older ones are still loaded weights-only.
    mmap = zipfile.is_zipfile(path)
    if not mmap:
        with open(path, "rb") as handle:
            if handle.read(1) != b"\x80":  # the PROTO opcode every torch pickle starts with
                raise CheckpointError(f"{path}: not a torch checkpoint (neither a zip archive nor a pickle)")
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        if "Weights only load failed" in str(exc):
            raise CheckpointError(_refusal(path, exc)) from None
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({exc}); re-download it") from None
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({first}); re-download it") from None


def _unwrap(obj: Any, path: Path) -> Mapping[str, torch.Tensor]:
    """The flat state_dict inside a ``{"state_dict": ...}`` / ``{"model": ...}`` wrapper (or the object itself)."""
    for _ in range(2):
        if not isinstance(obj, Mapping) or all(isinstance(v, torch.Tensor) for v in obj.values()):
            break
        inner = next((obj[k] for k in WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: holds a {type(obj).__name__}, not a state_dict of tensors")
    other = [str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if other:
        raise CheckpointError(f"{path}: {len(other)} entr(ies) are not tensors: {_list_names(other)}")
    return obj


def dfb_name(key: str) -> str | None:
    """A checkpoint key under DeepfakeBench's current names, or None for a key DeepfakeBench never loads
    (``embeddings.position_ids``, ``loss_func.*``)."""
    while key.startswith("module."):  # DDP (and DataParallel inside DDP)
        key = key[len("module.") :]
    if key.startswith("base_model."):  # DF40's older names
        key = BACKBONE + key[len("base_model.") :]
    elif key.startswith("classifier."):
        key = HEAD + key[len("classifier.") :]
    if key.endswith("embeddings.position_ids") or key.startswith("loss_func."):
        return None
    return key


class MappedFileReader:
    """Reads the tensors of a memory-mapped checkpoint with ``pread`` from the file, at the offset their mapping
    gives (``/proc/self/maps``), so the mapping's pages never become resident: reading every tensor of a 1.2 GB file
    then holds one tensor in memory, not the file. Tensors that are not in this file's mapping (another OS, a
    ``map_location`` that copied them) are returned as they are.

    Args:
        path (`Path`): the memory-mapped file.
    """

    def __init__(self, path: Path):
        self.regions: list[tuple[int, int, int]] = []  # (start address, end address, file offset)
        try:
            maps = Path("/proc/self/maps").read_text().splitlines()
        except OSError:
            maps = []
        target = str(path.resolve())
        for line in maps:
            fields = line.split(maxsplit=5)
            if len(fields) == 6 and fields[5] == target:
                start, end = (int(x, 16) for x in fields[0].split("-"))
                self.regions.append((start, end, int(fields[2], 16)))
        self.path = path

    def read(self, tensor: torch.Tensor) -> torch.Tensor:
        address, size = tensor.data_ptr(), tensor.nbytes
        if not size or tensor.device.type != "cpu" or not tensor.is_contiguous():
            return tensor
        region = next((r for r in self.regions if r[0] <= address and address + size <= r[1]), None)
        if region is None:
            return tensor
        buffer = bytearray(size)
        with open(self.path, "rb", buffering=0) as handle:
            handle.seek(region[2] + address - region[0])
            if handle.readinto(buffer) != size:
                raise CheckpointError(f"{self.path}: ends early; re-download it")
        return torch.frombuffer(buffer, dtype=tensor.dtype).reshape(tensor.shape)


class DFBStateDict(Mapping):
    """The tensors of a DeepfakeBench checkpoint under DeepfakeBench's names; Effort's factors are folded into
    ``weight = weight_main + U_residual @ diag(S_residual) @ V_residual`` when a weight is read, so only one folded
    weight is in memory at a time.

    Args:
        path (`Path`): the checkpoint file (for messages).
        raw (`Mapping[str, torch.Tensor]`): the file's tensors (memory-mapped).
    """

    def __init__(self, path: Path, raw: Mapping[str, torch.Tensor]):
        self.path = path
        self._raw = raw
        self._reader = MappedFileReader(path)
        self.sources: dict[str, tuple[str, ...]] = {}  # name → raw keys (one, or Effort's main, U, S, V)
        self.dropped: list[str] = []
        effort: dict[str, dict[str, str]] = {}
        for key in raw:
            name = dfb_name(key)
            if name is None:
                self.dropped.append(key)
                continue
            module, _, part = name.rpartition(".")
            if part in EFFORT_PARTS:
                effort.setdefault(module, {})[part] = key
            else:
                self._add(name, (key,))
        for module, parts in effort.items():
            if "weight_main" not in parts or len(parts) not in (1, 4):
                present = ", ".join(sorted(parts))
                raise CheckpointError(
                    f"{path}: incomplete Effort factors for {module} (has {present}; needs weight_main, and "
                    "U_residual, S_residual, V_residual together)"
                )
            keys = tuple(parts[p] for p in EFFORT_PARTS if p in parts)
            if len(keys) == 4:
                main, u, s, v = (tuple(raw[k].shape) for k in keys)
                if len(main) != 2 or len(s) != 1 or u != (main[0], s[0]) or v != (s[0], main[1]):
                    raise CheckpointError(
                        f"{path}: Effort factors of {module} (U {list(u)}, S {list(s)}, V {list(v)}) do not fit its "
                        f"weight_main {list(main)}"
                    )
            self._add(f"{module}.weight", keys)
        self.is_effort = bool(effort)

    def _add(self, name: str, keys: tuple[str, ...]) -> None:
        if name in self.sources:
            raise CheckpointError(f"{self.path}: keys {self.sources[name][0]} and {keys[0]} are both {name}")
        self.sources[name] = keys

    def __getitem__(self, name: str) -> torch.Tensor:
        keys = self.sources[name]
        if len(keys) == 1:
            return self._reader.read(self._raw[keys[0]])
        main, u, s, v = (self._reader.read(self._raw[k]) for k in keys)
        # The order of operations of Effort's SVDResidualLinear, in the stored dtype.
        return main + u @ torch.diag(s) @ v

    def shape(self, name: str) -> tuple[int, ...]:
        """A tensor's shape without reading (or folding) it."""
        return tuple(self._raw[self.sources[name][0]].shape)

    def dtypes(self) -> set[torch.dtype]:
        return {self._raw[keys[0]].dtype for keys in self.sources.values()}

    def __iter__(self) -> Iterator[str]:
        return iter(self.sources)

    def __len__(self) -> int:
        return len(self.sources)


def load_dfb_state_dict(path: str | Path, *, map_location: Any = "cpu") -> DFBStateDict:
    """Load a DeepfakeBench detector checkpoint safely and under DeepfakeBench's current names.

    Only tensors are accepted (``torch.load(..., weights_only=True, mmap=True)``): a pickle that would run code or
    build other objects is refused without being run. Wrappers, the ``module.`` prefix and DF40's older names are
    undone, ``position_ids`` and ``loss_func.*`` dropped, Effort's factors folded (lazily).

    Args:
        path (`str` or `Path`): the ``.pth`` file.
        map_location (`str` or `torch.device`): where the tensors go (``cpu``: memory-mapped, read on demand).

    Returns:
        `DFBStateDict`: a read-only mapping ``backbone.*`` / ``head.*`` → tensor.

    Raises:
        `SourceError`: no such file.
        `CheckpointError`: not a torch checkpoint, refused content, non-tensor entries, broken Effort factors.
    """
    path = Path(path)
    return DFBStateDict(path, _unwrap(_torch_load(path, map_location), path))


# ----------------------------------------------------------------------------------------------------- checks
def _template(name: str) -> str:
    return re.sub(r"\.\d+\.", ".N.", name)


def _sizes(shapes: Mapping[str, tuple[int, ...]]) -> dict[str, int | None]:
    """The tower's sizes as far as these tensors show them."""
    layers = {int(m[1]) for n in shapes if (m := re.match(r"backbone\.encoder\.layers\.(\d+)\.", n))}
    hidden = shapes.get("backbone.embeddings.class_embedding", shapes.get("head.weight", (None, None)))[-1]
    patch = shapes.get("backbone.embeddings.patch_embedding.weight", (None,))[-1]
    positions = shapes.get("backbone.embeddings.position_embedding.weight", (None,))[0]
    mlp = shapes.get("backbone.encoder.layers.0.mlp.fc1.weight", (None,))[0]
    return {"hidden": hidden, "layers": max(layers) + 1 if layers else None, "MLP": mlp, "patch": patch,
            "positions": positions}  # fmt: skip


def _describe(sizes: Mapping[str, int | None]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sizes.items() if v is not None)


def check_dfb_state_dict(state: DFBStateDict, config: DeepfakeBenchCLIPConfig, *, backbone: str) -> None:
    """Check that a checkpoint is a DeepfakeBench CLIP/Effort detector of `config`'s size, with a 2-way head.

    Args:
        state (`DFBStateDict`): from :func:`load_dfb_state_dict`.
        config (`DeepfakeBenchCLIPConfig`): the backbone's sizes.
        backbone (`str`): how messages name the backbone (``--backbone``).

    Raises:
        `CheckpointError`: unknown keys, no head, a head that is not 2-way, another backbone size, missing keys.
    """
    path = state.path
    expected = expected_shapes(config)
    shapes = {name: state.shape(name) for name in state}
    templates = {_template(n) for n in expected}
    unknown = [n for n in shapes if _template(n) not in templates]
    if unknown:
        raise CheckpointError(
            f"{path}: {len(unknown)} unknown key(s): {_list_names(unknown)}; not a DeepfakeBench CLIP or Effort "
            "detector (expected backbone.* and head.*)"
        )
    if "head.weight" not in shapes:
        raise CheckpointError(f"{path}: no classifier head (head.weight); a DeepfakeBench detector has a 2-way head")
    classes = shapes["head.weight"][0]
    if classes != 2:
        raise CheckpointError(
            f"{path}: head has {classes} classes; only 2-way real/fake detectors (real = 0, fake = 1) can be converted"
        )
    found, wanted = _sizes(shapes), _sizes(expected)
    if any(found[k] is not None and found[k] != wanted[k] for k in found):
        raise CheckpointError(
            f"{path}: the checkpoint's backbone ({_describe(found)}) does not match --backbone {backbone} "
            f"({_describe(wanted)}); give the CLIP it was trained from"
        )
    missing = [n for n in expected if n not in shapes]
    if missing:
        raise CheckpointError(f"{path}: {len(missing)} key(s) missing: {_list_names(missing)}; the file is incomplete")
    wrong = [n for n in expected if shapes[n] != expected[n]]
    if wrong:
        name = wrong[0]
        raise CheckpointError(
            f"{path}: tensor {name} has shape {list(shapes[name])}, expected {list(expected[name])} for --backbone "
            f"{backbone}"
        )
