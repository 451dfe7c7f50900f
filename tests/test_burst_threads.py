"""Burst threads: the local backend's network takes every core while more windows wait than one batch holds (devices
switched on together: the ingest loop mostly waits then), and leaves one core to ingest otherwise. A real worker,
batcher and estimator; the backend records the torch threads each batch ran with."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import torch
import zmq
from helpers import simulated_ppg

from p2p_stream.backends.local import LocalBackend
from p2p_stream.backends.threads import auto_threads, torch_threads
from p2p_stream.config.daemon import load_daemon_config
from p2p_stream.model.estimator import Estimator
from p2p_stream.stream.counters import Counters
from p2p_stream.stream.inference.batcher import DynamicBatcher
from p2p_stream.stream.inference.worker import InferenceWorker
from p2p_stream.stream.ingest.ring_buffer import Window
from p2p_stream.stream.state.calibration import Calibrations

T0 = 1_700_000_000.0


class RecordingBackend(LocalBackend):
    def __init__(self, est: Estimator, threads: tuple[int, int]) -> None:
        super().__init__(est, threads=threads)
        self.ran: list[tuple[int, int]] = []  # (windows, torch threads) per batch

    def predict(self, x: np.ndarray, features: np.ndarray) -> np.ndarray:
        self.ran.append((len(x), torch.get_num_threads()))
        return super().predict(x, features)


def test_a_burst_runs_on_every_core_and_the_tail_on_the_steady_number():
    est = Estimator.load()
    backend, batcher = RecordingBackend(est, threads=(1, 2)), DynamicBatcher(8, 0.0, 1000)
    x = simulated_ppg(70, 4, 125.0, seed=1).astype(np.float32)
    for k in range(20):  # 2.5 batches at once: the first two find more than a batch waiting behind them
        batcher.put(Window(f"d{k}", x, 125.0, T0, time.monotonic(), seq=0))
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.bind("inproc://burst")
    stop = threading.Event()
    before = torch.get_num_threads()
    worker = InferenceWorker(estimator=est, backend=backend, batcher=batcher, pub=pub, calibrations=Calibrations(),
                             counters=Counters(), device_count=lambda: 20, heartbeat_s=1.0, window_s=4.0,
                             stop=stop)  # fmt: skip
    try:
        worker.start()
        deadline = time.monotonic() + 30
        while sum(n for n, _ in backend.ran) < 20:
            assert time.monotonic() < deadline, backend.ran
            time.sleep(0.01)
    finally:
        stop.set()
        worker.join(10)
        ctx.destroy(linger=0)
        torch.set_num_threads(before)
    assert backend.ran == [(8, 2), (8, 1), (4, 1)]  # 12 waiting behind the first: burst; 4 behind the second: not


def test_the_threads_follow_the_config():
    assert torch_threads(load_daemon_config(None)) == (auto_threads(), os.cpu_count())  # defaults: all but one; all
    config = load_daemon_config(None, [{"model": {"threads": 1, "burst_threads": 1}}])
    assert torch_threads(config) == (1, 1)  # equal: off
