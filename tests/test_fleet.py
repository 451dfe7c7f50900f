"""The synthetic fleet: physiology it promises (rate, notch, wander, BP), faults it injects, determinism, live use."""

import numpy as np
import pytest
from scipy import signal
from zmq_helpers import client, running_daemon

from p2p_stream.ppg.quality import ppg_quality
from p2p_stream.tools.bridges.fleet import Fleet, FleetConfig


def record(fleet: Fleet, seconds: float) -> dict[str, list]:
    out: dict[str, list] = {}
    for _ in range(int(round(seconds / fleet.config.chunk_s))):
        for m in fleet.tick():
            out.setdefault(m.device, []).append(m)
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_heart_rate_matches_each_device(seed):
    fleet = Fleet(FleetConfig(devices=6, hrv=0.0, seed=seed))
    recs = record(fleet, 10)
    for i, device in enumerate(fleet.ids):
        x = np.concatenate([m.ppg for m in recs[device]])
        q = ppg_quality(x, fleet.fs[i])
        assert q.ok and q.hr_bpm == pytest.approx(fleet.hr0[i], abs=1.5)  # BP drift moves the rate ≤ 1.6 %


def test_mixed_rates_and_message_sizes():
    fleet = Fleet(FleetConfig(devices=6))
    msgs = fleet.tick()
    assert sorted({m.fs for m in msgs}) == [100.0, 125.0, 200.0]
    assert {len(m.ppg) for m in msgs if m.fs == 200.0} == {40}


def test_dicrotic_notch_and_respiratory_wander():
    fleet = Fleet(FleetConfig(devices=1, rates_hz=(125.0,), hrv=0.0, noise=0.0, seed=3))
    x = np.concatenate([m.ppg for m in record(fleet, 30)["sim00000"]]).astype(float)
    beat_period = int(round(125 * 60 / fleet.hr0[0]))
    peaks, _ = signal.find_peaks(x, distance=int(beat_period * 0.2))
    # Two local maxima per beat: the systolic peak and the dicrotic wave after the notch.
    assert len(peaks) == pytest.approx(2 * 30 * fleet.hr0[0] / 60, rel=0.1)
    f, p = signal.welch(x - x.mean(), fs=125, nperseg=2048)
    resp = (f > fleet.resp[0] - 0.05) & (f < fleet.resp[0] + 0.05)
    between = (f > 0.5) & (f < 0.8 * fleet.hr0[0] / 60)
    assert p[resp].max() > 10 * p[between].mean()


def test_bp_trajectory_is_sent_as_reference():
    fleet = Fleet(FleetConfig(devices=3, seed=4))
    msgs = record(fleet, 5)
    for i, device in enumerate(fleet.ids):
        refs = np.array([m.ref for m in msgs[device]])
        assert refs[:, 0] == pytest.approx(fleet.sbp0[i], abs=9) and (refs[:, 1] < refs[:, 0]).all()


def test_motion_artifacts_and_dropouts():
    calm = Fleet(FleetConfig(devices=20, seed=5))
    rough = Fleet(FleetConfig(devices=20, seed=5, motion_per_min=30, dropout_per_min=10))
    calm_msgs, rough_msgs = record(calm, 20), record(rough, 20)
    assert sum(map(len, rough_msgs.values())) < sum(map(len, calm_msgs.values()))  # dropped messages
    gaps = sum(int(np.any(np.diff([m.seq for m in ms]) > 1)) for ms in rough_msgs.values())
    assert gaps >= 10  # seq numbers skip over the dropouts

    def roughness(recs):  # sample-to-sample jumps: motion makes them much larger
        return np.median([np.std(np.diff(np.concatenate([m.ppg for m in ms]))) for ms in recs.values()])

    assert roughness(rough_msgs) > 1.5 * roughness(calm_msgs)


def test_same_seed_same_fleet():
    a, b = Fleet(FleetConfig(devices=4, seed=9)), Fleet(FleetConfig(devices=4, seed=9))
    for _ in range(5):
        for ma, mb in zip(a.tick(), b.tick()):
            np.testing.assert_array_equal(ma.ppg, mb.ppg)


def test_fleet_through_the_daemon():
    from p2p_stream import Estimator
    from p2p_stream.wire.protocol import encode_ingest

    fleet = Fleet(FleetConfig(devices=30, seed=6))
    with running_daemon(Estimator.load()) as (daemon, addresses), client(addresses) as c:
        for _ in range(30):  # 6 s of data for 30 devices, as fast as it goes
            for m in fleet.tick():
                c.pub.send_multipart(encode_ingest(m.device, m.seq, 1.7e9 + m.t0, m.fs, m.ppg, ref=m.ref))
        got = c.estimates(lambda g: len({e["device"] for e in g}) == 30)
    assert all(e["ok"] for e in got) and {e["window_s"] for e in got} == {4.0}


def test_fleet_cli_runs_against_a_daemon():
    import os
    import subprocess
    import sys

    from p2p_stream import Estimator

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with running_daemon(Estimator.load()) as (daemon, addresses), client(addresses) as c:
        cmd = [
            sys.executable,
            "simulators/fleet.py",
            "--devices",
            "12",
            "--duration-s",
            "5",
            "--ingest",
            addresses["ingest"],
            "--motion-per-min",
            "6",
        ]
        proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        got = c.estimates(lambda g: len({e["device"] for e in g}) == 12)
    assert "sent 300 messages" in proc.stderr  # 12 devices × 25 chunks of 0.2 s
    assert {e["device"] for e in got} == {f"sim{i:05d}" for i in range(12)}
