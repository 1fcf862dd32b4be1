"""Decision thresholds: choose one from scored data, store it in the model's config.json, read it back.

A merged head ranks well (AUC) but is not calibrated: 0.5 is an arbitrary cut. `choose_threshold` picks the cut
from fake probabilities of labelled images — at a target false-positive rate on the real ones (which needs only
real images: the *real-only* mode), at the equal-error rate, or at maximal accuracy. `calibrate` writes the result
under the namespaced key ``"r2m_hf": {"threshold": {...}}`` of the model's config.json (an atomic rewrite that keeps
every other key), where `Detector` finds it. A sample is called fake when its probability is ``>= threshold``.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, OutputError, SourceError

CONFIG_KEY = "r2m_hf"
METHODS = ("target-fpr", "eer", "max-accuracy")


@dataclass(frozen=True)
class Calibration:
    """A decision threshold and how it was chosen.

    Attributes:
        value (`float`): the threshold; fake when ``P(fake) >= value``.
        method (`str`): ``"target-fpr"``, ``"eer"`` or ``"max-accuracy"``.
        target_fpr (`float`, *optional*): the false-positive rate asked for (``target-fpr`` only).
        dataset (`str`, *optional*), split (`str`, *optional*): the data it was chosen on.
        n_real (`int`), n_fake (`int`): how many images of each class.
        achieved_fpr (`float`): the share of those real images called fake at `value`.
        achieved_tpr (`float`, *optional*): the share of fake images called fake (None without fakes).
        accuracy (`float`, *optional*): accuracy at `value` on those images (None without fakes).
        statement (`str`): one sentence saying what the threshold means, for the card and the CLI.
    """

    value: float
    method: str
    target_fpr: float | None
    dataset: str | None
    split: str | None
    n_real: int
    n_fake: int
    achieved_fpr: float
    achieved_tpr: float | None
    accuracy: float | None
    statement: str
    n_unscored: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def card_rows(self) -> list[tuple[str, str]]:
        """The threshold's table as (name, value) rows: its value, how it was chosen and what it achieved there."""
        data = f"{self.dataset} ({self.split})" if self.dataset and self.split else self.dataset or "unnamed data"
        how = f"target false-positive rate {self.target_fpr:.1%}" if self.method == "target-fpr" else self.method
        rows = [
            ("Threshold (fake when P(fake) ≥ it)", f"{self.value:.4g}"),
            ("Chosen by", how),
            ("Calibration data", f"{data}: {self.n_real} real, {self.n_fake} fake images"),
            ("False-positive rate there", f"{self.achieved_fpr:.1%}"),
        ]
        if self.achieved_tpr is not None:
            rows.append(("True-positive rate there", f"{self.achieved_tpr:.1%}"))
        if self.accuracy is not None:
            rows.append(("Accuracy there", f"{self.accuracy:.1%}"))
        if self.n_unscored:
            rows.append(("Images left out (no face or unreadable)", str(self.n_unscored)))
        return rows

    def to_markdown(self) -> str:
        """A model-card section: the threshold, how it was chosen, and what it means."""
        table = "\n".join(f"| {name} | {value} |" for name, value in self.card_rows())
        return f"## Decision threshold\n\n{self.statement}\n\n| | |\n|---|---|\n{table}\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibration:
        value = data.get("value")
        # a threshold just above 1 (never fake) is what a target FPR of 0 gives when a real image scores 1
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0 + 1e-9:
            raise ConfigError(f"config.json {CONFIG_KEY}.threshold.value must be a number in [0, 1], got {value!r}")
        fields = {name: data.get(name) for name in cls.__dataclass_fields__}
        fields.update(value=float(value), method=str(data.get("method", "unknown")))
        fields.update(n_real=int(data.get("n_real") or 0), n_fake=int(data.get("n_fake") or 0))
        fields.update(achieved_fpr=float(data.get("achieved_fpr", math.nan)), statement=str(data.get("statement", "")))
        fields.update(n_unscored=int(data.get("n_unscored") or 0))
        return cls(**fields)


def _check(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels).reshape(-1)
    if len(scores) != len(labels):
        raise ConfigError(f"{len(scores)} scores but {len(labels)} labels")
    if not len(scores):
        raise ConfigError("no scores to calibrate on")
    if not np.isfinite(scores).all():
        raise ConfigError(f"{int((~np.isfinite(scores)).sum())} scores are NaN or infinite; drop unscored images first")
    if not np.isin(labels, (0, 1)).all():
        raise ConfigError("labels must be 0 (real) or 1 (fake)")
    return scores, labels.astype(int)


def rates_at(scores, labels, threshold: float) -> tuple[float, float | None]:
    """False- and true-positive rates of ``score >= threshold`` (the TPR is None without fake images)."""
    scores, labels = _check(scores, labels)
    called = scores >= threshold
    fpr = float(called[labels == 0].mean()) if (labels == 0).any() else math.nan
    tpr = float(called[labels == 1].mean()) if (labels == 1).any() else None
    return fpr, tpr


def accuracy_at(scores, labels, threshold: float = 0.5) -> float:
    """Accuracy of calling ``score >= threshold`` fake.

    Args:
        scores (`array-like`): fake probabilities.
        labels (`array-like`): 0 = real, 1 = fake.
        threshold (`float`): the decision threshold.

    Returns:
        `float`: the share of images labelled correctly.
    """
    scores, labels = _check(scores, labels)
    return float(((scores >= threshold).astype(int) == labels).mean())


def _target_fpr_threshold(real: np.ndarray, target_fpr: float) -> float:
    """The lowest threshold with at most ⌊target · n⌋ real scores at or above it."""
    allowed = math.floor(target_fpr * len(real) + 1e-9)
    if allowed >= len(real):
        return float(real.min())
    descending = np.sort(real)[::-1]
    return float(np.nextafter(descending[allowed], np.inf))  # just above the first real score not allowed


def _sweep_threshold(scores: np.ndarray, labels: np.ndarray, at: str) -> float:
    """The candidate threshold (each distinct score, or above all) best by EER or by accuracy."""
    candidates = np.append(np.unique(scores), np.nextafter(scores.max(), np.inf))
    real, fake = np.sort(scores[labels == 0]), np.sort(scores[labels == 1])
    fpr = 1 - np.searchsorted(real, candidates, side="left") / len(real)  # share of reals >= each candidate
    fnr = np.searchsorted(fake, candidates, side="left") / len(fake)
    if at == "eer":
        cost = np.abs(fnr - fpr)
    else:
        cost = (fpr * len(real) + fnr * len(fake)) / len(scores)  # error rate
    best = np.flatnonzero(cost <= cost.min() + 1e-12)
    return float(candidates[best[np.argmin(np.abs(candidates[best] - 0.5))]])  # ties: nearest to 0.5


def choose_threshold(
    scores,
    labels,
    *,
    target_fpr: float | None = None,
    at: str | None = None,
    dataset: str | None = None,
    split: str | None = None,
) -> Calibration:
    """Choose a decision threshold from fake probabilities of labelled images.

    Args:
        scores (`array-like`): P(fake) of each image.
        labels (`array-like`): 0 = real, 1 = fake. All 0 is allowed with `target_fpr` (the real-only mode).
        target_fpr (`float`, *optional*): the largest share of real images that may be called fake; the threshold
            is the lowest one meeting it on these images (the (1 − target) quantile of the real scores).
        at (`str`, *optional*): ``"eer"`` (false-positive rate ≈ false-negative rate) or ``"max-accuracy"``;
            both need real and fake images. Give exactly one of `target_fpr` and `at`.
        dataset (`str`, *optional*), split (`str`, *optional*): recorded with the threshold.

    Returns:
        `Calibration`: the threshold, the rates it achieves on these images and a sentence saying what it means.
    """
    scores, labels = _check(scores, labels)
    if (target_fpr is None) == (at is None):
        raise ConfigError("give exactly one of target_fpr (e.g. 0.05) and at ('eer' or 'max-accuracy')")
    n_real, n_fake = int((labels == 0).sum()), int((labels == 1).sum())
    where = f" on {dataset}" + (f" ({split})" if split else "") if dataset else ""
    if target_fpr is not None:
        if isinstance(target_fpr, bool) or not 0.0 <= float(target_fpr) < 1.0:
            raise ConfigError(f"target_fpr must be in [0, 1), got {target_fpr!r}")
        if not n_real:
            raise ConfigError("target_fpr needs real images (label 0) among the scores")
        value, method = _target_fpr_threshold(scores[labels == 0], float(target_fpr)), "target-fpr"
    else:
        if at not in ("eer", "max-accuracy"):
            raise ConfigError(f"at={at!r}: use 'eer' or 'max-accuracy' (or target_fpr=...)")
        if not n_real or not n_fake:
            raise ConfigError(f"at={at!r} needs real and fake images; with only real images use target_fpr")
        value, method = _sweep_threshold(scores, labels, at), at
    fpr, tpr = rates_at(scores, labels, value)
    accuracy = accuracy_at(scores, labels, value) if n_fake and n_real else None
    if method == "target-fpr":
        statement = (
            f"Calibrated so that at most {float(target_fpr):.1%} of real images are flagged as fake: {fpr:.1%} of "
            f"the {n_real} real images{where} score at or above {value:.4g}."
        )
        if not n_fake:
            statement += " Only real images were used, so this says nothing about how many fakes are caught."
    else:
        what = "equal error rate" if method == "eer" else "highest accuracy"
        statement = (
            f"Chosen at the {what} on {n_real} real and {n_fake} fake images{where}: {fpr:.1%} of the real ones "
            f"are flagged as fake and {tpr:.1%} of the fake ones are caught (accuracy {accuracy:.1%})."
        )
    return Calibration(
        value, method, None if target_fpr is None else float(target_fpr), dataset, split, n_real, n_fake, fpr, tpr,
        accuracy, statement,
    )  # fmt: skip


def read_calibration(config) -> Calibration | None:
    """The stored threshold of a model: from a `PretrainedConfig`, a config dict, or a folder with config.json."""
    if isinstance(config, (str, os.PathLike)):
        path = Path(config) / "config.json" if Path(config).is_dir() else Path(config)
        config = json.loads(path.read_text()) if path.is_file() else {}
    data = config if isinstance(config, dict) else getattr(config, CONFIG_KEY, None)
    data = data.get(CONFIG_KEY, data) if isinstance(data, dict) and CONFIG_KEY in data else data
    threshold = data.get("threshold") if isinstance(data, dict) else None
    return Calibration.from_dict(threshold) if isinstance(threshold, dict) else None


def write_calibration(model_folder: str | Path, calibration: Calibration) -> Path:
    """Store `calibration` under ``r2m_hf.threshold`` in the folder's config.json (atomic; other keys kept)."""
    path = Path(model_folder) / "config.json"
    if not path.is_file():
        raise SourceError(f"{model_folder}: no config.json here; calibrate a local model folder")
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise SourceError(f"{path}: cannot read it as JSON ({err})") from None
    section = config.get(CONFIG_KEY) if isinstance(config.get(CONFIG_KEY), dict) else {}
    config[CONFIG_KEY] = {**section, "threshold": calibration.to_dict()}
    try:
        handle, tmp = tempfile.mkstemp(prefix=".config.", suffix=".json", dir=path.parent)
        with os.fdopen(handle, "w") as out:
            out.write(json.dumps(config, indent=2, sort_keys=True, allow_nan=False) + "\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except (OSError, ValueError) as err:
        raise OutputError(f"cannot rewrite {path}: {err}") from None
    return path


def calibrate(
    model_folder: str | Path,
    scores,
    labels,
    *,
    target_fpr: float | None = None,
    at: str | None = None,
    dataset_name: str | None = None,
    split: str | None = None,
) -> Calibration:
    """Choose a threshold (`choose_threshold`) and write it into the model folder's config.json.

    Args:
        model_folder (`str` or `Path`): a local model folder; `Detector` then uses the threshold by default.
        scores, labels: fake probabilities and 0/1 labels (``Detector.score`` on the calibration images).
        target_fpr, at: how to choose (see `choose_threshold`).
        dataset_name (`str`, *optional*), split (`str`, *optional*): recorded with the threshold.

    Returns:
        `Calibration`: what was written.
    """
    result = choose_threshold(scores, labels, target_fpr=target_fpr, at=at, dataset=dataset_name, split=split)
    write_calibration(model_folder, result)
    return result
