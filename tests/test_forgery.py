"""Time, sequence and identity that a forged (or buggy) message cannot poison, on real daemons (issue 14, items 2, 10).

A wearable's clock is checked against the daemon's (`limits.max_clock_skew_s`, `bad_time`); a `seq` leap the time
cannot hold is refused on its own (`seq_jump`); a stream moved ahead by a message inside every bound resyncs to the
real device after two of its messages (`resync`); only accepted messages keep a device alive; ids are whole matches.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from helpers import simulated_ppg
from zmq_helpers import client, daemon_process, ipc_addresses, running_daemon

from p2p_stream.errors import ProtocolError
from p2p_stream.stream.state import control
from p2p_stream.wire.protocol import DEVICE_RE, decode_ingest, encode_ingest

FS = 125.0
DAY_S = 86_400.0
DEFAULT_SKEW = {"max_clock_skew_s": 300.0}  # the shipped default, which the shared helpers widen for fixed-T0 tests


def of(device):
    return lambda e: e["device"] == device


# ---------------------------------------------------------------- ids and clocks, message by message


@pytest.mark.parametrize("device", ["dev\n", "dev\r\n", "\ndev", "a" * 64 + "\n"])
def test_an_id_with_a_newline_is_refused_on_ingest_and_control(device):
    assert DEVICE_RE.fullmatch("dev") and not DEVICE_RE.match(device) and not DEVICE_RE.fullmatch(device)
    with pytest.raises(ProtocolError) as refused:
        decode_ingest(encode_ingest(device, 0, time.time(), FS, np.ones(5)))
    assert refused.value.reason == "bad_device"

    class State:  # the request must be refused before the state is asked anything
        def forget(self, device):
            raise AssertionError("reached the state")

        known = calibrate = status = forget

    for request in ({"cmd": "forget", "device": device}, {"cmd": "calibrate", "device": device, "sbp": 120, "dbp": 80}):
        reply = control.handle(request, State())
        assert reply["ok"] is False and "needs 'device'" in reply["error"]


@pytest.mark.parametrize("offset_s", [-DAY_S, -301.0, 301.0, DAY_S, 1e17])
def test_a_t0_beyond_the_skew_is_bad_time(offset_s):
    now = 1_800_000_000.0
    frames = encode_ingest("w", 0, now + offset_s, FS, np.ones(5))
    with pytest.raises(ProtocolError) as refused:
        decode_ingest(frames, now=now, max_clock_skew_s=300.0)
    assert refused.value.reason == "bad_time" and "limits.max_clock_skew_s" in str(refused.value)
    assert decode_ingest(encode_ingest("w", 0, now + 299.0, FS, np.ones(5)), now=now, max_clock_skew_s=300.0)


# ---------------------------------------------------------------- real daemons


def test_forged_seq_and_clock_do_not_silence_the_victim_real_process():
    """The issue's case on a daemon process at the default skew: the victim streams; a forger sends one message with
    its id, seq 2**63 and t0 a day ahead, and one with seq 2**63 on time; the victim goes on and loses nothing."""
    x = simulated_ppg(72, 12, FS, seed=11)
    half = 6 * int(FS)
    flags = ("--set", f"limits.max_clock_skew_s={DEFAULT_SKEW['max_clock_skew_s']}")
    with ipc_addresses() as addresses, daemon_process(addresses, *flags) as proc, client(addresses) as c:
        t0 = time.time()
        seq = c.stream("victim", x[:half], FS, t0=t0)
        c.pub.send_multipart(encode_ingest("victim", 2**63, t0 + DAY_S, FS, np.ones(25)))  # forged: clock a day off
        c.pub.send_multipart(encode_ingest("victim", 2**63, t0 + half / FS, FS, np.ones(25)))  # forged: seq only
        c.stream("victim", x[half:], FS, t0=t0 + half / FS, seq0=seq)
        c.stream("stale", x[:625], FS, t0=1_700_000_000.0)  # a wearable whose clock is years behind: refused
        got = c.estimates(lambda g: len([e for e in g if e["device"] == "victim"]) >= 9, timeout_s=60)
        stats = c.control({"cmd": "stats"})
        assert proc.poll() is None
    victim = [e for e in got if e["device"] == "victim"]
    # Nine windows of 4 s every 1 s over 12 s: all of them, in order, none broken by the forgeries.
    assert [e["seq"] for e in victim] == list(range(9)) and all(e["ok"] for e in victim)
    assert not any(e["device"] == "stale" for e in got)
    rejected = stats["rejected"]
    assert rejected["bad_time"] == 1 + 25 and rejected["seq_jump"] == 1  # the forger's, the stale wearable's 25
    assert "seq_gap" not in rejected and "out_of_order" not in rejected and "time_gap" not in rejected


def test_a_forgery_inside_every_bound_costs_the_victim_two_messages(est):
    """seq a little ahead and t0 200 s ahead pass every check: the stream breaks there, the victim's next two
    messages look old and are refused, the third resyncs the stream and windows come again one window later."""
    x = simulated_ppg(72, 14, FS, seed=12)
    half = 5 * int(FS)
    with running_daemon(est, limits=DEFAULT_SKEW) as (daemon, addresses), client(addresses) as c:
        t0 = time.time()
        seq = c.stream("victim", x[:half], FS, t0=t0)
        c.pub.send_multipart(encode_ingest("victim", seq + 4, t0 + 200.0, FS, np.ones(25)))
        c.stream("victim", x[half:], FS, t0=t0 + half / FS, seq0=seq)
        resync_at = t0 + (half + 50) / FS  # the third message after the forgery starts the run again
        got = c.estimates(lambda g: any(e["ok"] and e["t"] > t0 + 13 for e in g), timeout_s=30)
        rejected = c.control({"cmd": "stats"})["rejected"]
    assert rejected["out_of_order"] == 2 and rejected["resync"] == 1 and rejected["seq_gap"] == 1
    after = [e for e in got if e["t"] >= resync_at]
    assert after[0]["reason"] == "gap"  # the forger's run, cut at the resync
    ok = [e["t"] for e in after if e["ok"]]
    assert ok[0] == pytest.approx(resync_at + 4.0 - 1 / FS)  # a full window after the resync
    assert np.allclose(np.diff(ok), 1.0)  # then one every hop to the end of the recording
    assert ok[-1] == pytest.approx(t0 + (len(x) - 1) / FS)


def test_a_device_whose_messages_are_all_refused_is_evicted_on_time(est):
    """Refused messages do not refresh a device: one that sends only replays is forgotten device_idle_s after its
    last accepted message, by the same eviction pass as one that went silent just after it (no wall-clock limit:
    a busy machine delays both alike)."""
    limits = {**DEFAULT_SKEW, "device_idle_s": 1.0}
    with running_daemon(est, limits=limits) as (daemon, addresses), client(addresses) as c:
        t0 = time.time()
        for device in ("replayer", "silent"):  # the replayer's last accepted message first: it is idle no later
            c.pub.send_multipart(encode_ingest(device, 0, t0, FS, np.ones(25)))
            c.pub.send_multipart(encode_ingest(device, 1, t0 + 0.2, FS, np.ones(25)))
        streams = daemon.parts.devices.streams
        deadline = time.monotonic() + 10.0
        while not {"replayer", "silent"} <= streams.keys():
            assert time.monotonic() < deadline
            time.sleep(0.01)
        first = {d: streams[d].generation for d in ("silent", "replayer")}  # silent looked at first, see below
        evicted: dict[str, int] = {}  # the look in which each was seen gone
        look = 0
        while time.monotonic() < deadline and len(evicted) < 2:
            c.pub.send_multipart(encode_ingest("replayer", 0, t0, FS, np.ones(25)))  # refused: out_of_order
            time.sleep(0.05)
            look += 1
            for d, generation in first.items():  # a pass between the two looks counts against the silent one
                stream = streams.get(d)
                if d not in evicted and (stream is None or stream.generation != generation):  # forgotten
                    evicted[d] = look
        rejected = c.control({"cmd": "stats"})["rejected"]
    assert "silent" in evicted, "the silent device was never evicted: the test cannot judge the replayer"
    assert "replayer" in evicted, "a device sending only refused messages was never evicted"
    assert evicted["replayer"] <= evicted["silent"], evicted  # evicted by the same pass, not refreshed by a replay
    assert rejected["out_of_order"] >= 5
