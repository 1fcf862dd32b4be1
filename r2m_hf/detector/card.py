"""The model card's "Decision threshold" section: what a calibrated threshold is and what it means, in Markdown.

`threshold_markdown` renders a `Calibration` (every value that came from the user, such as the dataset name, is
escaped so it cannot add Markdown or HTML to a published card); `write_threshold_section` puts that section into
the ``README.md`` of a model folder, replacing an earlier one, so ``r2m-hf calibrate`` keeps the card in step with
``config.json``. The card writer of merges can call `threshold_markdown` too, so both write the same section.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from ..errors import OutputError
from .calibration import Calibration

HEADING = "## Decision threshold"
_NEXT_SECTION = re.compile(r"^#{1,2} ", flags=re.MULTILINE)


def threshold_markdown(calibration: Calibration) -> str:
    """The card section for `calibration`: a sentence saying what the threshold means, then a table of its numbers.

    Args:
        calibration (`Calibration`): as stored under ``r2m_hf.threshold`` in config.json.

    Returns:
        `str`: Markdown starting with ``## Decision threshold`` and ending with a newline.
    """
    from ..card_evaluation import md_text

    c = calibration
    table = "\n".join(f"| {md_text(name)} | {md_text(value)} |" for name, value in c.card_rows())
    usage = (
        "`r2m-hf predict`, `r2m-hf app` and `Detector.from_pretrained` use this threshold unless given another; "
        "it is stored under `r2m_hf.threshold` in `config.json`."
    )
    if c.method == "target-fpr" and not c.n_fake:
        usage += " It was set on real images only: it bounds false alarms on data like those images, nothing more."
    return f"{HEADING}\n\n{md_text(c.statement, 1000)}\n\n| | |\n|---|---|\n{table}\n\n{usage}\n"


def replace_threshold_section(card: str, calibration: Calibration) -> str:
    """`card` (a README's text) with its threshold section replaced by the current one, or the section appended."""
    section = threshold_markdown(calibration)
    start = card.find(f"\n{HEADING}\n")
    if start < 0:
        return card.rstrip("\n") + "\n\n" + section
    start += 1
    following = _NEXT_SECTION.search(card, start + len(HEADING))
    end = following.start() if following else len(card)
    tail = card[end:]
    return card[:start] + section + ("\n" + tail if tail else "")


def write_threshold_section(model_folder: str | Path, calibration: Calibration) -> Path | None:
    """Put the threshold section into the folder's ``README.md`` (atomically); None when the folder has no card.

    Raises:
        `OutputError`: the card exists but cannot be rewritten.
    """
    path = Path(model_folder) / "README.md"
    if not path.is_file():
        return None
    try:
        text = replace_threshold_section(path.read_text(encoding="utf-8"), calibration)
        handle, tmp = tempfile.mkstemp(prefix=".README.", suffix=".md", dir=path.parent)
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except (OSError, UnicodeDecodeError) as err:
        raise OutputError(f"cannot update the model card {path}: {err}") from None
    return path
