"""DeepfakeBench checkpoints → transformers model folders that compute what DeepfakeBench computed.

A folder holds the weights (safetensors, streamed from the memory-mapped checkpoint one tensor at a time), a
``config.json`` whose ``auto_map`` points at the copied ``modeling_deepfakebench_clip.py``, DeepfakeBench's
preprocessing as a ``preprocessor_config.json`` and a short model card. The backbone (a CLIP folder or Hub repo id)
gives the tower's sizes, against which the checkpoint is checked. :func:`materialize_dfb` converts a file once into a
cache keyed by its SHA-256, so that a recipe's ``dfb:`` entry is an ordinary full specialist.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import torch

from ..errors import CheckpointError, ConfigError, SourceError, clip
from ..writer import DEFAULT_MAX_SHARD_BYTES, OutputFolder, StreamingSafetensorsWriter
from .modeling_deepfakebench_clip import MODEL_TYPE, DeepfakeBenchCLIPConfig
from .state_dict import check_dfb_state_dict, expected_shapes, load_dfb_state_dict, to_hf_name

MODELING_FILE = Path(__file__).with_name("modeling_deepfakebench_clip.py")
AUTO_MAP = {
    "AutoConfig": f"{MODELING_FILE.stem}.DeepfakeBenchCLIPConfig",
    "AutoModelForImageClassification": f"{MODELING_FILE.stem}.DeepfakeBenchCLIPForImageClassification",
}
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# The normalisation of each detector's DeepfakeBench config (clip.yaml: 0.5; effort.yaml: CLIP's own statistics).
NORMALISATION = {"clip": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)), "effort": (CLIP_MEAN, CLIP_STD)}
VISION_FIELDS = (
    "hidden_size", "intermediate_size", "projection_dim", "num_hidden_layers", "num_attention_heads", "num_channels",
    "image_size", "patch_size", "hidden_act", "layer_norm_eps", "attention_dropout", "initializer_range",
    "initializer_factor",
)  # fmt: skip
FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
MAX_HUB_FILE = 1024  # owner/repo/path/in/repo.pth[@revision]
HUB_FILE = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)/(?P<file>[^@]+?)(?:@(?P<revision>[\w./-]+))?$")


def _check_variant(variant: str) -> None:
    if variant not in NORMALISATION:
        raise ConfigError(f"variant {variant!r}: expected one of {', '.join(NORMALISATION)}")


def resolve_backbone(backbone: str | Path) -> Path:
    """The folder of a CLIP backbone: a local folder, or a Hub repo id (``repo`` or ``repo@revision``) of which only
    ``config.json`` is downloaded.

    Raises:
        `SourceError`: no such folder and not a Hub repo id; `HubError`: the download failed.
    """
    folder = Path(backbone).expanduser()
    if folder.is_dir():
        return folder.resolve()
    from ..config import SourceSpec
    from ..hub import download_snapshot
    from ..sources import REPO_ID

    spec = SourceSpec.parse(str(backbone))
    if folder.exists() or not REPO_ID.match(spec.reference) or "/" not in spec.reference:
        raise SourceError(f"--backbone {backbone}: not a CLIP model folder nor a Hub repo id")
    return Path(download_snapshot(spec.reference, spec.revision, allow_patterns=["config.json"]))


def backbone_config(backbone: str | Path, *, variant: str = "clip") -> DeepfakeBenchCLIPConfig:
    """The detector's config: the vision tower sizes of a CLIP backbone (``CLIPModel``, ``CLIPVisionModel`` or an
    already converted folder), with labels real = 0, fake = 1.

    Args:
        backbone (`str` or `Path`): folder or Hub repo id of the pretrained CLIP.
        variant (`str`): ``clip`` or ``effort`` (recorded as the config's ``detector``).

    Raises:
        `SourceError`: no readable ``config.json``; `ConfigError`: not a CLIP model.
    """
    _check_variant(variant)
    file = resolve_backbone(backbone) / "config.json"
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SourceError(f"{file}: cannot read the backbone's config ({exc})") from None
    config = vision_config(data, variant=variant, where=str(file))
    if config is None:
        raise ConfigError(
            f"--backbone {backbone}: model_type {data.get('model_type')!r} is not CLIP; give the CLIP the detector was "
            "trained from (e.g. openai/clip-vit-large-patch14)"
        )
    return config


def vision_config(data: dict, *, variant: str = "clip", where: str = "config.json") -> DeepfakeBenchCLIPConfig | None:
    """The detector config of a CLIP ``config.json`` (``clip``, ``clip_vision_model`` or ours), else None.

    Raises:
        `CheckpointError`: a CLIP config whose sizes transformers refuses (`where` names it).
    """
    model_type = data.get("model_type") if isinstance(data, dict) else None
    if model_type == "clip":
        data = data.get("vision_config") or {}
    elif model_type not in ("clip_vision_model", MODEL_TYPE):
        return None
    try:
        return DeepfakeBenchCLIPConfig(detector=variant, **{k: data[k] for k in VISION_FIELDS if k in data})
    except Exception as exc:  # transformers' validators raise ValueError, TypeError or huggingface_hub's own errors
        message = " ".join(str(exc).split())[:300]
        raise CheckpointError(f"{where}: not a valid CLIP vision config ({message})") from None


def _sizes(config: DeepfakeBenchCLIPConfig) -> dict:
    return {k: getattr(config, k) for k in VISION_FIELDS}


def processor_config(config: DeepfakeBenchCLIPConfig, *, variant: str = "clip") -> dict:
    """DeepfakeBench's test-time preprocessing as a ``CLIPImageProcessor`` config: RGB, bicubic resize of the whole
    image to the tower's size (no centre crop), /255, normalised with the detector's mean and std."""
    _check_variant(variant)
    mean, std = NORMALISATION[variant]
    side = config.image_size if isinstance(config.image_size, int) else config.image_size[0]
    return {
        "image_processor_type": "CLIPImageProcessor",
        "do_convert_rgb": True,
        "do_resize": True,
        "size": {"height": side, "width": side},
        "resample": 3,  # PIL.Image.BICUBIC
        "do_center_crop": False,
        "crop_size": {"height": side, "width": side},
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": list(mean),
        "image_std": list(std),
    }


def write_remote_code(folder: str | Path) -> list[str]:
    """Copy the model class's file into a model folder (its ``config.json`` ``auto_map`` points at it).

    Returns:
        `list[str]`: the names of the files written.
    """
    shutil.copyfile(MODELING_FILE, Path(folder) / MODELING_FILE.name)
    return [MODELING_FILE.name]


MODEL_CLASS_NOTE = (
    "**Model class: `DeepfakeBenchCLIPForImageClassification`** (`modeling_deepfakebench_clip.py`, shipped in this "
    "folder), not transformers' stock `CLIPForImageClassification`. Its logits are DeepfakeBench's: the linear head on "
    "the CLS token after CLIP's `post_layernorm`; real = 0, fake = 1, fake probability `softmax(logits)[:, 1]` (the "
    "stock class averages the patch tokens and would compute something else). Load it with `trust_remote_code=True`, "
    "or `import r2m_hf.deepfakebench` first, which registers the class with transformers' Auto classes."
)


def _card(checkpoint: Path, sha256: str, backbone: str, variant: str, config, dropped: list[str]) -> str:
    mean, std = NORMALISATION[variant]
    side = config.image_size if isinstance(config.image_size, int) else config.image_size[0]
    front = ["library_name: transformers", "pipeline_tag: image-classification"]
    front += ["tags: [deepfake-detection, deepfakebench, r2m-hf]"]
    front += [f"base_model: {backbone}"] * (not Path(backbone).expanduser().exists())
    origin = (
        f"Converted by r2m-hf from the DeepfakeBench checkpoint `{checkpoint.name}` (SHA-256 `{sha256}`) on the vision "
        f"tower of `{backbone}` (hidden {config.hidden_size}, {config.num_hidden_layers} layers, patch "
        f"{config.patch_size})."
    )
    if variant == "effort":
        origin += (
            " Effort's attention projections, stored as `weight_main + U_residual · diag(S_residual) · V_residual`, "
            "were folded into one weight each (the sum Effort computes in its forward)."
        )
    if dropped:
        origin += f" Keys DeepfakeBench never loads were dropped: {', '.join(dropped[:5])}."
    preprocessing = (
        f"**Preprocessing** (`preprocessor_config.json`): RGB, bicubic resize to {side}×{side} (no centre crop), /255, "
        f"mean {list(mean)}, std {list(std)}. DeepfakeBench resizes with OpenCV's bicubic, this processor with PIL's "
        "(they differ slightly when shrinking). Feed face crops made as DeepfakeBench made them: dlib face, 5-landmark "
        "alignment to the ArcFace template, 1.3 margin, 256 px."
    )
    usage = (
        "```python\nfrom transformers import pipeline\n\n"
        'detector = pipeline("image-classification", model="path/to/this/folder", trust_remote_code=True)\n'
        'detector("face.png")  # [{"label": "fake", "score": ...}, {"label": "real", "score": ...}]\n```'
    )
    export = (
        "`r2m-hf export-dfb` writes a merge of such models back as a DeepfakeBench checkpoint (`backbone.*`, `head.*`)."
    )
    title = f"# A DeepfakeBench {'Effort' if variant == 'effort' else 'CLIP'} detector"
    sections = ["---\n" + "\n".join(front) + "\n---", title, origin, MODEL_CLASS_NOTE, preprocessing, usage, export]
    return "\n\n".join(sections) + "\n"


def convert_dfb(
    checkpoint: str | Path,
    output_dir: str | Path,
    *,
    backbone: str | Path,
    variant: str = "clip",
    overwrite: bool = False,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
) -> Path:
    """Convert a DeepfakeBench CLIP or Effort detector checkpoint into a transformers model folder.

    Tensors are read from the memory-mapped file and written one at a time, so memory stays at about one tensor
    beyond the mapped file's pages. Nothing is written unless the whole conversion succeeds.

    Args:
        checkpoint (`str` or `Path`): the ``.pth`` file (any variant :func:`load_dfb_state_dict` reads).
        output_dir (`str` or `Path`): the folder to create.
        backbone (`str` or `Path`): folder or Hub repo id of the CLIP the detector was trained from.
        variant (`str`): ``clip`` (normalisation 0.5/0.5) or ``effort`` (folded factors, CLIP's normalisation).
        overwrite (`bool`): replace an existing non-empty folder.
        max_shard_bytes (`int`): shard the weights above this size.

    Returns:
        `Path`: the output folder.

    Raises:
        `CheckpointError`: refused or unreadable file, unknown or missing keys, no 2-way head, another backbone size,
        Effort factors with ``variant="clip"`` (or none with ``"effort"``); `OutputError`: the folder exists.
    """
    checkpoint = Path(checkpoint)
    config = backbone_config(backbone, variant=variant)
    options = dict(backbone=str(backbone), variant=variant, overwrite=overwrite, max_shard_bytes=max_shard_bytes)
    return _convert(checkpoint, output_dir, config, **options)


def _convert(
    checkpoint: Path,
    output_dir: str | Path,
    config: DeepfakeBenchCLIPConfig,
    *,
    backbone: str,
    variant: str,
    overwrite: bool,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    sha256: str | None = None,
) -> Path:
    """:func:`convert_dfb` once the backbone's config (and maybe the file's SHA-256, for the card) is known."""
    from ..sources import sha256_file

    state = load_dfb_state_dict(checkpoint)
    if state.is_effort and variant != "effort":
        raise CheckpointError(
            f"{checkpoint}: holds Effort factors (weight_main, U/S/V_residual): convert it with variant 'effort', "
            "which also sets Effort's normalisation"
        )
    if variant == "effort" and not state.is_effort:
        raise CheckpointError(f"{checkpoint}: has no Effort factors (weight_main); convert it with variant 'clip'")
    check_dfb_state_dict(state, config, backbone=backbone)
    dtypes = state.dtypes()
    dtype = dtypes.pop() if len(dtypes) == 1 and next(iter(dtypes)) in FLOAT_DTYPES else torch.float32
    shapes = {to_hf_name(name): shape for name, shape in expected_shapes(config).items()}

    # `overwrite` replaces only a folder this module wrote (it holds the model class's file), never the input.
    with OutputFolder(output_dir, overwrite=overwrite, inputs=[checkpoint], markers=(MODELING_FILE.name,)) as output:
        writer = StreamingSafetensorsWriter(output.tmp, shapes, dtype, max_shard_bytes)
        try:
            for name in expected_shapes(config):
                writer.add(to_hf_name(name), state[name])
            writer.close()
        except BaseException:
            writer.abort()
            raise
        config.architectures = ["DeepfakeBenchCLIPForImageClassification"]
        config.auto_map = dict(AUTO_MAP)
        config.dtype = str(dtype).removeprefix("torch.")
        config.save_pretrained(output.tmp)
        write_remote_code(output.tmp)
        processor = processor_config(config, variant=variant)
        (output.tmp / "preprocessor_config.json").write_text(json.dumps(processor, indent=2) + "\n")
        card = _card(checkpoint, sha256 or sha256_file(checkpoint), backbone, variant, config, state.dropped)
        (output.tmp / "README.md").write_text(card, encoding="utf-8")
        return output.commit()


def resolve_dfb_file(reference: str | Path, *, base_dir: Path | None = None) -> Path:
    """A checkpoint reference → a local file: a path (tried against `base_dir` first), or a file in a Hub repo written
    ``owner/repo/path/in/repo.pth[@revision]``.

    Raises:
        `SourceError`: neither a file nor a Hub file reference; `HubError`: the download failed.
    """
    text = str(reference)
    shown = clip(f"dfb:{text}")
    try:
        candidates = [Path(text).expanduser()]
        if base_dir is not None and not Path(text).is_absolute():
            candidates.insert(0, Path(base_dir) / text)
        for candidate in candidates:
            if candidate.is_file():
                return candidate.resolve()
    except (OSError, ValueError) as exc:  # a name too long for the filesystem, a NUL byte, a loop of symlinks
        raise SourceError(f"{shown}: not a usable path ({clip(str(exc))})") from None
    match = HUB_FILE.match(text)
    if match is None or text.startswith((".", "/", "~")) or len(text) > MAX_HUB_FILE:
        raise SourceError(f"{shown}: no such checkpoint file, and not a Hub file (owner/repo/file.pth[@revision])")
    from ..hub import download_snapshot

    folder = download_snapshot(match["repo"], match["revision"], allow_patterns=[match["file"]])
    file = Path(folder) / match["file"]
    if not file.is_file():
        raise SourceError(f"{shown}: {clip(match['file'])} is not in the Hub repo {match['repo']}")
    return file


def default_cache_dir() -> Path:
    """``$R2M_HF_DFB_CACHE``, else ``~/.cache/r2m_hf/deepfakebench``."""
    return Path(os.environ.get("R2M_HF_DFB_CACHE") or Path.home() / ".cache" / "r2m_hf" / "deepfakebench")


def materialize_dfb(
    path: str | Path,
    *,
    backbone: str | Path,
    variant: str = "clip",
    cache_dir: str | Path | None = None,
    base_dir: Path | None = None,
) -> Path:
    """The converted folder of a DeepfakeBench checkpoint, converted on first use into a cache keyed by the file's
    SHA-256 and the variant (a recipe's ``model: dfb:...`` entry).

    Args:
        path (`str` or `Path`): the ``.pth`` file, or ``owner/repo/file.pth[@revision]`` on the Hub.
        backbone (`str` or `Path`): folder or Hub repo id of the CLIP it was trained from.
        variant (`str`): ``clip`` or ``effort``.
        cache_dir (`str` or `Path`, *optional*): defaults to :func:`default_cache_dir`.
        base_dir (`Path`, *optional*): the recipe's folder, against which a relative path is tried first.

    Returns:
        `Path`: the model folder (as :func:`convert_dfb` writes it).
    """
    from ..sources import sha256_file

    _check_variant(variant)
    file = resolve_dfb_file(path, base_dir=base_dir)
    digest = sha256_file(file)
    folder = Path(cache_dir or default_cache_dir()) / f"{digest}-{variant}"
    config = backbone_config(backbone, variant=variant)
    if (folder / "config.json").is_file():
        try:
            cached = vision_config(json.loads((folder / "config.json").read_text(encoding="utf-8")), variant=variant)
        except (OSError, ValueError, CheckpointError):  # a damaged cache entry is converted again
            cached = None
        if cached is not None and _sizes(cached) == _sizes(config):
            return folder
    return _convert(file, folder, config, backbone=str(backbone), variant=variant, overwrite=True, sha256=digest)
