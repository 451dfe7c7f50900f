"""`p2p lsl` pins a device to the outlet it first trusted (issue 24: devices cannot be impersonated through a
bridge). LSL has no authentication: an impostor can announce an outlet with a device's name and source_id, wait
for the real one to drop out, and become the device. The decision as a pure function; the bridge on a fake LSL;
then real pylsl outlets — an impostor on another host (its own UTS namespace, so liblsl reports another hostname)
under the default pinning by host, and one on this host under pinning by uid."""

from __future__ import annotations

import gc
import shutil
import socket
import subprocess
import sys
import time
import uuid

import numpy as np
import pytest
from helpers import simulated_ppg
from test_lsl_bridge import (
    FS,
    FakeInfo,
    FakeLSL,
    Ingest,
    Lost,
    Sent,
    bridge,
    needs_pylsl,
    outlet,
    push,
    pylsl,
    wait_for_log,
)

from p2p_stream.errors import ConfigError
from p2p_stream.tools.bridges.lsl import DISCOVER_EVERY_S, Bridge, Outlet, lookalike, parse_pins, sanitise

REAL = Outlet("ward-pc", "band-7", "wrist", "uid-0")


# ---------------------------------------------------------------- the decision


@pytest.mark.parametrize(
    "outlet,admitted",
    [
        (Outlet("ward-pc", "band-7", "wrist", "uid-0"), True),  # the outlet itself
        (Outlet("ward-pc", "band-7", "wrist", "uid-1"), True),  # restarted by its app: a new uid, the same host
        (Outlet("evil-pc", "band-7", "wrist", "uid-1"), False),  # a lookalike on another machine
        (Outlet("ward-pc", "band-8", "wrist", "uid-1"), False),  # another wearable on the same machine
        (Outlet("ward-pc", "band-7", "chest", "uid-1"), False),
    ],
)
def test_pinned_by_host_an_outlet_returns_only_from_its_host_under_its_source_id_and_name(outlet, admitted):
    why = lookalike(outlet, REAL, None, "host")
    assert (why is None) == admitted, why
    if not admitted:
        assert why.startswith("it is pinned to the outlet on host 'ward-pc' (uid uid-0, source_id 'band-7'")
    assert lookalike(outlet, None, None, "host") is None  # nothing trusted yet: the first outlet is


def test_pinned_by_uid_only_that_outlet_instance_feeds_the_device():
    assert lookalike(REAL, REAL, None, "uid") is None
    restarted = Outlet("ward-pc", "band-7", "wrist", "uid-1")
    assert "not even that outlet restarted" in lookalike(restarted, REAL, None, "uid")
    assert lookalike(restarted, None, None, "uid") is None


def test_an_operator_s_pin_holds_from_the_first_outlet_on():
    on_ward = Outlet("ward-pc", "band-7", "wrist", "uid-1")
    elsewhere = Outlet("evil-pc", "band-7", "wrist", "uid-2")
    assert lookalike(on_ward, None, ("host", "ward-pc")) is None
    assert lookalike(elsewhere, None, ("host", "ward-pc")) == "it is pinned by --pin to host 'ward-pc'"
    assert lookalike(on_ward, REAL, ("host", "ward-pc")) is None  # a restart on the pinned host
    assert lookalike(on_ward, None, ("uid", "uid-1")) is None
    assert lookalike(REAL, None, ("uid", "uid-1")) == "it is pinned by --pin to the outlet uid uid-1"
    assert lookalike(REAL, on_ward, ("uid", "uid-1"), "host") is not None  # a uid pin is strict in either mode


def test_pins_are_parsed_and_checked():
    assert parse_pins(["pulse-1=host:ward-pc", "a:b=uid:9f3e-11"]) == {
        "pulse-1": ("host", "ward-pc"),
        "a:b": ("uid", "9f3e-11"),
    }
    for bad, message in (
        (["pulse-1"], "give DEVICE=host:HOST or DEVICE=uid:UID"),
        (["pulse-1=mac:aa"], "give DEVICE=host:HOST"),
        (["pulse-1=host:"], "give DEVICE=host:HOST"),
        (["bad id=host:x"], "'bad id' is not a device id"),
        (["d=host:x", "d=uid:y"], "d is pinned twice"),
    ):
        with pytest.raises(ConfigError, match=message):
            parse_pins(bad)
    with pytest.raises(ConfigError, match="--pin-mode 'mac'"):
        Bridge(FakeLSL(), Sent(), "", pin_mode="mac")


# ---------------------------------------------------------------- the bridge on a fake LSL (no network)


def chunk(value: float, start: float, n: int = 5) -> tuple[np.ndarray, np.ndarray]:
    return np.full((n, 2), value), start + np.arange(n) / FS


def test_an_impostor_waiting_for_a_dropout_is_refused_and_the_genuine_outlet_returns(caplog):
    """The red team's attack: a second outlet with the device's name and source_id, on another host, waits while
    the real one streams; the real one drops out. The impostor is refused at first sight, said and counted once,
    never opened, and still refused after the dropout; the real device's app restarting its outlet (a new uid on
    the same host) is back, its seq counting on, and only it is logged as back."""
    lsl, sock = FakeLSL(), Sent()
    bridge = Bridge(lsl, sock, "type='PPG'")
    lsl.streams = [FakeInfo("real-1", "band-7", host="ward-pc")]
    bridge.discover()
    lsl.inlets["real-1"].chunks = [chunk(1.0, 100)]
    bridge.pump()
    impostor = FakeInfo("evil-1", "band-7", host="evil-pc")
    lsl.streams.append(impostor)
    with caplog.at_level("INFO"):
        bridge.discover()
        bridge.discover()
        lsl.inlets["real-1"].chunks = [Lost]
        bridge.pump()  # the real outlet drops out...
        for _ in range(3):  # ...and for a while only the impostor is listed
            lsl.streams = [impostor]
            bridge.discover()
        assert set(lsl.inlets) == {"real-1"}  # the impostor never opened
        lsl.streams = [impostor, FakeInfo("real-2", "band-7", host="ward-pc")]
        bridge.discover()  # the real device's app restarts its outlet
        lsl.inlets["real-2"].chunks = [chunk(2.0, 110)]
        bridge.pump()
    said = [r.getMessage() for r in caplog.records]
    refusals = [m for m in said if m.startswith("refusing LSL outlet")]
    assert refusals == [
        "refusing LSL outlet 'wrist' (source_id 'band-7', on evil-pc) (uid evil-1) for device band-7: it is pinned "
        "to the outlet on host 'ward-pc' (uid real-1, source_id 'band-7', name 'wrist'): only an outlet on that "
        "host with that source_id and name may feed it again; nothing it sends is forwarded. An outlet restarted "
        "or moved on purpose needs the operator: check it is the device's, then restart p2p lsl with --pin "
        "band-7=uid:evil-1 (or --pin band-7=host:evil-pc)"
    ]
    assert [r.levelname for r in caplog.records if r.getMessage() in refusals] == ["ERROR"]
    assert [m for m in said if "is back" in m] == [
        "LSL stream 'wrist' (source_id 'band-7', on ward-pc) is back: device band-7 continues at seq 1 (the daemon "
        "sees a gap)"
    ]
    assert bridge.refused == 1
    assert [(m.device, m.seq, float(m.ppg[0])) for m in sock.got] == [("band-7", 0, 1.0), ("band-7", 1, 2.0)]


def test_outlets_that_differ_and_claim_a_new_device_at_once_are_all_refused_until_one_is_pinned(caplog):
    """Which of two outlets that appear together is genuine cannot be told: neither is taken, the error says so
    once; with the operator's --pin, the pinned one is, and the other is refused as a lookalike."""
    streams = [FakeInfo("evil-1", "band-7", host="evil-pc"), FakeInfo("real-1", "band-7", host="ward-pc")]
    lsl = FakeLSL()
    unpinned = Bridge(lsl, Sent(), "")
    lsl.streams = streams
    with caplog.at_level("ERROR"):
        unpinned.discover()
        unpinned.discover()
    assert lsl.inlets == {}
    (said,) = [r.getMessage() for r in caplog.records]
    assert said.startswith("LSL outlets 'wrist' (source_id 'band-7', on evil-pc) uid evil-1, 'wrist' (source_id")
    assert "all claim device band-7, which none has fed yet" in said and "--pin band-7=host:HOST" in said

    lsl = FakeLSL()
    pinned = Bridge(lsl, Sent(), "", pins=parse_pins(["band-7=host:ward-pc"]))
    lsl.streams = streams
    pinned.discover()
    assert set(lsl.inlets) == {"real-1"} and pinned.refused == 1


def test_pinned_by_uid_a_restarted_outlet_needs_the_operator():
    lsl, sock = FakeLSL(), Sent()
    strict = Bridge(lsl, sock, "", pin_mode="uid")
    lsl.streams = [FakeInfo("real-1", "band-7", host="ward-pc")]
    strict.discover()
    lsl.inlets["real-1"].chunks = [Lost]
    strict.pump()
    lsl.streams = [FakeInfo("real-2", "band-7", host="ward-pc")]  # restarted: a new uid
    strict.discover()
    assert set(lsl.inlets) == {"real-1"} and strict.refused == 1

    lsl = FakeLSL()  # the operator checks it and restarts the bridge pinned to it
    operator = Bridge(lsl, Sent(), "", pins=parse_pins(["band-7=uid:real-2"]), pin_mode="uid")
    lsl.streams = [FakeInfo("evil-1", "band-7", host="ward-pc"), FakeInfo("real-2", "band-7", host="ward-pc")]
    operator.discover()
    assert set(lsl.inlets) == {"real-2"} and operator.refused == 1


# ---------------------------------------------------------------- real LSL outlets

IMPOSTOR_HOST = "impostor-pc"
IMPOSTOR_VALUE = 777.0  # what the impostor sends: a value no genuine sample here has
IMPOSTOR = f"""
import socket, sys, time
socket.sethostname({IMPOSTOR_HOST!r})  # in its own UTS namespace: liblsl reports this host
import pylsl
pylsl.set_config_content("[log]\\nlevel = -3\\n")
kind, source_id = sys.argv[1:]
out = pylsl.StreamOutlet(pylsl.StreamInfo("wrist", kind, 1, {FS}, pylsl.cf_float32, source_id))
print("impostor up", out.get_info().hostname(), flush=True)
while True:  # the impostor streams all along, waiting for its chance
    out.push_chunk([[{IMPOSTOR_VALUE}]] * 25, pylsl.local_clock())
    time.sleep(25 / {FS})
"""


def another_host() -> list[str] | None:
    """A command prefix that runs a process under another hostname on this network (a user and UTS namespace), or
    None where this machine does not allow one."""
    if shutil.which("unshare") is None:
        return None
    prefix = ["unshare", "--user", "--map-root-user", "--uts"]
    probe = [*prefix, sys.executable, "-c", f"import socket; socket.sethostname({IMPOSTOR_HOST!r})"]
    try:
        ok = subprocess.run(probe, capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return None
    return prefix if ok and socket.gethostname() != IMPOSTOR_HOST else None


@needs_pylsl
def test_a_real_impostor_on_another_host_is_refused_after_the_real_outlet_drops_out(tmp_path):
    """The red team's attack with real outlets and `p2p lsl` as a process, pinned by host (the default): the real
    outlet streams, an impostor outlet (the same name and source_id, another host and uid) streams too, the real one
    drops out for 2.5 s and comes back (a new outlet on this host). Nothing the impostor sends reaches the ingest;
    it is refused, by name; the genuine outlet alone is back, the device's seq counting on."""
    prefix = another_host()
    if prefix is None:
        pytest.skip("this machine cannot run a process under another hostname (unshare --user --uts)")
    kind, source_id = f"PPG-{uuid.uuid4().hex[:8]}", f"band-{uuid.uuid4().hex[:6]}"
    device = sanitise(source_id)
    x = simulated_ppg(72, 4.0, FS, seed=7).astype(np.float32)  # 500 samples
    script = tmp_path / "impostor.py"
    script.write_text(IMPOSTOR)
    ingest = Ingest(f"ipc://{tmp_path}/ingest")
    impostor = None
    real = outlet(source_id, kind)
    try:
        with bridge("--type", kind, "--ingest", f"ipc://{tmp_path}/ingest") as proc:
            wait_for_log(proc, f"→ device {device}")
            t = pylsl.local_clock()
            push(real, x[:250], t)
            ingest.wait(lambda got: samples(got) == 250)
            cmd = [*prefix, sys.executable, str(script), kind, source_id]
            impostor = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            assert impostor.stdout.readline().strip() == f"impostor up {IMPOSTOR_HOST}"
            assert pylsl.resolve_bypred(f"type='{kind}' and hostname='{IMPOSTOR_HOST}'", 1, 10.0)  # it is listed
            time.sleep(2 * DISCOVER_EVERY_S)  # and the bridge has looked at it
            del real  # the real wearable drops out...
            gc.collect()
            wait_for_log(proc, f"lost; device {device} waits for it to come back")
            time.sleep(2.5)  # ...for as long as the red team's took: the impostor streams on
            during = samples(ingest.got)
            real = outlet(source_id, kind)  # the device's app restarts its outlet: a new uid, this host
            wait_for_log(proc, "is back: device")
            push(real, x[250:], t + 10.0)
            ingest.wait(lambda got: samples(got) >= 500)
            time.sleep(0.5)  # anything else on its way arrives
            log = proc.output()
    finally:
        ingest.close()
        if impostor is not None:
            impostor.kill()
            impostor.wait(timeout=10)
    assert impostor.returncode is not None and impostor.returncode < 0  # it was streaming until killed
    assert {m.device for m in ingest.got} == {device}
    got = np.concatenate([m.ppg for m in ingest.got])
    assert IMPOSTOR_VALUE not in got and during == 250, log  # the impostor never got through, not even meanwhile
    np.testing.assert_array_equal(got, x)  # the genuine samples, every one, in order
    assert [m.seq for m in ingest.got] == list(range(len(ingest.got)))
    assert log.count("refusing LSL outlet") == 1 and f"for device {device}: it is pinned to the outlet on host" in log
    backs = [line for line in log.splitlines() if "is back" in line]
    assert len(backs) == 1 and f"on {socket.gethostname()}) is back: device {device}" in backs[0], backs


@needs_pylsl
@pytest.mark.slow  # ~12 s; the uid rule itself is checked without LSL above, the real impostor on another host in CI
def test_a_real_impostor_on_this_host_is_refused_when_pinned_by_uid(tmp_path):
    """On one host an impostor's outlet and a restarted one look the same but for the uid: `--pin-mode uid`
    refuses both once the real outlet drops out, and the operator admits the restarted one by `--pin DEVICE=uid:`."""
    kind, source_id = f"PPG-{uuid.uuid4().hex[:8]}", f"band-{uuid.uuid4().hex[:6]}"
    device = sanitise(source_id)
    x = simulated_ppg(72, 2.0, FS, seed=8).astype(np.float32)  # 250 samples
    address = f"ipc://{tmp_path}/ingest"
    ingest = Ingest(address)
    real = outlet(source_id, kind)
    try:
        with bridge("--type", kind, "--pin-mode", "uid", "--ingest", address) as proc:
            wait_for_log(proc, f"→ device {device}")
            impostor = outlet(source_id, kind)
            assert len(pylsl.resolve_bypred(f"type='{kind}'", 2, 10.0)) >= 2  # it is listed
            time.sleep(2 * DISCOVER_EVERY_S)  # and the bridge has looked at it
            t = pylsl.local_clock()
            push(real, x, t)
            ingest.wait(lambda got: samples(got) == len(x))
            del real
            gc.collect()
            wait_for_log(proc, f"lost; device {device} waits")
            restarted = outlet(source_id, kind)  # restarted, or another impostor: a new uid either way
            time.sleep(2.5)  # the red team's dropout: the bridge has seen both meanwhile
            for k in range(10):  # both stream for 1 s; neither gets through
                push(impostor, np.full(25, IMPOSTOR_VALUE, np.float32), t + 10 + k * 0.2)
                push(restarted, np.full(25, IMPOSTOR_VALUE, np.float32), t + 10 + k * 0.2)
                time.sleep(0.1)
            time.sleep(0.5)  # anything on its way arrives
            first = proc.output()
        assert IMPOSTOR_VALUE not in np.concatenate([m.ppg for m in ingest.got]), first
        assert samples(ingest.got) == len(x) and "is back" not in first
        for other in (impostor, restarted):
            assert f"(uid {other.get_info().uid()}) for device {device}: it is pinned to the outlet on host" in first

        pin = f"{device}=uid:{restarted.get_info().uid()}"  # the operator checked it: the device's own
        with bridge("--type", kind, "--pin", pin, "--ingest", address) as proc:
            wait_for_log(proc, f"(uid {impostor.get_info().uid()}) for device {device}: it is pinned by --pin")
            wait_for_log(proc, f"→ device {device}")
            push(restarted, x, pylsl.local_clock())
            ingest.wait(lambda got: samples(got) == 2 * len(x))
    finally:
        ingest.close()
    np.testing.assert_array_equal(np.concatenate([m.ppg for m in ingest.got]), np.concatenate([x, x]))


def samples(got: list) -> int:
    return sum(len(m.ppg) for m in got)
