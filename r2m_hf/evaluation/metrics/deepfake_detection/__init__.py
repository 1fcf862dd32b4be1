"""The `deepfake_detection` metric module; `evaluate.load` reads `deepfake_detection.py` in this directory."""
