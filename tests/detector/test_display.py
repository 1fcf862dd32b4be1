"""What the app shows, without Gradio: verdicts, faces drawn, the per-frame plot, the card's metrics, and the card's
"Decision threshold" section that ``calibrate`` keeps in step with config.json."""

from __future__ import annotations

import json
import re

import numpy as np
from PIL import Image

from r2m_hf.detector import FaceBox, FrameScore, Prediction, choose_threshold
from r2m_hf.detector.card import replace_threshold_section, threshold_markdown, write_threshold_section
from r2m_hf.detector.display import (
    FAKE_COLOUR,
    REAL_COLOUR,
    draw_faces,
    frame_figure,
    metrics_markdown,
    model_metrics,
    verdict_markdown,
)


def prediction(p, *, threshold=0.5, source="default", **extra) -> Prediction:
    label = None if p is None else ("fake" if p >= threshold else "real")
    return Prediction(path="x", kind=extra.pop("kind", "image"), fake_probability=p, label=label,
                      threshold=threshold, threshold_source=source, **extra)  # fmt: skip


def test_verdicts_say_label_probability_and_threshold_source():
    fake = verdict_markdown(prediction(0.8123, threshold=0.41, source="calibrated"))
    assert fake.startswith("### Fake\n") and "P(fake) = **0.8123**, at or above the threshold 0.41 (calibrated)" in fake
    real = verdict_markdown(prediction(0.2))
    assert real.startswith("### Real\n")
    assert "below the threshold 0.5 (the default: this model is not calibrated)" in real
    user = verdict_markdown(prediction(0.5, threshold=0.5, source="user"))
    assert "### Fake" in user and "(set by you)" in user
    none = verdict_markdown(prediction(None, error="no face found (mtcnn) <b>x</b>"))
    assert none.startswith("### No verdict") and "&lt;b&gt;" in none and "<b>" not in none
    frames = [FrameScore(0, 0.1, 0.7), FrameScore(5, 0.6, None, note="no face"), FrameScore(9, 1.1, 0.9)]
    video = verdict_markdown(prediction(0.8, kind="video", frames=frames), "mean")
    assert "(mean over 2 frames with a face)" in video and "3 frames sampled" in video


def test_faces_are_drawn_in_the_colour_of_their_label():
    image = Image.new("RGB", (200, 160), (128, 128, 128))
    faces = [
        FaceBox(20, 30, 80, 100, 0.99, landmarks=((40, 50),) * 5, fake_probability=0.9),
        FaceBox(110, 30, 170, 100, 0.95, fake_probability=0.1),
    ]
    drawn = np.asarray(draw_faces(image, faces, threshold=0.5))
    assert tuple(drawn[70, 20]) == FAKE_COLOUR and tuple(drawn[70, 170]) == REAL_COLOUR
    assert tuple(drawn[50, 40]) == FAKE_COLOUR  # a landmark
    assert np.asarray(image).std() == 0  # the input is not touched


def test_the_frame_plot_has_scores_threshold_and_aggregate():
    frames = [FrameScore(i, i / 10, p) for i, p in enumerate([0.2, 0.6, None, 0.4])]
    figure = frame_figure(prediction(0.4, threshold=0.3, kind="video", frames=frames))
    axes = figure.axes[0]
    labels = [line.get_label() for line in axes.get_lines()]
    assert labels == ["P(fake) of the frame", "no face", "threshold", "video score"]
    scores = axes.get_lines()[0]
    assert list(scores.get_xdata()) == [0.0, 0.1, 0.3] and list(scores.get_ydata()) == [0.2, 0.6, 0.4]
    assert list(axes.get_lines()[2].get_ydata()) == [0.3, 0.3]


EVALUATION = {
    "dataset": "org/faces",
    "split": "test",
    "n_samples": 40,
    "families": {
        "deepfakes": {"auc": 0.91, "eer": 0.12, "ap": 0.9, "acc": 0.7, "n": 20},
        "| evil [x](http://e) <img>": {"auc": None, "eer": 0.5, "ap": 0.5, "acc": 0.5, "n": 20},
    },
    "mean": {"auc": 0.91, "eer": 0.31, "ap": 0.7, "acc": 0.6},
    "overall": {"auc": 0.88, "eer": 0.2, "ap": 0.85, "acc": 0.65},
}


def test_metrics_table_escapes_names_from_the_data():
    table = metrics_markdown(EVALUATION)
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    assert rows[0] == "| family | AUC | EER | AP | ACC at 0.5 | n |"
    assert rows[1] == "| deepfakes | 0.9100 | 0.1200 | 0.9000 | 0.7000 | 20 |"
    assert all(len(re.findall(r"(?<!\\)\|", row)) == 7 for row in rows)  # the evil name adds no column
    assert "<img>" not in table and "\\[x](http" in table and rows[2].endswith(" | – | 0.5000 | 0.5000 | 0.5000 | 20 |")
    assert rows[-2].startswith("| **mean** | 0.9100") and rows[-1].startswith("| all (pooled) | 0.8800")


def test_model_metrics_from_eval_results_then_the_card_then_none(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    assert model_metrics(folder).startswith("No evaluation results ship with")
    (folder / "README.md").write_text(
        "---\nx: 1\n---\n# M\n\n## Evaluation\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n![AUC](eval_auc.png)\n\n## Usage\n"
    )
    assert model_metrics(folder) == "| a | b |\n|---|---|\n| 1 | 2 |"
    (folder / "eval_results.json").write_text(json.dumps(EVALUATION))
    assert model_metrics(folder) == metrics_markdown(EVALUATION)
    (folder / "eval_results.json").write_text("{not json")
    assert model_metrics(folder).startswith("| a | b |")


def test_the_card_section_is_escaped_replaced_and_appended():
    calibration = choose_threshold([0.1, 0.2, 0.3, 0.9], [0, 0, 1, 1], at="eer", dataset="<b>data</b> | x")
    section = threshold_markdown(calibration)
    assert section.startswith("## Decision threshold\n\n") and "<b>" not in section
    rows = [line for line in section.splitlines() if line.startswith("| ")]
    assert rows and all(len(re.findall(r"(?<!\\)\|", row)) == 3 for row in rows)
    card = "---\na: 1\n---\n# Model\n\n## Usage\n\nx\n"
    once = replace_threshold_section(card, calibration)
    assert once == card + "\n" + section
    middle = once + "\n## Licence\n\nMIT\n"
    other = choose_threshold([0.1, 0.2, 0.3], [0, 0, 0], target_fpr=0.0)
    twice = replace_threshold_section(middle, other)
    assert twice.count("## Decision threshold") == 1 and twice.endswith("## Licence\n\nMIT\n")
    assert threshold_markdown(other) in twice and "set on real images only" in twice


def test_writing_the_section_needs_a_card(tmp_path):
    calibration = choose_threshold([0.1, 0.9], [0, 1], at="eer")
    assert write_threshold_section(tmp_path, calibration) is None
    (tmp_path / "README.md").write_text("# M\n")
    assert write_threshold_section(tmp_path, calibration) == tmp_path / "README.md"
    assert (tmp_path / "README.md").read_text() == "# M\n\n" + threshold_markdown(calibration)
    assert [p.name for p in tmp_path.iterdir()] == ["README.md"]
