"""``python -m r2m_hf``: the same command line as ``r2m-hf``."""

from .cli import entry

entry()
