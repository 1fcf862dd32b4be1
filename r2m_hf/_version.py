"""The package version, in one place: read by ``r2m_hf.__version__``, the recorded recipe and ``pyproject.toml``."""

__version__ = "0.1.0"
