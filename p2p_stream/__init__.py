"""Pulse2Pressure: cuff-less blood pressure from a PPG stream.

The data path, one module per stage:

    wearable → SUB → ring buffer → window → quality gate (quality.py) → batch → model (models/) → PUB → dashboard

Offline, the same stages serve training and evaluation: datasets/ → preprocess.py → quality.py →
models/ → training.py → report.py; `Estimator` (estimator.py) is the public entry to a trained model.
"""

from .errors import CheckpointError, ConfigError, DatasetError, P2PError, ProtocolError
from .estimator import Estimator

__version__ = "0.1.0"
__all__ = ["CheckpointError", "ConfigError", "DatasetError", "Estimator", "P2PError", "ProtocolError", "__version__"]
