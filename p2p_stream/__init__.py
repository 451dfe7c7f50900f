"""Pulse2Pressure: cuff-less blood pressure from a PPG stream.

The data path, one module per stage:

    wearable → SUB (daemon.py, protocol.py) → ring buffer (ring_buffer.py) → window → quality gate (quality.py)
             → batch (batcher.py) → model (worker.py, models/) → PUB → dashboard (dashboard.py)

Offline, the same stages serve training and evaluation: datasets/ → preprocess.py → quality.py →
models/ → training.py → report.py; `Estimator` (estimator.py) is the public entry to a trained model.
"""

from p2p_stream.errors import CheckpointError, ConfigError, DatasetError, P2PError, ProtocolError

__version__ = "0.1.0"
__all__ = ["CheckpointError", "ConfigError", "DatasetError", "Estimator", "P2PError", "ProtocolError", "__version__"]


def __getattr__(name: str):
    # Estimator pulls in torch (seconds to import): only when asked, so the monitor and simulators start fast.
    if name == "Estimator":
        from p2p_stream.model.estimator import Estimator

        return Estimator
    raise AttributeError(f"module 'p2p_stream' has no attribute {name!r}")
