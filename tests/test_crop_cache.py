"""Crops prepared alone and computed once (issue 17): the daemon's windows share crops, each crop goes through the
network once, and what it publishes equals offline `Estimator.estimate` on the same samples."""

import copy
import os
import signal
import time

import numpy as np
import pytest
from helpers import simulated_ppg
from zmq_helpers import client, ipc_addresses, running_daemon

from p2p_stream import Estimator
from p2p_stream.backends import process
from p2p_stream.backends.analysis import analyse
from p2p_stream.backends.base import Item, Request
from p2p_stream.backends.crop_cache import CropCache
from p2p_stream.backends.process import RESTART_S, ProcessBackend
from p2p_stream.config.daemon import load_daemon_config
from p2p_stream.model.demographics import parse_meta
from p2p_stream.ppg.crops import crop_starts, cut_crops, prepare_rows
from p2p_stream.ppg.preprocess import cut_windows, ppg_prepare
from p2p_stream.stream.daemon import Daemon
from p2p_stream.stream.ingest.ring_buffer import CropAhead, DeviceStream, Window
from p2p_stream.wire.protocol import Ingest, encode_ingest

T0 = 1_700_000_000.0


@pytest.fixture(scope="module")
def est_unshrunk(est) -> Estimator:
    """The shipped network with its deviation kept whole (head gain 1): the shipped head keeps none of it, so its
    estimates would equal the prior whatever the network said, and a wrong crop could not show. Its own metadata:
    the shared `est` stays as shipped."""
    metadata = copy.deepcopy(est.metadata)
    metadata["head"]["gain"] = [1.0, 1.0]
    return Estimator(est.model, metadata)


def pulse_changing(fs: float, seconds: float) -> np.ndarray:
    """A pulse whose rate and shape drift (70 ± 4 bpm, the dicrotic wave 0.2–0.6 of the systolic), so that crops
    differ and so do the network's answers."""
    t = np.arange(int(round(seconds * fs))) / fs
    phase = np.cumsum((70.0 + 4.0 * np.sin(2 * np.pi * t / 29.0)) / 60.0 / fs) % 1.0
    dicrotic = 0.4 + 0.2 * np.sin(2 * np.pi * t / 11.0)
    beat = np.exp(-((phase - 0.15) ** 2) / 0.005) + dicrotic * np.exp(-((phase - 0.45) ** 2) / 0.01)
    noise = np.random.default_rng(0).normal(0.0, 0.02, t.size)
    return (2000.0 + 300.0 * (beat + noise)).astype(np.float32)


@pytest.mark.parametrize(
    ("length", "crop", "starts"),
    [(1000, 200, [0, 200, 400, 600, 800]), (1050, 200, [0, 50, 250, 450, 650, 850]), (150, 200, [0]), (200, 200, [0])],
)
def test_crops_tile_the_window_from_its_end(length, crop, starts):
    assert crop_starts(length, crop).tolist() == starts


def test_a_crop_is_prepared_alone_whatever_window_and_batch_it_is_in():
    x = pulse_changing(100.0, 20.0)
    a, b = x[:1000], x[200:1200]  # two 10 s windows one 2 s hop apart: four crops in common
    ca, cb = cut_crops(a, 200), cut_crops(b, 200)
    np.testing.assert_array_equal(ca[1:], cb[:-1])
    rows = [*ca, *cb, simulated_ppg(70, 2.0, 64.0)]  # two rates in one call
    prepared = prepare_rows(rows, [100.0] * 10 + [64.0])
    for row, fs, got in zip(rows, [100.0] * 10 + [64.0], prepared):
        np.testing.assert_allclose(got, ppg_prepare(row[None], fs)[0], atol=1e-5)


def test_streamed_10_s_windows_every_2_s_equal_offline_and_each_crop_runs_once(est_unshrunk):
    fs = 100.0
    x = pulse_changing(fs, 40.0)
    windows = cut_windows(x, 1000, 200)
    expected = est_unshrunk.estimate(windows, fs)
    assert all(r is None for r in expected.reason)
    assert np.ptp(expected.bp[:, 0]) > 0.3  # the network's answer moves: a wrong crop would show
    # The path this replaced (each window band-passed and normalised whole) answers differently: the test can fail.
    whole = est_unshrunk.infer_prepared(ppg_prepare(windows, fs), np.zeros((len(windows), 4), np.float32))
    assert np.abs(whole[:, :2] - expected.bp).max() > 0.1
    windowing, unsmoothed = {"window_s": 10.0, "hop_s": 2.0}, {"windows": 1}  # each interval its window's own
    with running_daemon(est_unshrunk, windowing=windowing, smoothing=unsmoothed) as (daemon, addresses):
        with client(addresses) as c:
            c.stream("wrist", x, fs, chunk=25)
            got = c.estimates(lambda g: len(g) >= len(windows))
        cache = daemon.parts.backend.crop_cache
    assert [e["seq"] for e in got] == list(range(len(windows))) and all(e["ok"] for e in got)
    np.testing.assert_allclose([[e["sbp_window"], e["dbp_window"]] for e in got], expected.bp, atol=0.02)
    np.testing.assert_allclose([[e["sbp_lo"], e["dbp_lo"]] for e in got], expected.lo, atol=0.02)
    np.testing.assert_allclose([[e["sbp_hi"], e["dbp_hi"]] for e in got], expected.hi, atol=0.02)
    # 40 s hold 20 crops of 2 s; 16 windows of 5 crops each: every crop computed once, the rest reused; the first
    # window's first four computed ahead, as their samples came in, so that window computed only its last.
    assert (cache.computed, cache.warmed, cache.reused) == (20, 4, 5 * len(windows) - 16)


def wait_until(done, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_child_that_hangs_is_stopped_and_replaced(est_unshrunk, monkeypatch):
    """A child that holds a batch past HANG_S (here SIGSTOP) is killed: its batch goes out `backend_unavailable`,
    and a new child answers what comes after."""
    monkeypatch.setattr(process, "HANG_S", 1.0)
    x = pulse_changing(100.0, 12.0)
    windowing = {"window_s": 10.0, "hop_s": 2.0}
    with running_daemon(est_unshrunk, windowing=windowing, model={"inference_process": True}) as (daemon, addresses):
        with client(addresses) as c:
            child = daemon.parts.backend
            c.stream("warm-up", x, 100.0, chunk=25)
            c.estimates(lambda g: any(e["device"] == "warm-up" for e in g))  # the child is up and answering
            os.kill(child.proc.pid, signal.SIGSTOP)
            c.stream("held", x, 100.0, chunk=25)
            held = c.estimates(lambda g: any(e["device"] == "held" for e in g), timeout_s=30.0)
            wait_until(lambda: child.starts == 2, 30.0)
            c.stream("after", x, 100.0, chunk=25)
            after = c.estimates(lambda g: sum(e["device"] == "after" for e in g) >= 2, timeout_s=60.0)
    assert all(e.get("reason") == "backend_unavailable" for e in held if e["device"] == "held")
    assert all(e["ok"] for e in after if e["device"] == "after")


def test_the_child_s_work_gives_each_window_its_own_age_and_sex(est_unshrunk):
    """Without a crop cache the child batches what passed the gate: each keeps its own demographics (the prior's)
    even when a rejected window comes first."""
    fs = 100.0
    good = pulse_changing(fs, 10.0)
    noise = np.random.default_rng(0).normal(size=good.size).astype(np.float32)  # rejected: no pulse
    windows = [Item(d, w, fs, -1, 0) for d, w in (("n", noise), ("old", good), ("young", good))]
    meta = [None, {"age": 80, "sex": "M"}, {"age": 25, "sex": "F"}]
    qualities, rows, _ = analyse(est_unshrunk, Request(windows, parse_meta(meta, 3)), est_unshrunk.infer_prepared)
    expected = est_unshrunk.estimate(np.stack([noise, good, good]), fs, meta)
    assert [q.ok for q in qualities] == [False, True, True]
    np.testing.assert_allclose(rows[1:, :2], expected.bp[1:], atol=1e-3)
    assert rows[1, 0] - rows[2, 0] > 5  # 80-year-old man vs 25-year-old woman: the prior differs


def device_windows(device: str, x: np.ndarray, fs: float, generation: int = 0, hop_s: float = 2.0) -> list[Window]:
    """The windows a DeviceStream cuts from `x` sent in 25-sample messages (10 s windows, 2 s hop)."""
    s = DeviceStream(device, fs, 10.0, hop_s, max_chunk=64, gap_tolerance_s=0.05, generation=generation)
    out = []
    for seq, start in enumerate(range(0, len(x), 25)):
        out += s.push(Ingest(device, seq, T0 + start / fs, fs, x[start : start + 25], None, None), 0.0).windows
    return out


def answers(cache: CropCache, windows: list[Window]) -> np.ndarray:
    return cache.infer(windows, np.zeros((len(windows), 4), np.float32))


def test_the_cache_answers_as_the_estimator_and_holds_one_window_per_device(est_unshrunk):
    x = pulse_changing(100.0, 30.0)
    ws = device_windows("a", x, 100.0)
    cache = CropCache(est_unshrunk, capacity=10, window_s=10.0)
    one_by_one = np.concatenate([answers(cache, [w]) for w in ws])
    crops = np.stack(est_unshrunk.crop_inputs([w.x for w in ws], [100.0] * len(ws)))
    offline = est_unshrunk.infer_prepared(crops, np.zeros((len(ws), 4), np.float32))
    np.testing.assert_allclose(one_by_one, offline, atol=1e-3)
    assert (cache.computed, cache.kept()) == (15, 5)  # 30 s: 15 crops, each once; the latest window's 5 kept
    # windows of one device in one batch share crops too
    in_one_batch = CropCache(est_unshrunk, capacity=10, window_s=10.0)
    np.testing.assert_allclose(answers(in_one_batch, ws), offline, atol=1e-3)
    assert in_one_batch.computed == 15


def test_a_new_stream_or_an_evicted_device_computes_afresh(est_unshrunk):
    x = pulse_changing(100.0, 14.0)
    first, again = device_windows("a", x, 100.0, generation=1), device_windows("a", x, 100.0, generation=2)
    cache = CropCache(est_unshrunk, capacity=1, window_s=10.0)
    answers(cache, first[:1])
    answers(cache, again[1:2])  # the same positions, but another stream of the device: nothing shared
    assert cache.computed == 10
    answers(cache, device_windows("b", x, 100.0)[:1])  # capacity 1: "a" is dropped for "b"
    answers(cache, again[2:3])
    assert (cache.computed, len(cache.devices)) == (20, 1)
    built_elsewhere = Window("c", x[:1000], 100.0, T0, 0.0)  # no stream position: computed, nothing kept
    answers(cache, [built_elsewhere, built_elsewhere])
    assert cache.computed == 30 and "c" not in cache.devices


def test_an_inference_process_answers_as_the_estimator_and_survives_its_own_death(est_unshrunk):
    """`model.inference_process`: the gate and the network in a child process give the offline numbers; killed,
    its batches go out rejected (`backend_unavailable`, counted) and a new child answers the windows after."""
    fs = 100.0
    x = pulse_changing(fs, 40.0)
    windows = cut_windows(x, 1000, 200)
    expected = est_unshrunk.estimate(windows, fs)
    windowing, unsmoothed = {"window_s": 10.0, "hop_s": 2.0}, {"windows": 1}
    with running_daemon(est_unshrunk, windowing=windowing, smoothing=unsmoothed, model={"inference_process": True}) as (
        daemon,
        addresses,
    ):
        with client(addresses) as c:
            c.stream("wrist", x, fs, chunk=25)
            got = c.estimates(lambda g: len(g) >= len(windows))
            child = daemon.parts.backend
            assert isinstance(child, ProcessBackend) and child.caches_crops
            child.proc.kill()
            child.proc.join(timeout=10)
            c.stream("wrist-2", x[:1200], fs, chunk=25)  # its windows meet the dead child
            later = c.estimates(lambda g: any(e["device"] == "wrist-2" for e in g))
            wait_until(lambda: child.starts == 2, RESTART_S + 30.0)  # started off the worker thread
            c.stream("wrist-3", x, fs, chunk=25)  # the new child answers
            after = c.estimates(lambda g: sum(e["device"] == "wrist-3" for e in g) >= len(windows))
    assert [e["seq"] for e in got] == list(range(len(windows))) and all(e["ok"] for e in got)
    np.testing.assert_allclose([[e["sbp_window"], e["dbp_window"]] for e in got], expected.bp, atol=0.02)
    np.testing.assert_allclose([[e["sbp_lo"], e["dbp_lo"]] for e in got], expected.lo, atol=0.02)
    assert any(e.get("reason") == "backend_unavailable" for e in later if e["device"] == "wrist-2")
    third = [e for e in after if e["device"] == "wrist-3"]
    assert all(e["ok"] for e in third) and child.starts == 2
    np.testing.assert_allclose([[e["sbp_window"], e["dbp_window"]] for e in third], expected.bp, atol=0.02)


def test_a_hop_of_part_of_a_crop_keeps_at_most_twice_a_window_of_crops(est_unshrunk):
    """Every 0.4 s a window whose crops are a new phase: crops of five phases lie inside one window, the device
    keeps at most ten (PER_WINDOW × 5), and the answers stay the estimator's."""
    x = pulse_changing(100.0, 20.0)
    ws = device_windows("a", x, 100.0, hop_s=0.4)
    cache = CropCache(est_unshrunk, capacity=10, window_s=10.0)
    kept = []
    got = []
    for w in ws:
        got.append(answers(cache, [w]))
        kept.append(cache.kept())
    crops = np.stack(est_unshrunk.crop_inputs([w.x for w in ws], [100.0] * len(ws)))
    np.testing.assert_allclose(
        np.concatenate(got), est_unshrunk.infer_prepared(crops, np.zeros((len(ws), 4), np.float32)), atol=1e-3
    )
    assert max(kept) == 10 and cache.reused > 0


def test_a_run_s_first_window_has_its_crops_cut_ahead_and_only_its_first():
    x = pulse_changing(100.0, 12.0)
    s = DeviceStream("a", 100.0, 10.0, 2.0, max_chunk=64, gap_tolerance_s=0.05, warm_crop_s=2.0)
    out = []
    for seq, start in enumerate(range(0, 1200, 25)):
        out += s.push(Ingest("a", seq, T0 + start / 100.0, 100.0, x[start : start + 25], None, None), 0.0).windows
    ahead = [w for w in out if isinstance(w, CropAhead)]
    assert [w.end for w in ahead] == [200, 400, 600, 800]  # then windows end at 1000 and 1200: nothing ahead
    assert [w.end for w in out if not isinstance(w, CropAhead)] == [1000, 1200]
    for w in ahead:
        np.testing.assert_array_equal(w.x, x[w.end - 200 : w.end])
    # A time gap restarts the run: its first window's crops are cut ahead again, at positions of the new run.
    later = s.push(Ingest("a", 48, T0 + 60.0, 100.0, x[:250], None, None), 0.0).windows
    assert [(type(w), w.end) for w in later if w.x is not None] == [(CropAhead, 1400)]


def test_crops_cut_ahead_of_windows_that_never_come_are_bounded(est_unshrunk):
    cache = CropCache(est_unshrunk, capacity=10, window_s=10.0)
    x = pulse_changing(100.0, 2.0)
    for k in range(30):  # a device whose runs break before any window: a crop ahead each time
        cache.warm([CropAhead("a", x, 100.0, T0, 0.0, generation=0, end=1000 * k + 200)])
    assert cache.computed == 30 and cache.kept() == cache.max_ahead == 12


def test_a_crop_cut_ahead_that_finds_the_queue_full_is_no_shed_window(est_unshrunk):
    """Queue of one: the first crop cut ahead takes it, the other three go unsaid, and the window itself is the
    one shed window counted."""
    x = pulse_changing(100.0, 10.0)
    with ipc_addresses() as addresses:
        overrides = [
            {"sockets": addresses, "windowing": {"window_s": 10.0, "hop_s": 2.0}},
            {"batching": {"max_queue": 1}, "limits": {"max_clock_skew_s": 1e9}},
        ]
        daemon = Daemon(load_daemon_config(None, overrides), est_unshrunk)
        try:
            for seq, start in enumerate(range(0, 1000, 25)):
                frames = encode_ingest("a", seq, T0 + start / 100.0, 100.0, x[start : start + 25])
                daemon.on_ingest(frames, time.monotonic())
            queued = daemon.parts.batcher.next_batch(timeout_s=0.5)
        finally:
            daemon.close()
    assert [(type(w), w.end) for w in queued] == [(CropAhead, 200)]
    assert daemon.parts.counters.rejected == {"overloaded": 1}
