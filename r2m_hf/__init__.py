"""r2m-hf: merge deepfake-detector specialists on the Hugging Face Hub with R²M (Real-aware Residual Model Merging)."""

__version__ = "0.1.0"

from .config import MergeConfig, load_config  # noqa: E402
from .errors import R2MError  # noqa: E402
from .groups import Group  # noqa: E402
from .merge import MergePlan, MergeResult, merge, plan_merge, run_merge  # noqa: E402
from .methods.base import MergeMethod, MethodParameters, TensorSlot  # noqa: E402
from .methods.registry import available_methods, get_method, register_method  # noqa: E402

__all__ = [
    "Group",
    "MergeConfig",
    "MergeMethod",
    "MergePlan",
    "MergeResult",
    "MethodParameters",
    "R2MError",
    "TensorSlot",
    "__version__",
    "available_methods",
    "get_method",
    "load_config",
    "merge",
    "plan_merge",
    "register_method",
    "run_merge",
]
