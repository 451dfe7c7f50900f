"""The daemon on real ZeroMQ sockets: streamed estimates equal offline ones; gaps, duplicates, NaN, rates, control."""

import numpy as np
import pytest
from helpers import read_segment, simulated_ppg
from zmq_helpers import client, running_daemon

from p2p_stream.ppg.preprocess import cut_windows

FS = 125.0
T0 = 1_700_000_000.0


def of(device):
    return lambda e: e["device"] == device


def offline(est, x, fs, window_s=4.0, hop_s=1.0):
    windows = cut_windows(np.asarray(x, dtype=np.float32), int(round(window_s * fs)), int(round(hop_s * fs)))
    return windows, est.predict(windows, fs)


def test_streamed_recording_matches_offline_estimator(est):
    x = simulated_ppg(72, 12, FS, seed=1)
    windows, expected = offline(est, x, FS)
    with running_daemon(est) as (daemon, addresses), client(addresses) as c:
        c.stream("watch-1", x, FS, chunk=25, ref=(121.0, 79.0))
        got = c.estimates(lambda g: len(g) >= len(windows))
    assert [e["seq"] for e in got] == list(range(len(windows)))
    assert all(e["ok"] and e["device"] == "watch-1" for e in got)
    own = np.array([[e["sbp_window"], e["dbp_window"]] for e in got])
    np.testing.assert_allclose(own, expected[:, :2], atol=0.02)
    # Published sbp/dbp: the mean of the last three windows (smoothing.windows = 3 by default).
    smoothed = [own[max(0, i - 2) : i + 1].mean(axis=0) for i in range(len(own))]
    np.testing.assert_allclose([[e["sbp"], e["dbp"]] for e in got], smoothed, atol=0.02)
    ends = 4 * FS + np.arange(len(windows)) * FS  # run length at each window's end
    np.testing.assert_allclose([e["t"] for e in got], T0 + (ends - 1) / FS)
    e = got[0]
    assert e["window_s"] == 4.0 and e["hr"] == pytest.approx(72, abs=2) and 0.5 <= e["sqi"] <= 1
    assert (e["ref_sbp"], e["ref_dbp"]) == (121.0, 79.0) and not e["calibrated"]
    assert e["model"] == est.name and e["latency_ms"] >= 0
    # The interval travels with every ok estimate, around the published value, at the model's level.
    offline_interval = est.estimate(windows, FS)
    np.testing.assert_allclose(
        [[e["sbp_lo"], e["sbp_hi"]] for e in got][:1],
        [[offline_interval.lo[0, 0], offline_interval.hi[0, 0]]],
        atol=0.02,
    )
    for e in got:
        assert e["interval"] == est.interval_level == 0.8
        assert e["sbp_lo"] < e["sbp"] < e["sbp_hi"] and e["dbp_lo"] < e["dbp"] < e["dbp_hi"]


def test_real_1khz_recording_odd_chunks(est):
    x = read_segment("231_1")  # 4.2 s of real PPG at 1 kHz
    windows, expected = offline(est, x, 1000.0)
    with running_daemon(est) as (daemon, addresses), client(addresses) as c:
        c.stream("finger", x, 1000.0, chunk=333)
        got = c.estimates(lambda g: len(g) >= len(windows))
    np.testing.assert_allclose([[e["sbp_window"], e["dbp_window"]] for e in got], expected[:, :2], atol=0.02)


@pytest.mark.parametrize("fs", [100.0, 200.0])
def test_devices_at_other_rates(est, fs):
    x = simulated_ppg(66, 8, fs, seed=2)
    windows, expected = offline(est, x, fs)
    with running_daemon(est) as (daemon, addresses), client(addresses) as c:
        c.stream(f"dev-{int(fs)}", x, fs, chunk=int(fs // 5))
        got = c.estimates(lambda g: len(g) >= len(windows))
    assert all(e["ok"] and e["window_s"] == 4.0 for e in got)
    assert got[0]["hr"] == pytest.approx(66, abs=2)
    np.testing.assert_allclose([[e["sbp_window"], e["dbp_window"]] for e in got], expected[:, :2], atol=0.02)


def test_seq_gap_breaks_the_window(est):
    x = simulated_ppg(70, 12, FS, seed=3)
    with running_daemon(est) as (daemon, addresses), client(addresses) as c:
        # 5 s, then a lost message (seq jumps by 2, samples 625-649 never arrive), then the rest.
        seq = c.stream("d", x[:625], FS)
        c.stream("d", x[650:], FS, t0=T0 + 650 / FS, seq0=seq + 1)
        got = c.estimates(lambda g: any(e["ok"] and e["t"] > T0 + 10 for e in g))
        stats = c.control({"cmd": "stats"})
    gap = [e for e in got if e.get("reason") == "gap"]
    assert len(gap) == 1 and gap[0]["sbp"] is None and not gap[0]["ok"]
    after = [e for e in got if e["ok"] and e["seq"] > gap[0]["seq"]]
    # No window spans the hole: the first one after it ends a full window after the resume.
    assert after[0]["t"] == pytest.approx(T0 + 650 / FS + 4.0 - 1 / FS)
    assert stats["rejected"]["seq_gap"] == 1


def test_time_gap_nan_duplicates_and_reordering(est):
    x = simulated_ppg(70, 16, FS, seed=4)
    with running_daemon(est) as (daemon, addresses), client(addresses) as c:
        seq = c.stream("d", x[:500], FS)  # 20 messages
        c.stream("d", x[475:500], FS, t0=T0 + 475 / FS, seq0=seq - 1)  # the last message again
        c.stream("d", x[450:475], FS, t0=T0 + 450 / FS, seq0=seq - 2)  # an older one, late
        # Contiguous seq but the clock jumped 3 s: a time gap.
        seq = c.stream("d", x[500:1000], FS, t0=T0 + 3 + 500 / FS, seq0=seq)
        bad = x[1000:1025].copy()
        bad[10] = np.nan
        c.stream("d", bad, FS, t0=T0 + 3 + 1000 / FS, seq0=seq)
        c.stream("d", x[1025:1800], FS, t0=T0 + 3 + 1025 / FS, seq0=seq + 1)
        got = c.estimates(lambda g: any(e["ok"] and e["t"] > T0 + 3 + 13 for e in g))
        rejected = c.control({"cmd": "stats"})["rejected"]
    assert rejected["duplicate"] == 1 and rejected["out_of_order"] == 1
    assert rejected["time_gap"] == 1 and rejected["nan"] == 1
    assert [e["reason"] for e in got if not e["ok"]] == ["gap", "gap"]
    ok_t = [e["t"] for e in got if e["ok"]]
    # Windows only from contiguous stretches: ending 4 s after the start, after the time gap, after the NaN.
    assert ok_t[0] == pytest.approx(T0 + 499 / FS)
    assert T0 + 3 + 500 / FS + 4 - 1 / FS - 1e-6 <= ok_t[1]
    nan_t = T0 + 3 + 1010 / FS
    assert all(not (t - 4 + 0.5 / FS < nan_t <= t) for t in ok_t)  # no window holds the NaN sample


def test_quality_rejections_are_published_with_reason(est):
    flat = np.full(int(6 * FS), 2048.0)
    with running_daemon(est) as (daemon, addresses), client(addresses) as c:
        c.stream("loose", flat, FS)
        got = c.estimates(lambda g: len(g) >= 2)
    assert all(not e["ok"] and e["reason"] == "flatline" and e["sbp"] is None and e["dbp"] is None for e in got)


def test_control_commands_and_calibration(est):
    x = simulated_ppg(75, 14, FS, seed=5)
    calibration = {"span_s": 3.0, "min_estimates": 2}
    with running_daemon(est, calibration=calibration) as (daemon, addresses), client(addresses) as c:
        assert c.control({"cmd": "ping"}) == {"ok": True}
        stats = c.control({"cmd": "stats"})
        for key in (
            "uptime_s",
            "devices",
            "windows_total",
            "windows_per_s",
            "batch_mean",
            "latency_p50_ms",
            "latency_p99_ms",
            "rejected",
        ):
            assert key in stats
        # 6 s: windows end at 4, 5, 6 s. The reading is taken at 6 s; its span (3 s) holds the windows ending at
        # 5 and 6 s before it and at 7 s after it, whose median is the reference; the 8 s window freezes it.
        seq = c.stream("cuffed", x[:750], FS)
        first = c.estimates(lambda g: len([e for e in g if e["device"] == "cuffed"]) >= 3)
        assert not any(e["calibrated"] for e in first)
        _, expected = offline(est, x, FS)
        expected = expected[:, :2]
        cuff = (130.0, 82.0)
        reply = c.control({"cmd": "calibrate", "device": "cuffed", "sbp": cuff[0], "dbp": cuff[1]})
        assert reply == {
            "ok": True,
            "applied": True,  # two estimates in its span already: calibration.min_estimates
            "session": first[0]["session"],  # the wearer session streaming now
        }
        c.stream("cuffed", x[750:], FS, t0=T0 + 750 / FS, seq0=seq)
        later = c.estimates(lambda g: len(g) >= 4)
        assert all(e["calibrated"] for e in later)
        reference = np.median(expected[1:4], axis=0)
        idx = [e["seq"] for e in later]
        own = np.array([[e["sbp_window"], e["dbp_window"]] for e in later])
        np.testing.assert_allclose(own, cuff + (expected[idx] - reference), atol=0.05)
        # Smoothing restarted when the calibration began to apply: no uncalibrated value in any mean.
        smoothed = [own[max(0, i - 2) : i + 1].mean(axis=0) for i in range(len(own))]
        np.testing.assert_allclose([[e["sbp"], e["dbp"]] for e in later], smoothed, atol=0.02)
        assert c.control({"cmd": "stats"})["devices"] >= 1
        assert c.control({"cmd": "forget", "device": "cuffed"})["ok"]
        assert "cuffed" not in daemon.parts.devices.streams
        c.stream("cuffed", x[:625], FS, t0=T0 + 100)
        fresh = [e for e in c.estimates(lambda g: any(e["t"] > T0 + 100 for e in g)) if e["t"] > T0 + 100]
        assert not fresh[0]["calibrated"]  # forgetting dropped the calibration too


@pytest.mark.parametrize(
    "request_,error",
    [
        ({"cmd": "reboot"}, "unknown cmd 'reboot'; valid: ping, stats, calibrate, forget"),
        ({"nocmd": 1}, "unknown cmd None"),
        ({"cmd": "calibrate", "sbp": 120, "dbp": 80}, "calibrate needs 'device'"),
        ({"cmd": "calibrate", "device": "d", "sbp": "120", "dbp": 80}, "numeric 'sbp' and 'dbp'"),
        ({"cmd": "calibrate", "device": "d", "sbp": 80, "dbp": 120}, "implausible cuff reading"),
        ({"cmd": "forget", "device": "bad id!"}, "forget needs 'device'"),
        ({"cmd": "calibrate", "device": "never-seen", "sbp": 120, "dbp": 80}, "unknown device 'never-seen'"),
        (b"\xc1not msgpack", "malformed request"),
        (b"\x93\x01\x02\x03", "expected a map"),
    ],
)
def test_control_errors_are_clear(est, request_, error):
    with running_daemon(est) as (daemon, addresses), client(addresses) as c:
        reply = c.control(request_)
        assert reply["ok"] is False and error in reply["error"]
        assert c.control({"cmd": "ping"}) == {"ok": True}  # and the daemon carries on


def test_heartbeat(est):
    with running_daemon(est, operation={"heartbeat_s": 0.2}) as (daemon, addresses), client(addresses) as c:
        beat = c.heartbeat()
    assert beat["model"] == est.name and isinstance(beat["rejected"], dict) and beat["uptime_s"] > 0
    # `devices` counts wearables; `backend_device` is where the network runs, `device` its deprecated old name.
    assert (
        isinstance(beat["devices"], int) and beat["backend_device"] == beat["device"] == est.torch_device == est.device
    )


def test_demographics_in_meta_reach_the_model(est):
    x = simulated_ppg(70, 6, FS, seed=6)
    windows = cut_windows(x.astype(np.float32), 500, 125)
    with running_daemon(est) as (daemon, addresses), client(addresses) as c:
        c.stream("old", x, FS, meta={"age": 80, "sex": "M"})
        c.stream("young", x, FS, meta={"age": 25, "sex": "F"})
        got = c.estimates(lambda g: len(g) >= 2 * len(windows))
    for device, meta in (("old", {"age": 80, "sex": "M"}), ("young", {"age": 25, "sex": "F"})):
        mine = [[e["sbp_window"], e["dbp_window"]] for e in got if e["device"] == device]
        np.testing.assert_allclose(mine, est.predict(windows, FS, meta=meta)[:, :2], atol=0.02)
    old = np.mean([e["sbp"] for e in got if e["device"] == "old"])
    young = np.mean([e["sbp"] for e in got if e["device"] == "young"])
    assert old > young + 3


def test_samples_at_the_float32_limit_give_no_number(est):
    x = simulated_ppg(70, 6, FS, seed=9)
    huge = (x - x.mean()) / x.std() * 1e37  # finite float32, but the model's arithmetic overflows
    with running_daemon(est) as (daemon, addresses), client(addresses) as c:
        c.stream("wild", huge, FS)
        got = c.estimates(lambda g: len(g) >= 2)
    for e in got:
        assert e["sbp"] is None or np.isfinite(e["sbp"])
        assert e["ok"] is False or (np.isfinite(e["sbp"]) and np.isfinite(e["dbp"]))
