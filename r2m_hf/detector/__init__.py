"""The detector side of r2m-hf: predict real/fake on images and videos with face crops and a calibrated threshold.

``Detector.from_pretrained(model).predict(path)`` finds faces (MTCNN with the weights from the ``facenet-pytorch``
wheel, else OpenCV's Haar cascade), crops them as detectors are trained (margin 1.3, optionally aligned on 5
landmarks), scores them in batches (videos: N frames sampled evenly, scores aggregated) and returns one typed
`Prediction` per file. `calibrate` chooses a threshold on scored data and stores it in the model's config.json.
"""

from .calibration import Calibration, accuracy_at, calibrate, choose_threshold, rates_at, read_calibration
from .detector import Detector
from .faces import CropPolicy, load_face_detector
from .inputs import collect_inputs
from .output import read_predictions, write_predictions
from .types import FaceBox, FrameScore, Prediction
from .video import aggregate_scores

__all__ = [
    "Calibration",
    "CropPolicy",
    "Detector",
    "FaceBox",
    "FrameScore",
    "Prediction",
    "accuracy_at",
    "aggregate_scores",
    "calibrate",
    "choose_threshold",
    "collect_inputs",
    "load_face_detector",
    "rates_at",
    "read_calibration",
    "read_predictions",
    "write_predictions",
]
