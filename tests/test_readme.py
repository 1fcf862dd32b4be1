"""The README's method table is the package's own: the block between its markers equals `method_table_markdown()`."""

from __future__ import annotations

import re
from pathlib import Path

from r2m_hf.methods.registry import builtin_methods, method_table_markdown

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(r"<!-- BEGIN methods table[^>]*-->\n(.*?)\n<!-- END methods table -->", re.DOTALL)


def test_readme_method_table_is_generated():
    match = BLOCK.search(README.read_text(encoding="utf-8"))
    assert match, "README.md lost its methods-table markers"
    # built-ins only: a plugin installed in this environment is not part of the README
    expected = method_table_markdown(builtin_methods())
    assert match.group(1) == expected, (
        "README.md's method table is stale: replace the block between the markers with the output of "
        "`r2m-hf methods --markdown`"
    )
