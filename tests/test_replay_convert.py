"""Replay and converter: datasets → replay CSV → live wearables → daemon → subscriber, with the shipped model."""

import os
import subprocess
import sys
import threading

import numpy as np
import pytest
import zmq
from zmq_helpers import Client, running_daemon

from p2p_stream.offline.datasets import load_ppg_bp, load_replay_csv, read_replay_csv
from p2p_stream.tools.bridges.convert import convert
from p2p_stream.tools.bridges.replay import Replayer, fan_out, wait_for_subscriber
from p2p_stream.tools.demo import demo_recording

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_converter_round_trips_ppg_bp(ppg_bp_sample, tmp_path):
    out = tmp_path / "r.csv"
    recs = convert("ppg_bp", str(ppg_bp_sample), out, fs=250.0, subjects=["2", "231"])
    assert [r.device for r in recs] == ["ppgbp-2", "ppgbp-231"]
    back = read_replay_csv(out)
    assert [r.device for r in back] == ["ppgbp-2", "ppgbp-231"] and back[0].fs == pytest.approx(250.0)
    assert np.all(back[0].sbp_ref == 161) and np.all(back[0].dbp_ref == 89)
    # Windowing the CSV at the segment length gives back exactly the dataset's windows.
    direct = load_ppg_bp(ppg_bp_sample, fs=250.0, window_s=2.1)
    replayed = load_replay_csv(out, fs=250.0, window_s=2.1)
    for device, subject in (("ppgbp-2", "2"), ("ppgbp-231", "231")):
        np.testing.assert_allclose(
            replayed.x[replayed.subject == device], direct.x[direct.subject == subject], rtol=1e-5
        )


def test_converter_refuses_unknown_subjects(ppg_bp_sample, tmp_path):
    from p2p_stream.errors import P2PError

    with pytest.raises(P2PError, match=r"subjects \['999'\] are not in"):
        convert("ppg_bp", str(ppg_bp_sample), tmp_path / "x.csv", 125.0, subjects=["999"])


def test_bundled_demo_replays_through_the_daemon(est):
    recs = read_replay_csv(demo_recording())
    assert len(recs) == 8 and all(r.fs == pytest.approx(250.0) for r in recs)
    with running_daemon(est, windowing={"window_s": 2.1, "hop_s": 2.1}) as (daemon, addresses):
        c = Client(addresses)
        try:
            pub = c.ctx.socket(zmq.XPUB)
            pub.setsockopt(zmq.LINGER, 0)
            pub.connect(addresses["ingest"])
            wait_for_subscriber(pub, addresses["ingest"], timeout_s=30)
            c._wait_subscribed(__import__("time").monotonic() + 30)
            Replayer(fan_out(recs, 0), pub, chunk=25, speed=50.0, loop=False).run()
            # Each segment is a window; each join between them a break (a `gap` estimate, not a window).
            got = [e for e in c.estimates(lambda g: sum(e.get("reason") != "gap" for e in g) >= 3 * 8)
                   if e.get("reason") != "gap"]  # fmt: skip
        finally:
            c.close()
    for rec in recs:
        mine = [e for e in got if e["device"] == rec.device]
        windows = rec.ppg.reshape(3, 525)  # three 2.1 s segments at 250 Hz
        own = [[e["sbp_window"], e["dbp_window"]] for e in mine]
        # Replay sends the subject's age and sex (the demo CSV's columns) as meta; the daemon passes them on.
        assert rec.meta() and set(rec.meta()) == {"age", "sex"}
        np.testing.assert_allclose(own, est.predict(windows, 250.0, meta=rec.meta())[:, :2], atol=0.02)
        assert all(e["ref_sbp"] == rec.sbp_ref[0] and e["ref_dbp"] == rec.dbp_ref[0] for e in mine)


def test_replay_cli_fans_out_devices(est, tmp_path):
    with running_daemon(est, windowing={"window_s": 2.1, "hop_s": 2.1}) as (daemon, addresses):
        c = Client(addresses)
        try:
            c._wait_subscribed(__import__("time").monotonic() + 30)
            cmd = [
                sys.executable,
                "simulators/replay.py",
                str(demo_recording()),
                "--ingest",
                addresses["ingest"],
                "--speed",
                "50",
                "--devices",
                "20",
                "--wait-s",
                "30",
            ]
            proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
            assert proc.returncode == 0, proc.stderr
            got = c.estimates(lambda g: len({e["device"] for e in g}) >= 20)
        finally:
            c.close()
    devices = {e["device"] for e in got}
    assert "ppgbp-19-00000" in devices and "ppgbp-116-00005" in devices and len(devices) == 20


def test_replay_cli_errors(tmp_path):
    bad = tmp_path / "x.csv"
    bad.write_text("1.0\n2.0\n")
    proc = subprocess.run(
        [sys.executable, "simulators/replay.py", str(bad), "--wait-s", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "--fs" in proc.stderr


def test_replay_waits_for_a_daemon_then_gives_up_clearly():
    from p2p_stream.errors import P2PError

    ctx = zmq.Context()
    pub = ctx.socket(zmq.XPUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.connect("ipc:///tmp/p2p-nobody-listens")
    try:
        with pytest.raises(
            P2PError, match="no subscription arrived from a daemon at ipc:///tmp/p2p-nobody-listens within 0.3 s"
        ):
            wait_for_subscriber(pub, "ipc:///tmp/p2p-nobody-listens", timeout_s=0.3)
    finally:
        ctx.destroy(linger=0)


def test_replay_stops_on_request():
    recs = read_replay_csv(demo_recording())
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUB)
    sock.setsockopt(zmq.LINGER, 0)
    stop = threading.Event()
    stop.set()
    try:
        assert Replayer(fan_out(recs, 0), sock, 25, 1.0, loop=True).run(stop=stop) <= len(recs)
    finally:
        ctx.destroy(linger=0)


def test_converter_pulsedb_gives_per_window_references(tmp_path):
    from test_datasets import write_pulsedb

    mat = write_pulsedb(tmp_path / "VitalDB_CalFree_Test_Subset.mat")
    recs = convert("pulsedb", str(mat), tmp_path / "p.csv", fs=125.0)
    by_device = {r.device: r for r in read_replay_csv(tmp_path / "p.csv")}
    assert set(by_device) == {"pulsedb-p000123", "pulsedb-p000456", "pulsedb-3001"} and len(recs) == 3
    two = by_device["pulsedb-p000123"]  # two 10 s segments with their own ABP-derived labels
    assert two.ppg.size == 2500
    assert set(two.sbp_ref[:1250]) == {120.0} and set(two.sbp_ref[1250:]) == {121.0}
