"""A device's calibration and smoothing belong to one stream of it: after `forget` (or eviction) the windows of the
stream before, still queued or at the backend, never rebuild its state nor form a new wearer's reference; and a
calibration's span holds every estimate in it, however short the hop."""

import time
from collections import deque
from contextlib import contextmanager

import numpy as np
from helpers import simulated_ppg
from zmq_helpers import ipc_addresses

from p2p_stream import Estimator
from p2p_stream.backends import LocalBackend
from p2p_stream.config.daemon import load_daemon_config
from p2p_stream.stream.daemon import Daemon
from p2p_stream.stream.ingest.devices import DeviceTable
from p2p_stream.stream.parts import build
from p2p_stream.stream.state.calibration import Calibrations
from p2p_stream.stream.state.smoothing import Smoother
from p2p_stream.wire.protocol import Ingest, encode_ingest, pack

FS = 125.0
T0 = 1_700_000_000.0
WEARER_1, WEARER_2, CUFF = (150.0, 90.0), (110.0, 65.0), (120.0, 75.0)


# ---------------------------------------------------------------- the parts


def test_a_new_stream_of_a_device_gets_a_higher_generation_on_its_windows():
    table = DeviceTable(window_s=2.0, hop_s=0.5, max_chunk=64, gap_tolerance_s=0.05, max_devices=4, idle_s=10.0)
    x = np.zeros(250, np.float32)
    first = table.push(Ingest("d", 0, 0.0, 100.0, x, None, None), 0.0).windows
    other = table.push(Ingest("e", 0, 0.0, 100.0, x, None, None), 0.0).windows
    table.forget("d")
    again = table.push(Ingest("d", 0, 2.5, 100.0, x, None, None), 0.0).windows
    g1, g2 = first[0].generation, again[0].generation
    assert g1 > 0 and g2 > other[0].generation > g1
    assert {w.generation for w in first} == {g1} and {w.generation for w in again} == {g2}


def test_an_older_generation_changes_nothing_and_a_newer_one_starts_afresh():
    c = Calibrations(span_s=60.0, min_estimates=2)
    for k in range(3):
        assert not c.apply("d", T0 + k, np.array(WEARER_1), generation=1).stale
    c.retain([])  # evicted; one more window of that stream was still queued: it may rebuild its own state…
    c.apply("d", T0 + 3, np.array(WEARER_1), generation=1)
    assert not c.calibrate("d", *CUFF, t=T0 + 4, generation=2)  # …but never the next stream's reference
    late = c.apply("d", T0 + 3.5, np.array(WEARER_1), generation=1)
    assert late.stale and not late.calibrated and tuple(late.row) == WEARER_1
    got = [c.apply("d", T0 + 4 + k, np.array(WEARER_2), generation=2) for k in range(3)]
    assert [a.calibrated for a in got] == [False, True, True]
    np.testing.assert_allclose(got[-1].row, CUFF)  # against wearer 2's own estimates only
    assert [e[1] for e in c._devices["d"].history] == [WEARER_2[0]] * 3

    s = Smoother(3)
    s.add("d", np.array(WEARER_1), generation=1)
    np.testing.assert_allclose(s.add("d", np.array(WEARER_2), generation=2), WEARER_2)  # restarted
    np.testing.assert_allclose(s.add("d", np.array(WEARER_1), generation=1), WEARER_1)  # its own, not kept
    s.reset("d", generation=1)  # a stale gap marker restarts nothing
    np.testing.assert_allclose(s.add("d", np.array([100.0, 55.0]), generation=2), [105.0, 60.0])
    s.forget("d", generation=2)
    np.testing.assert_allclose(s.add("d", np.array(WEARER_2), generation=2), WEARER_2)  # forgotten: not kept
    assert s.add("d", np.array(WEARER_1), generation=3) is not None and s._history["d"].generation == 3


# ---------------------------------------------------------------- the daemon's ingest, control, queue and worker


class PlannedBackend(LocalBackend):
    """Answers each window it gets with the next planned (SBP, DBP), in the order the windows reach it."""

    def __init__(self, estimator: Estimator) -> None:
        super().__init__(estimator)
        self.plan: deque[tuple[float, float]] = deque()

    def predict(self, x: np.ndarray, features: np.ndarray) -> np.ndarray:
        return np.array([self.plan.popleft() for _ in range(len(x))], dtype=np.float64)


@contextmanager
def stepped_daemon(est: Estimator, **sections):
    """A real Daemon on ipc:// sockets whose loop does not run: the test feeds `on_ingest`, sends `on_control` and
    moves windows from the batcher through the worker itself, so it decides what is queued when."""
    with ipc_addresses() as addresses:
        # T0 is a fixed 2023 clock: give the daemon a skew that takes it (the clock check has its own tests).
        skew = {"limits": {"max_clock_skew_s": 1e9}}
        fixed = {"sockets": addresses, "windowing": {"window_s": 4.0, "hop_s": 1.0}, **skew}
        overrides = [fixed, sections]
        daemon = Daemon(load_daemon_config(None, overrides), est)
        daemon.worker.backend = PlannedBackend(est)  # every answer from the plan, none from the network
        try:
            yield daemon
        finally:
            daemon.close()


def send(daemon: Daemon, device: str, x: np.ndarray, t0: float, seq0: int = 0) -> int:
    seq = seq0
    for i in range(0, len(x), 25):
        daemon.on_ingest(encode_ingest(device, seq, t0 + i / FS, FS, x[i : i + 25]), time.monotonic())
        seq += 1
    return seq


def drain(daemon: Daemon) -> list[dict]:
    got = []
    while batch := daemon.parts.batcher.next_batch(timeout_s=0.0):
        got += [e for _, e in daemon.worker.finish(daemon.worker.submit(batch))]
    return got


def values(estimates, key="sbp"):
    return [(e[key], e[key.replace("sbp", "dbp")]) for e in estimates]


FORGET = [pack({"cmd": "forget", "device": "watch"})]
CALIBRATE = [pack({"cmd": "calibrate", "device": "watch", "sbp": CUFF[0], "dbp": CUFF[1]})]
CAL = {"calibration": {"span_s": 60.0, "min_estimates": 2}, "smoothing": {"windows": 3}}


def test_windows_queued_across_forget_do_not_reach_the_next_wearer(est):
    """The reviewer's case: wearer 1 at 150/90 with windows queued, `forget`, wearer 2 at 110/65 on the same device
    (its clock running on): wearer 2's first value is its own, and a calibrate right after is against wearer 2's
    estimates only (wearer 1's three queued ones would outvote its two in the median)."""
    x1, x2 = simulated_ppg(70, 9, FS, seed=11), simulated_ppg(80, 6, FS, seed=12)
    with stepped_daemon(est, **CAL) as daemon:
        backend = daemon.worker.backend
        backend.plan.extend([WEARER_1] * 6 + [WEARER_2] * 3)
        seq = send(daemon, "watch", x1[:750], T0)  # windows ending at 4, 5, 6 s
        assert values(drain(daemon)) == [WEARER_1] * 3
        send(daemon, "watch", x1[750:], T0 + 6, seq)  # 7, 8 and 9 s: queued, not yet at the model
        assert daemon.parts.batcher.qsize() == 3
        assert daemon.on_control(FORGET) == {"ok": True, "known": True}
        seq = send(daemon, "watch", x2[:625], T0 + 9)  # wearer 2: windows ending at 13 and 14 s
        got = drain(daemon)
        old, new = got[:3], got[3:]
        assert values(old) == [WEARER_1] * 3 and not any(e["calibrated"] for e in old)  # still published
        assert values(new[:1]) == [WEARER_2] and values(new[:1], "sbp_window") == [WEARER_2]
        assert values(new) == [WEARER_2] * 2 and not any(e["calibrated"] for e in new)
        assert daemon.on_control(CALIBRATE).items() >= {"ok": True, "applied": True}.items()  # wearer 2's estimates
        send(daemon, "watch", x2[625:750], T0 + 14, seq)
        (after,) = drain(daemon)
        assert after["calibrated"] and values([after], "sbp_window") == [CUFF]
        assert values([after]) == [CUFF]  # the smoothing started again at the calibration
        assert not backend.plan


def test_windows_in_flight_across_forget_and_a_calibrate_before_they_land(est):
    """Wearer 1's windows are at the backend when the device is forgotten; wearer 2 starts and is calibrated
    before their answers are handled: they go out as they were and leave wearer 2's reference alone."""
    x1, x2 = simulated_ppg(70, 8, FS, seed=13), simulated_ppg(80, 6, FS, seed=14)
    with stepped_daemon(est, **CAL) as daemon:
        daemon.worker.backend.plan.extend([WEARER_1] * 5 + [WEARER_2] * 2)
        seq = send(daemon, "watch", x1[:750], T0)
        drain(daemon)
        send(daemon, "watch", x1[750:], T0 + 6, seq)
        in_flight = daemon.worker.submit(daemon.parts.batcher.next_batch(timeout_s=0.0))  # at the backend
        assert daemon.on_control(FORGET)["known"]
        send(daemon, "watch", x2[:625], T0 + 8)
        reply = daemon.on_control(CALIBRATE)
        assert reply.items() >= {"ok": True, "applied": False}.items()  # wearer 2 has no estimate yet
        old = [e for _, e in daemon.worker.finish(in_flight)]
        assert values(old) == [WEARER_1] * 2 and values(old, "sbp_window") == [WEARER_1] * 2
        assert not any(e["calibrated"] for e in old)
        first, second = drain(daemon)
        assert not first["calibrated"] and values([first]) == [WEARER_2]  # one estimate: not formed yet
        assert second["calibrated"] and values([second], "sbp_window") == [CUFF] and values([second]) == [CUFF]


# ---------------------------------------------------------------- the span holds every estimate in it


def test_a_60_s_span_at_a_half_second_hop_takes_the_median_of_all_its_estimates(est):
    """121 estimates, 0.5 s apart, within ±30 s of the cuff reading, rising 1 mmHg each: the reference is the
    middle one (the reading's own time), not the median of the last few dozen."""
    sections = {"windowing": {"window_s": 4.0, "hop_s": 0.5}, "calibration": {"span_s": 60.0, "min_estimates": 3}}
    c = build(load_daemon_config(None, [sections]), est).calibrations  # the daemon's own, as it builds them
    ts = [T0 - 30 + 0.5 * i for i in range(121)]
    for i, t in enumerate(ts[:61]):
        c.apply("d", t, np.array([100.0 + i, 80.0 - 0.25 * i]))
    assert c.calibrate("d", 130.0, 85.0, t=T0)
    for i, t in enumerate(ts[61:], start=61):
        c.apply("d", t, np.array([100.0 + i, 80.0 - 0.25 * i]))
    after = c.apply("d", T0 + 30.5, np.array([170.0, 70.0]))  # past the span: the reference is frozen
    reference = np.median([[100.0 + i, 80.0 - 0.25 * i] for i in range(121)], axis=0)
    assert tuple(reference) == (160.0, 65.0)
    np.testing.assert_allclose(after.row, np.array([130.0, 85.0]) + [170.0, 70.0] - reference)
