"""The backend seam: what the inference worker hands over (`Request`), what comes back (`Answer`), and `Backend`.

Every place the network runs — in the worker's thread, in a child process, on Ray Serve — implements one call,
`analyse(request) -> Future[Answer]`: the quality gate and the network for a batch of windows. The worker keeps
what a client's state touches (calibration, smoothing, publishing) and never learns where the numbers came from.

A backend that cannot answer says so in one of two ways, and the worker publishes the windows concerned as
rejected (`reason: "backend_unavailable"`, counted) and carries on:
- the future raises `BackendUnavailable`: nothing of the batch was answered, the gate included;
- the answer has the gate's verdicts but `unavailable` set: the windows that passed with NaN rows got no number.
A batch still at the backend when the daemon stops goes out as the first case, whatever its gate would have said.
"""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

import numpy as np

from p2p_stream.errors import P2PError
from p2p_stream.ppg.quality import Quality


class BackendUnavailable(P2PError):
    """The backend did not answer for this batch (after its retries)."""

    reason = "backend_unavailable"


class Item(NamedTuple):
    """One window's samples as a backend sees them (also a crop cut ahead of its window)."""

    device: str
    x: np.ndarray  # (length,) float32 raw samples at `fs`
    fs: float  # Hz
    end: int  # the window's position in its device's stream (samples taken when its last came); -1: none to share
    generation: int  # the device's stream (a device that comes back is a new one): crops are shared within one only


@dataclass
class Request:
    """A batch for the gate and the network."""

    windows: list[Item]  # windows to gate and estimate, in the worker's order
    meta: np.ndarray  # (N, 4) float32 age and sex features of `windows` (zeros for a model that ignores them)
    ahead: list[Item] = field(default_factory=list)  # crops cut ahead: their features kept, nothing answered
    burst: bool = False  # more windows wait behind this batch than one batch holds (a local network may use all cores)


class Answer(NamedTuple):
    """The gate's verdict on each window of a request, and the network's numbers for those that passed."""

    qualities: list[Quality]
    rows: np.ndarray  # (N, 6) mmHg, `estimator.OUTPUTS`; NaN where the window did not pass (or where no interval)
    unavailable: str | None = None  # set: the network did not answer every window that passed (those left NaN), why


class Backend(Protocol):
    runs_on: str  # where the network runs, for the heartbeat's `backend_device`: "cpu", "cuda:0", "ray:p2p-inference"
    max_in_flight: int  # requests the worker may have sent and not yet published
    caches_crops: bool  # keeps crop features per device: the device streams cut a run's first crops ahead for it

    def analyse(self, request: Request) -> Future:
        """A future of the request's `Answer`; never blocks the caller longer than a local network takes."""
        ...

    def close(self) -> None: ...
