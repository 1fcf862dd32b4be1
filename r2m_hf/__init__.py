"""r2m-hf: merge deepfake-detector specialists on the Hugging Face Hub with R²M (Real-aware Residual Model Merging)."""

from .errors import R2MError
from .groups import Group
from .methods.registry import available_methods, get_method, register_method

__version__ = "0.1.0"

__all__ = ["Group", "R2MError", "__version__", "available_methods", "get_method", "register_method"]
