"""Replay that fits the data (issue 13, item 5): a join between recorded segments is a break, never inside a window."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
from helpers import simulated_ppg
from zmq_helpers import ROOT, Subscriber, daemon_process, ipc_addresses, wait_ready

from p2p_stream.offline.datasets.replay_csv import Recording, load_replay_csv, read_replay_csv, write_replay_csv
from p2p_stream.tools.bridges.replay import window_warning

FS = 125.0
SEGMENTS_S = (3.0, 6.0, 3.0)  # only the middle one holds a 4 s window


def three_segments(tmp_path) -> tuple:
    x = np.concatenate([simulated_ppg(70, s, FS, seed=k) for k, s in enumerate(SEGMENTS_S)])
    lengths = [int(s * FS) for s in SEGMENTS_S]
    starts = tuple(int(v) for v in np.cumsum([0, *lengths[:-1]]))
    rec = Recording("joined", FS, x, np.full(x.size, 120.0), np.full(x.size, 80.0), 50.0, "F", starts)
    path = tmp_path / "joined.csv"
    write_replay_csv(path, [rec])
    return path, rec


def test_joins_survive_the_csv_and_offline_windows_stay_within_a_segment(tmp_path):
    path, rec = three_segments(tmp_path)
    (back,) = read_replay_csv(path)
    assert back.starts == rec.starts and np.allclose(back.ppg, rec.ppg, rtol=1e-5)
    assert abs(back.fs - FS) < 1e-6  # the gaps in t do not change the rate
    windows = load_replay_csv(path, fs=FS, window_s=4.0, hop_s=1.0)
    assert len(windows.sbp) == 3  # 4 s windows every 1 s in the 6 s segment; none across a join (9 if joined)


def test_replay_warns_when_no_window_fits_a_segment(tmp_path):
    _, rec = three_segments(tmp_path)
    message = window_warning([rec], window_s=10.0)
    assert message is not None and "--window-s 6" in message and "at most 6.00 s" in message
    assert window_warning([rec], window_s=6.0) is None


def test_a_daemon_fed_by_replay_cuts_no_window_across_a_join(tmp_path):
    path, _ = three_segments(tmp_path)
    with ipc_addresses() as a, daemon_process(a) as proc:  # 4 s windows, 1 s hop
        wait_ready(a["control"])
        sub = Subscriber(a["publish"])
        try:
            replay = subprocess.run(
                [sys.executable, "-m", "p2p_stream.tools.bridges.replay", str(path), "--ingest", a["ingest"],
                 "--speed", "4", "--wait-s", "30"], cwd=ROOT, capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert replay.returncode == 0, replay.stderr
            assert "cuts no window" in replay.stderr  # it cannot know this daemon's windows: it warns of the default
            sub.collect(lambda g: sum(1 for _, e in g if e.get("reason") != "gap") >= 3, 30)
            settle = time.monotonic() + 2.0  # anything more (a window across a join) would come within this
            sub.collect(lambda g: time.monotonic() >= settle, 10)
        finally:
            sub.close()
        assert proc.poll() is None
    windows = [e for _, e in sub.got if e.get("reason") != "gap"]
    gaps = [e for _, e in sub.got if e.get("reason") == "gap"]
    assert len(windows) == 3, windows  # before joins were marked: 9 windows, 6 of them across a join
    assert len(gaps) >= 1  # the join after the 6 s segment broke a run that had samples
