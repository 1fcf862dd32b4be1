"""``r2m-hf predict`` and ``r2m-hf calibrate`` end to end: the tiny zoo model on scikit-image photos and PyAV videos,
prediction files, exit codes (2 only when nothing was scored), one-line errors, and the threshold written by
``calibrate`` (config.json and the card) then used by ``predict``."""

from __future__ import annotations

import json
import shutil

import pytest
from PIL import Image

from r2m_hf.detector import read_predictions

from .conftest import astronaut, coffee
from .test_video import write_audio_only


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def test_predict_prints_one_line_per_file_and_writes_jsonl(cli, model_dir, media, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not media")
    out = tmp_path / "preds" / "p.jsonl"
    args = (media.face, media.no_face, media.face_video, notes)
    result = cli("predict", model_dir, *args, "--frames", "4", "--output", out, "--device", "cpu")
    assert result.code == 0, result.err
    assert result.err == ""
    printed = lines(result.out)
    assert printed[0] == "threshold 0.5 (default)"
    face_line, cup_line, video_line, notes_line = printed[1:5]
    assert face_line.split("\t")[0] in ("real", "fake") and face_line.endswith(str(media.face))
    assert cup_line.startswith("-\t-\t") and "no face found" in cup_line
    assert video_line.split("\t")[0] in ("real", "fake") and video_line.endswith(str(media.face_video))
    assert notes_line.startswith("-\t-\t") and "not an image or video file" in notes_line
    assert printed[5:] == ["2 of 3 files scored", f"predictions written to {out}"]

    face, cup, video, other = read_predictions(out)
    assert face["kind"] == "image" and len(face["faces"]) == 1 and face["threshold_source"] == "default"
    assert face["label"] == ("fake" if face["fake_probability"] >= 0.5 else "real")
    assert cup["fake_probability"] is None and "no face found" in cup["error"]
    assert video["kind"] == "video" and len(video["frames"]) == 4
    assert video["fake_probability"] == pytest.approx(sum(f["fake_probability"] for f in video["frames"]) / 4, abs=1e-9)
    assert other["kind"] == "other" and other["error"] == "not an image or video file"


def test_predict_options_reach_the_detector_and_csv_round_trips(cli, model_dir, media, tmp_path):
    crop = tmp_path / "crop.png"
    astronaut().crop((160, 40, 290, 190)).save(crop)
    out = tmp_path / "p.csv"
    result = cli(
        "predict", model_dir, crop, media.face_video, "--faces", "none", "--frames", "3", "--aggregate", "max",
        "--threshold", "0.25", "--batch-size", "2", "--output", out, "--no-progress",
    )  # fmt: skip
    assert result.code == 0, result.err
    assert lines(result.out)[0] == "threshold 0.25 (user)"
    image, video = read_predictions(out)
    assert image["faces"] == [] and image["threshold"] == 0.25 and image["threshold_source"] == "user"
    assert image["label"] == ("fake" if image["fake_probability"] >= 0.25 else "real")
    assert video["fake_probability"] == max(f["fake_probability"] for f in video["frames"])


def test_a_folder_is_walked_and_its_other_files_are_one_note(cli, model_dir, tmp_path):
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    astronaut().save(folder / "sub" / "a.png")
    (folder / "readme.md").write_text("x")
    result = cli("predict", model_dir, folder, "--faces", "none")
    assert result.code == 0, result.err
    printed = lines(result.out)
    assert printed[1].endswith("a.png") and "skipped 1 files that are not images or videos: readme.md" in printed[2]
    assert printed[-1] == "1 of 1 files scored"


def test_exit_code_2_only_when_nothing_was_scored(cli, model_dir, media, tmp_path):
    """Each bad file is one note and the run goes on; with nothing scored the exit code is 2, with one line."""
    (tmp_path / "broken.jpg").write_bytes(b"this is not a jpeg")
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "garbage.webm").write_bytes(b"\x1a\x45\xdf\xa3" + b"\x00" * 64)
    write_audio_only(tmp_path / "audio.mkv")
    astronaut().save(tmp_path / "cut.png")
    (tmp_path / "cut.png").write_bytes((tmp_path / "cut.png").read_bytes()[:2000])
    bad = [tmp_path / n for n in ("broken.jpg", "empty.mp4", "garbage.webm", "audio.mkv", "cut.png")]
    result = cli("predict", model_dir, *bad, media.no_face, tmp_path / "missing.png")
    assert result.code == 2
    assert result.err == "r2m-hf: error: nothing could be scored (see the notes above)\n"
    printed = lines(result.out)
    assert len(printed) == 1 + len(bad) + 2 + 1 and "Traceback" not in result.out
    notes = dict(line.split("\t", 2)[2].split(": ", 1) for line in printed[1:-1])
    assert "not a readable image" in notes[str(tmp_path / "broken.jpg")]
    assert notes[str(tmp_path / "empty.mp4")] == "empty file (0 bytes)"
    assert "video" in notes[str(tmp_path / "garbage.webm")]
    assert notes[str(tmp_path / "audio.mkv")] == "no video stream in this file (audio)"
    assert "cannot read image" in notes[str(tmp_path / "cut.png")]
    assert "no face found" in notes[str(media.no_face)]
    assert notes[str(tmp_path / "missing.png")] == "no such file or folder"
    assert printed[-1] == "0 of 6 files scored"

    empty = tmp_path / "empty_folder"
    empty.mkdir()
    result = cli("predict", model_dir, empty)
    assert result.code == 2 and "no image or video files in this folder" in result.out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--threshold", "2"], "threshold must be a number in [0, 1], got 2.0"),
        (["--threshold", "-0.1"], "threshold must be a number in [0, 1], got -0.1"),
        (["--frames", "0"], "frames must be a positive integer, got 0"),
        (["--batch-size", "0"], "batch_size must be a positive integer, got 0"),
        (["--aggregate", "mode"], "aggregate='mode': use mean, max, median or top-K"),
        (["--output", "preds.txt"], "output 'preds.txt': use a .jsonl or .csv file name"),
        (["--faces", "none", "--align"], "align and all_faces need face detection"),
    ],
)
def test_bad_options_are_one_error_line(cli, model_dir, media, extra, message):
    result = cli("predict", model_dir, media.face, *extra)
    assert result.code == 2 and result.out == ""
    assert result.err.startswith("r2m-hf: error: ") and message in result.err
    assert len(result.err.splitlines()) == 1


def test_bad_models_are_one_error_line(cli, model_dir, media, tmp_path):
    result = cli("predict", tmp_path / "nowhere", media.face)
    assert result.code == 2 and "does not exist; give a model folder or a Hub repo id" in result.err
    odd = shutil.copytree(model_dir, tmp_path / "odd")
    config = json.loads((odd / "config.json").read_text())
    config.update(id2label={"0": "cat", "1": "dog"}, label2id={"cat": 0, "dog": 1})
    (odd / "config.json").write_text(json.dumps(config))
    result = cli("predict", odd, media.face)
    assert result.code == 2 and "cannot tell the fake class" in result.err and len(result.err.splitlines()) == 1
    result = cli("predict", odd, media.face, "--fake-label", "dog", "--faces", "none")
    assert result.code == 0, result.err


def calibration_set(root, *, fakes: bool = True, n: int = 6):
    """An imagefolder ``validation`` split of face crops: reals are the astronaut, fakes the coffee cup."""
    for label, source in (("real", astronaut()), ("fake", coffee())) if fakes else (("real", astronaut()),):
        folder = root / "validation" / label
        folder.mkdir(parents=True)
        for i in range(n):
            source.rotate(7 * i).resize((48, 48), Image.BILINEAR).save(folder / f"{i}.png")
    return root


def test_calibrate_writes_the_threshold_and_predict_uses_it(cli, model_copy, media, tmp_path):
    (model_copy / "README.md").write_text("---\nlicense: mit\n---\n\n# Merged\n\n## Usage\n\nRun it.\n")
    data = calibration_set(tmp_path / "cal")
    result = cli("calibrate", model_copy, "--dataset", data, "--at", "max-accuracy")
    assert result.code == 0, result.err
    config = json.loads((model_copy / "config.json").read_text())
    stored = config["r2m_hf"]["threshold"]
    assert stored["method"] == "max-accuracy" and (stored["n_real"], stored["n_fake"]) == (6, 6)
    assert stored["split"] == "validation" and stored["dataset"] == str(data)
    assert stored["statement"] in result.out
    assert f"threshold {stored['value']:.6g} written to {model_copy / 'config.json'}" in result.out
    card = (model_copy / "README.md").read_text()
    assert card.count("## Decision threshold") == 1 and card.index("## Usage") < card.index("## Decision threshold")
    assert f"| Threshold (fake when P(fake) ≥ it) | {stored['value']:.4g} |" in card

    predicted = cli("predict", model_copy, media.face)
    assert predicted.code == 0 and lines(predicted.out)[0] == f"threshold {stored['value']:.4g} (calibrated)"
    overridden = cli("predict", model_copy, media.face, "--threshold", "0.5")
    assert lines(overridden.out)[0] == "threshold 0.5 (user)"

    # the real-only mode: at most 1 of 6 real images flagged; the card's section is replaced, not repeated
    real_only = calibration_set(tmp_path / "real-only", fakes=False)
    result = cli("calibrate", model_copy, "--dataset", real_only, "--target-fpr", "0.2")
    assert result.code == 0, result.err
    assert "Only real images were used" in result.out
    stored = json.loads((model_copy / "config.json").read_text())["r2m_hf"]["threshold"]
    assert stored["method"] == "target-fpr" and stored["n_fake"] == 0 and stored["achieved_fpr"] <= 0.2
    card = (model_copy / "README.md").read_text()
    assert card.count("## Decision threshold") == 1 and "set on real images only" in card
    assert card.startswith("---\nlicense: mit\n---\n") and "## Usage\n\nRun it." in card


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "give --target-fpr F (works with only real images) or --at eer|max-accuracy"),
        (["--target-fpr", "1.5"], "target_fpr must be in [0, 1), got 1.5"),
        (["--at", "eer", "--split", "test"], "test"),
    ],
)
def test_calibrate_errors_are_one_line(cli, model_copy, tmp_path, extra, message):
    data = calibration_set(tmp_path / "cal", n=2)
    result = cli("calibrate", model_copy, "--dataset", data, *extra)
    assert result.code == 2 and message in result.err and len(result.err.splitlines()) == 1
    assert "r2m_hf" not in json.loads((model_copy / "config.json").read_text())


def test_calibrate_needs_a_local_model_folder(cli, tmp_path):
    result = cli("calibrate", "org/model", "--dataset", tmp_path, "--at", "eer")
    assert result.code == 2 and "not a local model folder with a config.json" in result.err
