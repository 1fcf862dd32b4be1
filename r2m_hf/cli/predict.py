"""``r2m-hf predict`` and ``r2m-hf calibrate``: a detector on images and videos, and its decision threshold.

``predict`` prints one line per file (label, P(fake), path; or the file's error note) and, with ``--output``, writes
one record per file (``.jsonl`` or ``.csv``); it exits 2 only when nothing could be scored. ``calibrate`` scores one
split of a dataset, chooses the threshold and stores it in the model folder's ``config.json`` (and the card's
"Decision threshold" section). The detector options are shared with ``r2m-hf app`` (:func:`add_detector_options`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ._common import add_debug, add_progress, add_verb, show_progress

EXIT_NOTHING_SCORED = 2


def register(subparsers) -> None:
    """Add the ``predict`` and ``calibrate`` verbs."""
    predict = add_verb(subparsers, "predict", run_predict, help="say real or fake for images, folders and videos")
    predict.add_argument("model", help="model folder or Hub repo id (an image classifier with real/fake labels)")
    predict.add_argument("inputs", nargs="+", help="image files, folders (recursive) and videos")
    add_detector_options(predict)
    add_decision_options(predict)
    predict.add_argument("--output", type=Path, default=None, help="write one record per file (.jsonl or .csv)")
    add_progress(predict)
    add_debug(predict)

    calibrate = add_verb(subparsers, "calibrate", run_calibrate, help="choose and store a model's decision threshold")
    calibrate.add_argument("model", help="local model folder (its config.json is rewritten)")
    calibrate.add_argument("--dataset", required=True, help="imagefolder, Arrow/parquet path, or Hub dataset id")
    calibrate.add_argument("--split", default="validation")
    calibrate.add_argument("--label-column", default="label")
    calibrate.add_argument("--max-samples", type=int, default=None, help="calibrate on a seeded subset of N rows")
    how = calibrate.add_mutually_exclusive_group()
    how.add_argument(
        "--target-fpr", type=float, default=None, help="share of real images allowed to be flagged (real-only mode)"
    )
    how.add_argument("--at", choices=("eer", "max-accuracy"), default=None, help="needs real and fake images")
    add_detector_options(calibrate, faces_default="none")
    add_progress(calibrate)
    add_debug(calibrate)


def add_detector_options(parser: argparse.ArgumentParser, faces_default: str = "auto") -> None:
    """Face handling, labels, device and batching: the options of every verb that builds a `Detector`."""
    parser.add_argument(
        "--faces", choices=("auto", "none", "deepfakebench"), default=faces_default,
        help=f"auto: detect and crop faces; none: inputs are crops already; deepfakebench: its aligned crops "
        f"(default: {faces_default})",
    )  # fmt: skip
    parser.add_argument("--align", action="store_true", help="aligned crops from 5 landmarks (MTCNN)")
    parser.add_argument("--all-faces", action="store_true", help="score every face; the file gets the highest")
    parser.add_argument("--face-detector", choices=("auto", "mtcnn", "haar"), default="auto")
    parser.add_argument("--fake-label", default=None, help="the fake class (name or index), when id2label does not say")
    parser.add_argument("--device", default=None, help="cpu, cuda, … (default: cuda when available)")
    parser.add_argument("--batch-size", type=int, default=16, help="face crops per forward pass")


def add_decision_options(parser: argparse.ArgumentParser) -> None:
    """Threshold and video options (``predict`` and ``app``)."""
    parser.add_argument(
        "--threshold", type=float, default=None, help="in [0, 1]; default: the calibrated one, else 0.5"
    )
    parser.add_argument("--frames", type=int, default=16, help="frames sampled evenly per video")
    parser.add_argument("--aggregate", default="mean", help="video score from frame scores: mean, max, median, top-K")


def build_detector(args: argparse.Namespace, **extra):
    """`Detector.from_pretrained` with the options of :func:`add_detector_options` (and `extra`)."""
    from ..detector import Detector

    return Detector.from_pretrained(
        args.model, device=args.device, faces=args.faces, align=args.align, all_faces=args.all_faces,
        batch_size=args.batch_size, fake_label=args.fake_label, face_detector=args.face_detector, **extra,
    )  # fmt: skip


def run_predict(args: argparse.Namespace) -> int:
    """One line per file (label, P(fake), path; or the file's error); exit 2 when nothing could be scored."""
    from ..detector import write_predictions
    from ..detector.output import prediction_format

    if args.output is not None:
        prediction_format(args.output)  # a wrong suffix fails before the model loads
    detector = build_detector(args, threshold=args.threshold, frames=args.frames, aggregate=args.aggregate)
    print(f"threshold {detector.threshold:.4g} ({detector.threshold_source})")
    results = []

    def report(predictions):
        for prediction in predictions:
            results.append(prediction)
            if prediction.ok:
                print(f"{prediction.label}\t{prediction.fake_probability:.4f}\t{prediction.path}")
            else:
                print(f"-\t-\t{prediction.path}: {prediction.error}")
            yield prediction

    stream = report(detector.iter_predict(args.inputs, progress=show_progress(args)))
    if args.output is not None:
        write_predictions(stream, args.output)
    else:
        for _ in stream:
            pass
    scored, files = sum(p.ok for p in results), sum(p.kind != "other" for p in results)
    print(f"{scored} of {files} files scored")
    if args.output is not None:
        print(f"predictions written to {args.output}")
    if not scored:
        print("r2m-hf: error: nothing could be scored (see the notes above)", file=sys.stderr)
        return EXIT_NOTHING_SCORED
    return 0


def run_calibrate(args: argparse.Namespace) -> int:
    """Score the split, choose the threshold, write it into config.json (and the card), print what it means."""
    from ..detector.card import write_threshold_section
    from ..errors import ConfigError, SourceError
    from ..evaluation.data import load_evaluation_data

    if args.target_fpr is None and args.at is None:
        raise ConfigError("give --target-fpr F (works with only real images) or --at eer|max-accuracy")
    if not (Path(args.model) / "config.json").is_file():
        raise SourceError(f"{args.model}: not a local model folder with a config.json; calibrate writes into it")
    data = load_evaluation_data(
        args.dataset, split=args.split, label_column=args.label_column, max_samples=args.max_samples
    )
    detector = build_detector(args)
    images = (row[data.image_column] for row in data.dataset)
    result = detector.calibrate(
        images, data.labels, target_fpr=args.target_fpr, at=args.at, dataset_name=data.name, split=data.split,
        progress=show_progress(args),
    )  # fmt: skip
    print(result.statement)
    if result.n_unscored:
        print(f"{result.n_unscored} images left out (no face found or unreadable)")
    print(f"threshold {result.value:.6g} written to {Path(args.model) / 'config.json'} (key r2m_hf.threshold)")
    card = write_threshold_section(args.model, result)
    if card is not None:
        print(f"model card updated: {card}")
    return 0
