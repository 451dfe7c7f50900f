"""Pulse2Pressure: cuff-less blood pressure from a PPG stream.

The streaming path, one module per stage (stream/):

    wearable → SUB (daemon.py, protocol.py) → ring buffer (ring_buffer.py) → window → quality gate (ppg/quality.py)
             → batch (batcher.py) → model (worker.py, backends/, model/) → PUB → dashboard (tools/dashboard/app.py)

Offline (offline/), the same signal path and model serve training and evaluation: datasets/ → ppg/ → model/
networks/ → training.py → lodo.py → report.py; `Estimator` (model/estimator.py) is the public entry to a trained
model. Folders: config/ ppg/ model/ stream/ backends/ are the core; offline/ and tools/ build on it, never the
reverse.
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
