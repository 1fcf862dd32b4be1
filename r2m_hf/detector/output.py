"""Prediction files: one record per input, as JSON lines (``.jsonl``) or CSV (``.csv``), chosen by the suffix.

CSV cells that hold lists (face boxes, per-frame scores) are JSON strings, so both formats carry the same data.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from pathlib import Path

from ..errors import ConfigError, OutputError
from .types import Prediction

FORMATS = {".jsonl": "jsonl", ".json": "jsonl", ".csv": "csv"}
CSV_COLUMNS = (
    "path", "kind", "fake_probability", "label", "threshold", "threshold_source", "faces", "frames", "error", "notes",
)  # fmt: skip


def prediction_format(path: str | Path) -> str:
    """``"jsonl"`` or ``"csv"`` from the output file's suffix."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise ConfigError(f"output {str(path)!r}: use a .jsonl or .csv file name")
    return FORMATS[suffix]


def write_predictions(predictions: Iterable[Prediction], path: str | Path) -> Path:
    """Write one record per prediction (path, kind, P(fake), label, threshold, faces, frames, error, notes).

    Args:
        predictions (`Iterable[Prediction]`): e.g. ``Detector.iter_predict(...)`` (written as they come).
        path (`str` or `Path`): a ``.jsonl`` or ``.csv`` file; its folder is created.

    Returns:
        `Path`: the file written.
    """
    path = Path(path)
    kind = prediction_format(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="" if kind == "csv" else None, encoding="utf-8") as out:
            if kind == "jsonl":
                for prediction in predictions:
                    out.write(json.dumps(prediction.to_dict(), ensure_ascii=False) + "\n")
                    out.flush()
            else:
                writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS)
                writer.writeheader()
                for prediction in predictions:
                    record = prediction.to_dict()
                    for key in ("faces", "frames", "notes"):
                        record[key] = "" if record[key] is None else json.dumps(record[key])
                    writer.writerow(record)
    except OSError as err:
        raise OutputError(f"cannot write predictions to {path}: {err}") from None
    return path


def read_predictions(path: str | Path) -> list[dict]:
    """The records of a prediction file written by `write_predictions`, as dicts (CSV values parsed back)."""
    path = Path(path)
    if prediction_format(path) == "jsonl":
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    records = []
    with path.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            for key in ("faces", "frames", "notes"):
                row[key] = json.loads(row[key]) if row[key] else None
            for key in ("fake_probability", "threshold"):
                row[key] = float(row[key]) if row[key] else None
            records.append({k: (v if v != "" else None) for k, v in row.items()})
    return records
