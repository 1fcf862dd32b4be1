"""``python -m r2m_hf``: the same command line as ``r2m-hf``."""

import sys

from .cli import main

sys.exit(main())
