"""Write the golden merged tensors that tests/test_golden.py compares against.

Run once on the commit *before* a refactor (``python tests/data/golden/make_golden.py``): every method at its defaults,
plus R²M variants, over the tiny seeded zoo. The files are the merged ``model.safetensors`` of each case.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent.parent))

from golden_cases import CASES, recipe  # noqa: E402

from r2m_hf import merge  # noqa: E402
from r2m_hf.zoo import build_zoo  # noqa: E402


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        zoo = build_zoo(Path(tmp) / "zoo")
        for case, (method, parameters) in CASES.items():
            out = Path(tmp) / case
            merge(recipe(zoo, method, parameters), out, progress=False)
            shutil.copyfile(out / "model.safetensors", HERE / f"{case}.safetensors")
            print(case)


if __name__ == "__main__":
    main()
