"""Evaluation of deepfake detectors: the `deepfake_detection` metric module, dataset and model loading, the runner.

Conventions follow DeepfakeBench / DF40 (see docs/evaluation.md): labels 0 = real, 1 = fake, mapped by name; the
score is softmax(logits)[fake index]; metrics per forgery family, their mean is the headline.
"""

from .data import EvaluationData, EvaluationError, load_evaluation_data
from .metric import compute_metrics, load_metric
from .models import fake_index_of, load_classifier
from .runner import EvaluationResult, evaluate_model, pixel_values

__all__ = [
    "EvaluationData",
    "EvaluationError",
    "EvaluationResult",
    "compute_metrics",
    "evaluate_model",
    "fake_index_of",
    "load_classifier",
    "load_evaluation_data",
    "load_metric",
    "pixel_values",
]
