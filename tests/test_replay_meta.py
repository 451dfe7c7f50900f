"""Subject facts in the replay CSV: optional `age` / `sex` columns, read per device and sent as the ingest `meta`."""

import math
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import zmq
from zmq_helpers import ipc_addresses

from p2p_stream.errors import DatasetError
from p2p_stream.offline.datasets import load_ppg_bp, load_replay_csv, read_replay_csv, write_replay_csv
from p2p_stream.offline.datasets.replay_csv import Recording
from p2p_stream.tools.bridges.convert import convert
from p2p_stream.tools.bridges.replay import Replayer, fan_out, wait_for_subscriber
from p2p_stream.tools.demo import demo_recording
from p2p_stream.wire.protocol import decode_ingest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def csv_text(rows_per_device: dict[str, tuple[str, str]], n: int = 200, fs: float = 100.0) -> str:
    """A replay CSV with age and sex columns: device → (age cell, sex cell) on every row."""
    lines = ["device,t,ppg,sbp_ref,dbp_ref,age,sex"]
    for device, (age, sex) in rows_per_device.items():
        lines += [f"{device},{i / fs:.4f},{math.sin(i / 7):.4f},120,80,{age},{sex}" for i in range(n)]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- reading


def test_age_and_sex_present_blank_and_partial(tmp_path):
    path = tmp_path / "r.csv"
    text = csv_text({"w1": ("54", "F"), "w2": ("", ""), "w3": ("", "m"), "w4": ("61.5", "")})
    # w5 states its facts on its first row only: the blank rows after it do not contradict it.
    text += "w5,0.0,1,,,70,M\n" + "".join(f"w5,{i / 100:.2f},1,,,,\n" for i in range(1, 50))
    path.write_text(text)
    recs = {r.device: r for r in read_replay_csv(path)}
    assert (recs["w1"].age, recs["w1"].sex) == (54.0, "F")
    assert np.isnan(recs["w2"].age) and recs["w2"].sex == ""
    assert np.isnan(recs["w3"].age) and recs["w3"].sex == "M"  # either case, kept as M/F
    assert (recs["w4"].age, recs["w4"].sex) == (61.5, "")
    assert (recs["w5"].age, recs["w5"].sex) == (70.0, "M") and recs["w5"].ppg.size == 50
    assert recs["w1"].meta() == {"age": 54, "sex": "F"} and isinstance(recs["w1"].meta()["age"], int)
    assert recs["w2"].meta() is None and recs["w3"].meta() == {"sex": "M"} and recs["w4"].meta() == {"age": 61.5}


def test_age_and_sex_absent(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("device,t,ppg,comment\n" + "".join(f"d,{i / 100},{i % 7},x\n" for i in range(300)))
    (rec,) = read_replay_csv(path)
    assert np.isnan(rec.age) and rec.sex == "" and rec.meta() is None
    one = tmp_path / "one.csv"
    one.write_text("\n".join(str(v) for v in range(100)))
    (rec,) = read_replay_csv(one, fs=50.0)
    assert np.isnan(rec.age) and rec.sex == ""


@pytest.mark.parametrize(
    "age, sex, message",
    [
        ("old", "F", r"bad.csv:2: age 'old' is not a number of years"),
        ("-3", "F", r"bad.csv:2: age '-3' is not a number of years"),
        ("nan", "F", r"bad.csv:2: age 'nan' is not a number of years"),
        ("54", "female", r"bad.csv:2: sex 'female' must be M, F or blank"),
        ("54", "X", r"bad.csv:2: sex 'X' must be M, F or blank"),
    ],
)
def test_bad_age_or_sex_names_file_line_and_value(tmp_path, age, sex, message):
    path = tmp_path / "bad.csv"
    path.write_text(csv_text({"w1": (age, sex)}))
    with pytest.raises(DatasetError, match=message):
        read_replay_csv(path)


def test_a_device_whose_age_or_sex_changes_is_an_error(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("device,t,ppg,age,sex\nw1,0.00,1,54,F\nw2,0.00,1,30,M\nw1,0.01,2,54.0,F\nw1,0.02,3,55,F\n")
    with pytest.raises(DatasetError, match=r"bad.csv:5: device 'w1' has age '55' here but 54.0 on line 2"):
        read_replay_csv(path)
    path.write_text("device,t,ppg,age,sex\nw1,0.00,1,54,F\nw1,0.01,2,54,M\n")
    with pytest.raises(DatasetError, match=r"bad.csv:3: device 'w1' has sex 'M' here but 'F' on line 2"):
        read_replay_csv(path)


def test_write_read_round_trip_and_window_set(tmp_path):
    rng = np.random.default_rng(0)
    n = 1250
    recs = [
        Recording("a", 125.0, rng.normal(size=n), np.full(n, 120.0), np.full(n, 80.0), 54.0, "F"),
        Recording("b", 125.0, rng.normal(size=n), np.full(n, 130.0), np.full(n, 85.0)),
    ]
    path = tmp_path / "r.csv"
    write_replay_csv(path, recs)
    assert path.read_text().splitlines()[0] == "device,t,ppg,sbp_ref,dbp_ref,age,sex"
    back = read_replay_csv(path)
    assert (back[0].age, back[0].sex) == (54.0, "F") and np.isnan(back[1].age) and back[1].sex == ""
    ws = load_replay_csv(path, window_s=10)
    assert ws.age[ws.subject == "a"].tolist() == [54.0] and ws.sex[ws.subject == "a"].tolist() == ["F"]
    assert np.isnan(ws.age[ws.subject == "b"]).all() and ws.sex[ws.subject == "b"].tolist() == [""]
    # Without any facts the file keeps the contract's five columns.
    write_replay_csv(path, recs[1:])
    assert path.read_text().splitlines()[0] == "device,t,ppg,sbp_ref,dbp_ref"


def test_converter_writes_the_subjects_age_and_sex(ppg_bp_sample, tmp_path):
    out = tmp_path / "r.csv"
    convert("ppg_bp", str(ppg_bp_sample), out, fs=250.0, subjects=["2", "231"])
    ws = load_ppg_bp(ppg_bp_sample, fs=250.0, window_s=2.1)
    for rec in read_replay_csv(out):
        subject = rec.device.removeprefix("ppgbp-")
        assert rec.age == ws.age[ws.subject == subject][0] and np.isfinite(rec.age)
        assert rec.sex == ws.sex[ws.subject == subject][0] and rec.sex in ("M", "F")


def test_bundled_demo_has_every_subjects_age_and_sex():
    recs = read_replay_csv(demo_recording())
    assert len(recs) == 8
    assert all(18 <= r.age <= 100 and r.sex in ("M", "F") for r in recs), [(r.device, r.age, r.sex) for r in recs]


# ---------------------------------------------------------------- on the wire


class IngestListener:
    """A real SUB bound on ipc://, subscribed to every ingest topic as the daemon's ingest is, read in its own thread.

    A bound socket takes in a new peer (and so sends it our subscription) only while its own thread calls into it,
    so the listener polls from the start, as the daemon's loop does.
    """

    def __init__(self, address: str) -> None:
        self.address, self.got = address, []
        self.ready, self.stop = threading.Event(), threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.ready.wait(10)

    def _run(self) -> None:
        ctx = zmq.Context()
        sub = ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.RCVHWM, 0)
        sub.setsockopt(zmq.SUBSCRIBE, b"ppg.")
        sub.bind(self.address)
        self.ready.set()
        try:
            while not self.stop.is_set():
                if sub.poll(50):
                    self.got.append(decode_ingest(sub.recv_multipart()))
        finally:
            ctx.destroy(linger=0)

    def wait_for(self, expected: int, timeout_s: float = 30.0) -> list:
        deadline = time.monotonic() + timeout_s
        while len(self.got) < expected and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)  # anything beyond `expected` would be a bug too: let it arrive
        self.stop.set()
        self.thread.join(5)
        return self.got


@pytest.fixture
def listener():
    with ipc_addresses() as addresses:
        lis = IngestListener(addresses["ingest"])
        try:
            yield lis
        finally:
            lis.stop.set()
            lis.thread.join(5)


def test_replay_cli_sends_each_devices_meta_with_every_message(tmp_path, listener):
    address = listener.address
    path = tmp_path / "r.csv"
    path.write_text(csv_text({"w1": ("54", "F"), "w2": ("", ""), "w3": ("", "M")}, n=200))
    cmd = [sys.executable, "simulators/replay.py", str(path), "--ingest", address, "--speed", "100"]
    proc = subprocess.run([*cmd, "--wait-s", "30"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    got = listener.wait_for(3 * 8)  # 200 samples in chunks of 25, per device
    assert len(got) == 24 and {m.device for m in got} == {"w1", "w2", "w3"}
    expected = {"w1": {"age": 54.0, "sex": "F"}, "w2": None, "w3": {"sex": "M"}}
    for m in got:
        assert m.meta == expected[m.device], (m.device, m.seq, m.meta)


def test_fanned_out_devices_carry_their_recordings_meta(listener):
    address = listener.address
    recs = read_replay_csv(demo_recording())
    ctx = zmq.Context()
    pub = ctx.socket(zmq.XPUB)
    pub.setsockopt(zmq.LINGER, 2000)
    pub.setsockopt(zmq.SNDHWM, 0)
    try:
        pub.connect(address)
        wait_for_subscriber(pub, address, timeout_s=30)
        feeds = fan_out(recs, 12)
        sent = Replayer(feeds, pub, chunk=525, speed=1000.0, loop=False).run()
    finally:
        pub.close()
        ctx.term()
    got = listener.wait_for(sent)
    assert sent == 12 * 3 and len(got) == sent
    source = {f.device: f.rec for f in feeds}
    for m in got:
        rec = source[m.device]
        assert m.meta == {"age": rec.age, "sex": rec.sex}, (m.device, m.meta)
