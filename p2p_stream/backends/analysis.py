"""The gate, then the network: what every backend does with a request, wherever its network runs.

`analyse(estimator, request, network, cache)`: each window through the quality gate (`Estimator.assess_windows`,
batched by model input), then the windows that passed through the network — through the crop cache when there is
one (each crop computed once), else `network(x, meta)` once per model-input shape. A local backend passes the
estimator's own network, the Ray backend its remote call; a `BackendUnavailable` from it leaves the gate's verdicts
standing and marks the answer `unavailable`: the windows it left NaN got no number.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from p2p_stream.backends.base import Answer, BackendUnavailable, Request
from p2p_stream.backends.crop_cache import CropCache
from p2p_stream.model.estimator import OUTPUTS, Estimator

Network = Callable[[np.ndarray, np.ndarray], np.ndarray]  # prepared inputs (N, ...) and (N, 4) meta → (N, 2 or 6)


def analyse(est: Estimator, request: Request, network: Network, cache: CropCache | None = None) -> Answer:
    """The request's windows gated, and those that passed answered (rows NaN elsewhere)."""
    if request.ahead and cache is not None:
        cache.warm(request.ahead)
    windows, meta = request.windows, request.meta
    rows = np.full((len(windows), len(OUTPUTS)), np.nan, dtype=np.float32)
    if not windows:
        return Answer([], rows)
    qualities, inputs = est.assess_windows([w.x for w in windows], [w.fs for w in windows])
    passed = [k for k, q in enumerate(qualities) if q.ok]
    if not passed:
        return Answer(qualities, rows)
    if cache is not None:
        rows[passed] = cache.infer([windows[k] for k in passed], meta[passed])
        return Answer(qualities, rows)
    if est.crop_s > 0:  # the gate's window-level inputs are not what a crop model takes
        inputs = est.crop_inputs([windows[k].x for k in passed], [windows[k].fs for k in passed])
    else:
        inputs = [inputs[k] for k in passed]
    unavailable = None
    for shape in {x.shape for x in inputs}:
        picked = [i for i, x in enumerate(inputs) if x.shape == shape]
        at = [passed[i] for i in picked]  # positions in `windows`, which `meta` follows
        try:
            answer = np.asarray(network(np.stack([inputs[i] for i in picked]), meta[at]), dtype=np.float32)
        except BackendUnavailable as exc:  # this shape's windows stay NaN; the others keep their answers
            unavailable = str(exc)
            continue
        rows[at, : answer.shape[1]] = answer
    return Answer(qualities, rows, unavailable)
