"""`p2p lsl`: LSL streams → the ingest contract. The pure parts (ids, queries, refusals, message cuts), then real
pylsl outlets in this process → the bridge as a process → a daemon process, whose estimates must equal the offline
`Estimator.predict` on the same samples; a stream that vanishes and returns stays the same device."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import threading
import time
import types
import uuid
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import zmq
from helpers import simulated_ppg
from zmq_helpers import ROOT, Subscriber, daemon_process, ipc_addresses, logged_process, request

from p2p_stream.errors import ConfigError
from p2p_stream.tools.bridges.lsl import (
    Bridge,
    device_for,
    parse_devices,
    predicate,
    refusal,
    runs,
    sanitise,
    unix_minus_lsl,
)
from p2p_stream.wire.protocol import decode_ingest

FS = 125.0
WINDOW = 500  # the daemon process's 4 s windows at 125 Hz

# ---------------------------------------------------------------- pure parts


@pytest.mark.parametrize(
    "text,device",
    [
        ("Polar H10 #1", "Polar_H10__1"),
        ("watch-17", "watch-17"),
        ("a:b.c_d-e", "a:b.c_d-e"),
        ("Ünïcode/ppg", "_n_code_ppg"),
        ("x" * 80, "x" * 64),
        ("", "lsl"),
    ],
)
def test_stream_ids_are_made_to_fit_the_protocol_s_rule(text, device):
    assert sanitise(text) == device


def test_device_ids_come_from_the_mapping_then_source_id_then_name():
    mapping = parse_devices(["src-1=left", "chest strap=right"])
    assert device_for("src-1", "whatever", mapping) == "left"
    assert device_for("", "chest strap", mapping) == "right"
    assert device_for("src-9", "chest strap", mapping) == "right"  # by name when its source_id is not mapped
    assert device_for("src-9", "n", mapping) == "src-9"
    assert device_for("", "My Watch", {}) == "My_Watch"
    assert device_for("anything", "at all", parse_devices(["pulse-1"])) == "pulse-1"  # a bare id: the one stream
    for bad, message in (
        (["src=bad id"], "'bad id' is not a device id"),
        (["a=x", "a=y"], "a is mapped twice"),
        (["x", "a=y"], "a bare ID maps the one stream bridged"),
    ):
        with pytest.raises(ConfigError, match=message):
            parse_devices(bad)


def test_the_lsl_query_names_what_was_given():
    assert predicate("PPG", None, None) == "type='PPG'"
    assert predicate("PPG", "Polar H10", "abc") == "type='PPG' and name='Polar H10' and source_id='abc'"
    assert predicate("", "it's", None) == 'name="it\'s"'
    assert predicate("", None, None) == ""
    assert predicate("PPG", "x", None, "ECG") == "(type='PPG' or type='ECG') and name='x'"
    with pytest.raises(ConfigError, match="both kinds of quote"):
        predicate("PPG", "'\"", None)


def test_streams_the_daemon_cannot_window_are_refused_with_the_reason():
    assert refusal(125.0, 1, False, 0) is None
    assert "irregular" in refusal(0.0, 1, False, 0)
    assert "text" in refusal(125.0, 1, True, 0)
    assert "outside the protocol's 20–10000 Hz" in refusal(5.0, 1, False, 0)
    assert "--channel 2 does not exist; give 0–1" in refusal(125.0, 2, False, 2)


def test_a_message_is_cut_where_the_time_stamps_jump():
    t = 1000.0 + np.arange(10) / FS
    assert runs(t, FS) == [(0, 10)]
    jittered = t + np.random.default_rng(0).uniform(-0.02, 0.02, 10)  # stamped at arrival: jitter is not a gap
    assert runs(jittered, FS) == [(0, 10)]
    t[6:] += 0.5  # samples lost between the 6th and 7th
    assert runs(t, FS) == [(0, 6), (6, 10)]
    t[8:] -= 30  # a clock stepped back
    assert runs(t, FS) == [(0, 6), (6, 8), (8, 10)]


# ---------------------------------------------------------------- the bridge on a fake LSL (no network)


class Lost(RuntimeError):
    pass


class FakeInfo:
    """What a resolver lists about one stream."""

    def __init__(
        self, uid: str, source_id: str, name: str = "wrist", rate: float = FS, host: str = "remote-pc", kind="PPG"
    ) -> None:
        self._uid, self._source_id, self._name, self._rate, self._host = uid, source_id, name, rate, host
        self._type = kind

    def type(self) -> str:
        return self._type

    def uid(self) -> str:
        return self._uid

    def source_id(self) -> str:
        return self._source_id

    def name(self) -> str:
        return self._name

    def nominal_srate(self) -> float:
        return self._rate

    def channel_count(self) -> int:
        return 2

    def channel_format(self) -> int:
        return 1  # cf_float32

    def hostname(self) -> str:
        return self._host


class FakeInlet:
    """An inlet whose chunks the test queues: (samples (n, 2), time stamps on the sender's clock); `Lost` when the
    queue says so. Its sender's clock runs 2.5 s behind ours."""

    correction_s = 2.5

    def __init__(self, info: FakeInfo, **_) -> None:
        self.info, self.chunks, self.closed = info, [], False

    def open_stream(self, timeout: float) -> None:
        pass

    def time_correction(self, timeout: float) -> float:
        return self.correction_s

    def pull_chunk(self, timeout: float, max_samples: int):
        if not self.chunks:
            return [], []
        chunk = self.chunks.pop(0)
        if chunk is Lost:
            raise Lost()
        x, t = chunk
        return x.tolist(), t.tolist()

    def close_stream(self) -> None:
        self.closed = True


class FakeLSL:
    """The few names of pylsl the bridge uses; `streams` is what the network shows, `inlets` what was opened."""

    cf_string = 3
    util = types.SimpleNamespace(LostError=Lost, TimeoutError=TimeoutError)
    LSL_BEHIND_UNIX_S = 1_700_000_000.0  # local_clock() counts from boot; Unix time from 1970

    def __init__(self) -> None:
        self.streams: list[FakeInfo] = []
        self.inlets: dict[str, FakeInlet] = {}
        lsl = self

        class Resolver:
            def __init__(self, pred: str = "") -> None:
                lsl.query = pred

            def results(self) -> list[FakeInfo]:
                return list(lsl.streams)

        self.ContinuousResolver = Resolver

    def StreamInlet(self, info: FakeInfo, **kwargs) -> FakeInlet:  # noqa: N802 — pylsl's name
        self.inlets[info.uid()] = inlet = FakeInlet(info, **kwargs)
        return inlet

    def local_clock(self) -> float:
        return time.time() - self.LSL_BEHIND_UNIX_S


class Sent:
    """A socket that keeps what it is sent, decoded (and so validated) as the daemon would."""

    def __init__(self) -> None:
        self.got = []

    def send_multipart(self, frames: list[bytes]) -> None:
        self.got.append(decode_ingest(frames, channel="ecg" if frames[0].startswith(b"ecg.") else "ppg"))


def test_time_stamps_become_unix_time_through_the_stream_s_clock_correction():
    """A stamp on the sender's clock + its correction + (time.time() − local_clock()) = the sample's Unix time; a
    jump inside a chunk cuts it; the PPG channel is the one asked for; lost and back (a new uid, the same source_id)
    is the same device with its seq counting on."""
    lsl, sock = FakeLSL(), Sent()
    bridge = Bridge(lsl, sock, "type='PPG'", channel=1)
    lsl.streams = [FakeInfo("uid-1", "watch 9")]
    bridge.discover()
    inlet = lsl.inlets["uid-1"]
    x = np.stack([np.zeros(60), np.arange(60.0)], axis=1)  # (60, 2): channel 1 is the PPG
    sender_t0 = 5_000.0  # on the sender's clock
    t = sender_t0 + np.arange(60) / FS
    t[40:] += 0.5  # 0.5 s lost before the 41st sample
    inlet.chunks = [(x[:25], t[:25]), (x[25:], t[25:]), Lost]
    for _ in range(3):  # a pull per tick
        bridge.pump()
    unix_t0 = sender_t0 + FakeInlet.correction_s + FakeLSL.LSL_BEHIND_UNIX_S
    assert [(m.device, m.seq, len(m.ppg)) for m in sock.got] == [
        ("watch_9", 0, 25),
        ("watch_9", 1, 15),
        ("watch_9", 2, 20),
    ]
    assert [m.t0 - unix_t0 for m in sock.got] == pytest.approx([0.0, 25 / FS, 40 / FS + 0.5], abs=1e-3)
    np.testing.assert_array_equal(np.concatenate([m.ppg for m in sock.got]), np.arange(60.0))
    assert inlet.closed and bridge.links == {}  # lost: closed, its device kept for its return

    lsl.streams = [FakeInfo("uid-1", "watch 9"), FakeInfo("uid-2", "watch 9")]  # the dead one is still listed
    bridge.discover()
    assert set(lsl.inlets) == {"uid-1", "uid-2"}  # the dead one not reopened
    lsl.inlets["uid-2"].chunks = [(x[:10], 9_000.0 + np.arange(10) / FS)]
    bridge.pump()
    assert (sock.got[-1].device, sock.got[-1].seq) == ("watch_9", 3)
    assert sock.got[-1].t0 - (9_000.0 + FakeInlet.correction_s + FakeLSL.LSL_BEHIND_UNIX_S) == pytest.approx(
        0, abs=1e-3
    )


def test_an_ecg_stream_of_the_same_source_is_that_device_s_ecg_with_its_own_seq_rate_and_clock():
    lsl, sock = FakeLSL(), Sent()
    bridge = Bridge(lsl, sock, predicate("PPG", None, None, "ECG"), ecg_type="ECG")
    assert lsl.query == "(type='PPG' or type='ECG')"
    lsl.streams = [FakeInfo("uid-p", "strap 1"), FakeInfo("uid-e", "strap 1", rate=250.0, kind="ECG")]
    bridge.discover()
    lsl.inlets["uid-e"].correction_s = 2.53  # its own clock: 30 ms further behind ours than the PPG's
    t = 7_000.0 + np.arange(50) / FS
    lsl.inlets["uid-p"].chunks = [(np.ones((50, 2)), t), (np.ones((25, 2)), 7_000.4 + np.arange(25) / FS)]
    lsl.inlets["uid-e"].chunks = [(np.zeros((100, 2)), 7_000.0 + np.arange(100) / 250.0)]
    bridge.pump()
    bridge.pump()
    got = {(m.channel, m.seq): m for m in sock.got}
    assert sorted(got) == [("ecg", 0), ("ppg", 0), ("ppg", 1)]
    assert {m.device for m in sock.got} == {"strap_1"} and got["ecg", 0].fs == 250.0
    assert got["ecg", 0].t0 - got["ppg", 0].t0 == pytest.approx(0.030, abs=1e-3)  # each through its own correction
    assert bridge.feeds["ecg", "strap_1"].seq == 1 and bridge.feeds["ppg", "strap_1"].seq == 2
    # Without --ecg-type the same ECG stream is just another stream: a PPG waiting for its device's outlet.
    lsl2, sock2 = FakeLSL(), Sent()
    plain = Bridge(lsl2, sock2, "")
    lsl2.streams = [FakeInfo("uid-p", "strap 1"), FakeInfo("uid-e", "strap 1", rate=250.0, kind="ECG")]
    plain.discover()
    assert list(plain.feeds) == [("ppg", "strap_1")] and len(plain.links) == 1


def test_a_second_outlet_for_the_same_device_waits_until_the_first_goes(caplog):
    """Another outlet its pin admits (the same host, source_id and name: the app started twice) waits while the
    first feeds the device and takes over when it goes; another source_id mapped to the same id is refused as a
    lookalike, and a stream the daemon cannot window by its reason, each said once."""
    lsl, sock = FakeLSL(), Sent()
    bridge = Bridge(lsl, sock, "", devices=parse_devices(["pulse-1"]))
    lsl.streams = [FakeInfo("uid-1", "a")]
    bridge.discover()
    lsl.streams += [FakeInfo("uid-2", "a"), FakeInfo("uid-3", "c", rate=0.0), FakeInfo("uid-4", "b")]
    with caplog.at_level("WARNING"):
        bridge.discover()
        bridge.discover()  # each said once
    assert set(lsl.inlets) == {"uid-1"}
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 3, said
    refused, lookalike, waits = said
    assert refused.startswith("LSL stream 'wrist' (source_id 'c', on remote-pc) refused: its rate is irregular")
    assert lookalike.startswith("refusing LSL outlet 'wrist' (source_id 'b', on remote-pc) (uid uid-4) for device ")
    assert waits.startswith("LSL stream 'wrist' (source_id 'a', on remote-pc) waits: it would be device 'pulse-1'")
    lsl.inlets["uid-1"].chunks = [(np.ones((5, 2)), 100 + np.arange(5) / FS), Lost]
    bridge.pump()
    bridge.pump()  # uid-1 is lost...
    bridge.discover()  # ...and uid-2 takes its device over, counting on; uid-4 never
    assert set(lsl.inlets) == {"uid-1", "uid-2"}
    lsl.inlets["uid-2"].chunks = [(np.ones((5, 2)), 200 + np.arange(5) / FS)]
    bridge.pump()
    assert [(m.device, m.seq) for m in sock.got] == [("pulse-1", 0), ("pulse-1", 1)]
    assert bridge.refused == 1


# ---------------------------------------------------------------- real LSL streams

try:
    import pylsl
except (ImportError, RuntimeError):  # not installed, or its liblsl cannot load
    pylsl = None
needs_pylsl = pytest.mark.skipif(pylsl is None, reason="p2p lsl needs pylsl")
if pylsl is not None and "LSLAPICFG" not in os.environ:
    pylsl.set_config_content("[log]\nlevel = -3\n")  # liblsl's own chatter off in this process


def outlet(source_id: str, stream_type: str, name: str = "wrist", rate: float = FS):
    return pylsl.StreamOutlet(pylsl.StreamInfo(name, stream_type, 1, rate, pylsl.cf_float32, source_id))


def push(out, x: np.ndarray, start: float) -> None:
    """Samples `x` stamped from `start` (LSL clock, s) at FS."""
    out.push_chunk(x.reshape(-1, 1), (start + np.arange(len(x)) / FS).tolist())


@contextmanager
def bridge(*flags: str):
    """`p2p lsl` as a process (python -m), its log in a temporary file: `proc.output()`."""
    cmd = [sys.executable, "-m", "p2p_stream.tools.bridges.lsl", "--chunk-s", "0.05", "--wait-s", "60", *flags]
    with logged_process(cmd) as proc:
        yield proc


def wait_for_log(proc, text: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while text not in proc.output():
        assert time.monotonic() < deadline and proc.poll() is None, proc.output()
        time.sleep(0.05)


class Ingest:
    """The daemon's side of the ingest contract, bound in this process: a thread receives (so the SUB sends its
    subscription at once, as a daemon's does) and decodes, validating, every message."""

    def __init__(self, address: str) -> None:
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.SUBSCRIBE, b"ppg.")
        self.sock.bind(address)
        self.got: list = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._receive, daemon=True)
        self.thread.start()

    def _receive(self) -> None:
        while not self.stop.is_set():
            if self.sock.poll(20):
                self.got.append(decode_ingest(self.sock.recv_multipart()))

    def wait(self, until, timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not until(list(self.got)):
            assert time.monotonic() < deadline, f"{len(self.got)} messages: {[(m.device, m.seq) for m in self.got]}"
            time.sleep(0.02)

    def of(self, device: str) -> list:
        return [m for m in self.got if m.device == device]

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        self.ctx.destroy(linger=0)


@needs_pylsl
def test_each_stream_is_a_device_and_a_returning_stream_carries_on(tmp_path):
    """Two streams → two devices; an irregular one refused by name; stream A closed and reopened under the same
    source_id → the same device, seq counting on, t0 jumping by the pause, samples in order."""
    kind = f"PPG-{uuid.uuid4().hex[:8]}"  # this test's streams only, whatever else runs on the network
    x = simulated_ppg(72, 12.0, FS, seed=5).astype(np.float32)
    ingest = Ingest(f"ipc://{tmp_path}/ingest")
    a, b = outlet("A-src", kind, "left wrist"), outlet("", kind, "chest strap/2")
    irregular = outlet("tick", kind, "events", rate=pylsl.IRREGULAR_RATE)
    try:
        with bridge("--type", kind, "--ingest", f"ipc://{tmp_path}/ingest") as proc:
            wait_for_log(proc, "→ device chest_strap_2")  # logged once its inlet is open: it gets every sample
            wait_for_log(proc, "→ device A-src")
            t = pylsl.local_clock()
            for i in range(0, 500, 25):  # 4 s of samples, at 4 × real time
                push(a, x[i : i + 25], t + i / FS)
                push(b, x[i : i + 25], t + i / FS)
                time.sleep(0.05)
            ingest.wait(lambda got: samples(got, "A-src") == 500 and samples(got, "chest_strap_2") == 500)
            del a  # the wearable goes away...
            gc.collect()
            wait_for_log(proc, "lost; device A-src waits for it to come back")
            a = outlet("A-src", kind, "left wrist")  # ...and comes back, a new outlet under the same source_id
            wait_for_log(proc, "is back: device A-src continues at seq")
            pause_s = 30.0
            for i in range(500, 750, 25):
                push(a, x[i : i + 25], t + pause_s + i / FS)
                time.sleep(0.05)
            ingest.wait(lambda got: samples(got, "A-src") == 750)
            log = proc.output()
    finally:
        ingest.close()
    assert "LSL stream 'events' (source_id 'tick'" in log and "its rate is irregular (nominal_srate 0)" in log
    assert {m.device for m in ingest.got} == {"A-src", "chest_strap_2"}  # the irregular stream sent nothing
    assert not irregular.have_consumers()  # not even opened
    for device in ("A-src", "chest_strap_2"):
        got = ingest.of(device)
        assert [m.seq for m in got] == list(range(len(got)))  # one count across both of A's streams: no reset
        assert all(m.fs == FS for m in got)
        pushed = x[:750] if device == "A-src" else x[:500]
        np.testing.assert_array_equal(np.concatenate([m.ppg for m in got]), pushed)  # every sample, in order
        # Each message's t0 is where the last ended, but for one jump in A's: the pause, where its stream went away.
        jumps = {k + 1: m.t0 - (p.t0 + len(p.ppg) / FS) for k, (p, m) in enumerate(zip(got, got[1:]))}
        breaks = {k: jump for k, jump in jumps.items() if abs(jump) > 0.005}
        if device == "A-src":
            ((k, jump),) = breaks.items()
            assert jump == pytest.approx(pause_s, abs=0.005) and samples(got[:k], device) == 500
        else:
            assert breaks == {}


def samples(got: list, device: str) -> int:
    return sum(len(m.ppg) for m in got if m.device == device)


# ---------------------------------------------------------------- through a daemon process


def assert_as_offline(est, estimates: list[dict], windows: list[np.ndarray]) -> None:
    """Each estimate is what the offline code gives on its window: the model's numbers (`Estimator.predict`), and
    the quality gate's SQI and pulse rate, which move with every sample (a window one sample off fails)."""
    expected = est.predict(np.stack(windows), FS)
    np.testing.assert_allclose([[e["sbp_window"], e["dbp_window"]] for e in estimates], expected[:, :2], atol=0.02)
    qualities, _ = est.assess_windows(windows, [FS] * len(windows))
    np.testing.assert_allclose([e["sqi"] for e in estimates], [round(q.sqi, 4) for q in qualities], atol=1e-4)
    np.testing.assert_allclose([e["hr"] for e in estimates], [round(q.hr_bpm, 2) for q in qualities], atol=0.01)


@needs_pylsl
def test_lsl_to_daemon_estimates_equal_offline_predict_and_a_return_is_a_gap():
    """A pylsl outlet at 125 Hz → `p2p lsl` → a daemon process: each estimate equals `Estimator.predict` on the
    500 samples ending at its `t` (mapped back through the bridge's clock conversion); the outlet closed and a new
    one opened under the same source_id → the same device, one `gap` estimate, then matching estimates again, and
    the daemon counts a time gap, no seq reset and no second device."""
    from p2p_stream import Estimator

    source_id = f"lsl-test-{uuid.uuid4().hex[:8]}"
    device = sanitise(source_id)
    est = Estimator.load()
    signals = [simulated_ppg(75, 12.0, FS, seed=3), simulated_ppg(64, 9.0, FS, seed=4)]
    signals = [x.astype(np.float32) for x in signals]
    with ipc_addresses() as addresses, daemon_process(addresses) as daemon:
        sub = Subscriber(addresses["publish"])
        try:
            with bridge("--source-id", source_id, "--ingest", addresses["ingest"]) as proc:
                starts, needs = [], []  # each stream's first time stamp on the Unix clock; its windows
                start = 0.0  # its first time stamp on the LSL clock
                for k, x in enumerate(signals):
                    out = outlet(source_id, "PPG")
                    wait_for_log(proc, "is back: device" if k else f"→ device {device}", timeout_s=60)
                    # The first at the clock; the second where the first ended plus a pause (its samples went out
                    # at 4 × real time, so its stamps ran ahead of the clock): a device back later, on its clock.
                    start = pylsl.local_clock() if k == 0 else start + len(signals[k - 1]) / FS + 5.0
                    starts.append(start + unix_minus_lsl(pylsl.local_clock))  # as the bridge converts it
                    for i in range(0, len(x), 25):  # at 4 × real time
                        push(out, x[i : i + 25], start + i / FS)
                        time.sleep(0.05)
                    need = (len(x) - WINDOW) // 125 + 1  # one window per 1 s hop once 4 s are in
                    needs.append(need)
                    sub.collect(
                        lambda got, k=k, need=need: len([e for _, e in got if e["t"] >= starts[k] and e["ok"]]) >= need,
                        60,
                    )
                    del out  # the wearable goes away
                    gc.collect()
                    wait_for_log(proc, f"lost; device {device} waits", timeout_s=20)
                stats = request(addresses["control"], {"cmd": "stats"})
            estimates = [e for _, e in sub.got]
        finally:
            sub.close()
        assert daemon.poll() is None, daemon.output()
    assert {e["device"] for e in estimates} == {device}
    assert [e.get("reason") for e in estimates if not e["ok"]] == ["gap"]
    checked = 0
    for k, (x, start) in enumerate(zip(signals, starts)):
        ours = [e for e in estimates if e["ok"] and start <= e["t"] < (starts[k + 1] if k + 1 < len(starts) else 1e12)]
        assert ours
        ends = [round((e["t"] - start) * FS) for e in ours]  # the index of each window's last sample in `x`
        assert_as_offline(est, ours, [x[end - WINDOW + 1 : end + 1] for end in ends])
        checked += len(ours)
    assert checked >= sum(needs)
    assert stats["devices"] == 1
    assert stats["rejected"].get("time_gap", 0) >= 1
    assert not {"seq_reset", "seq_gap", "resync", "out_of_order", "duplicate"} & set(stats["rejected"]), stats


# ---------------------------------------------------------------- docs/devices.md's own publisher


def doc_snippet() -> str:
    """The first Python block under "## Your own publisher" in docs/devices.md."""
    text = (Path(ROOT) / "docs" / "devices.md").read_text()
    section = text.split("## Your own publisher", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_the_publisher_in_docs_devices_md_runs_against_a_daemon(tmp_path):
    """The doc's snippet, run as it is written but for the address, feeds a daemon process: its device's estimates
    equal `Estimator.predict` on the samples the snippet's own `read_sensor` makes, nothing is rejected, and the
    pulse rate is the 72 bpm it draws."""
    from p2p_stream import Estimator

    code = doc_snippet()
    assert code.count('"tcp://127.0.0.1:5555"') == 1
    defs: dict = {}
    exec(code.split("sock = ", 1)[0], defs)  # its constants and read_sensor, not its loop
    device, read_sensor = defs["DEVICE"], defs["read_sensor"]
    assert defs["FS"] == FS  # the daemon process's windows are 500 samples at this rate
    with ipc_addresses() as addresses, daemon_process(addresses) as daemon:
        script = tmp_path / "publisher.py"
        script.write_text(code.replace('"tcp://127.0.0.1:5555"', repr(addresses["ingest"])))
        sub = Subscriber(addresses["publish"])
        publisher = subprocess.Popen([sys.executable, str(script)], stderr=subprocess.PIPE, text=True)
        try:
            sub.collect(lambda got: len(got) >= 3, timeout_s=60)
            stats = request(addresses["control"], {"cmd": "stats"})
        finally:
            publisher.kill()
            _, err = publisher.communicate(timeout=10)
            sub.close()
        assert daemon.poll() is None, daemon.output()
    assert "Traceback" not in err, err
    estimates = [e for _, e in sub.got]
    assert {e["device"] for e in estimates} == {device} and all(e["ok"] for e in estimates)
    assert stats["rejected"] == {}, stats
    ends = [WINDOW - 1 + e["seq"] * 125 for e in estimates]  # 4 s windows every 1 s, from its first sample
    chunk = defs["CHUNK"]
    x = np.concatenate([read_sensor(i, chunk) for i in range(0, ends[-1] + 1, chunk)]).astype(np.float32)
    assert_as_offline(Estimator.load(), estimates, [x[end - WINDOW + 1 : end + 1] for end in ends])
    assert all(abs(e["hr"] - 72) < 1 for e in estimates)
