"""The GPU path (`p2p-daemon --torch-device cuda`): the same numbers as on the CPU, and a daemon that runs its
network on CUDA. Marked `gpu`, skipped without CUDA; benchmarks/gpu_check.sh runs them on a GPU machine."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import read_segment, simulated_ppg
from zmq_helpers import client, running_daemon

from p2p_stream.model.estimator import Estimator
from p2p_stream.ppg.preprocess import cut_windows

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (benchmarks/gpu_check.sh on a GPU machine)"),
]
FS = 125.0


def test_cuda_gives_the_cpu_s_estimates():
    cpu, cuda = Estimator.load(torch_device="cpu"), Estimator.load(torch_device="cuda")
    assert next(cuda.model.parameters()).device.type == "cuda"
    windows = [read_segment("2_1")] * 3 + [simulated_ppg(70 + 5 * k, 2.1, 1000.0, seed=k) for k in range(61)]
    a, b = cpu.predict(windows, fs=1000.0), cuda.predict(windows, fs=1000.0)
    assert np.isfinite(a).all()
    np.testing.assert_allclose(b, a, atol=0.05)  # mmHg: float32 on another device and kernel library


def test_a_daemon_on_cuda_streams_the_cpu_s_offline_estimates():
    est = Estimator.load(torch_device="cuda")
    x = simulated_ppg(72, 12.0, FS, seed=1).astype(np.float32)
    windows = cut_windows(x, int(4 * FS), int(FS))  # the daemon of running_daemon: 4 s windows, 1 s hop
    expected = Estimator.load(torch_device="cpu").predict(windows, FS)
    with running_daemon(est) as (daemon, addresses), client(addresses) as c:
        c.stream("gpu-watch", x, FS)
        got = c.estimates(lambda g: len(g) >= len(windows))
        status = daemon.status()
    assert status["backend_device"].startswith("cuda")
    assert [e["seq"] for e in got] == list(range(len(windows))) and all(e["ok"] for e in got)
    streamed = np.array([[e["sbp_window"], e["dbp_window"]] for e in got])
    np.testing.assert_allclose(streamed, expected[:, :2], atol=0.05)
