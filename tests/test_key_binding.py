"""Identities bound to keys: with CURVE, a client key acts only for the device ids its key file names, and for at
most `limits.max_devices_per_key` of them at once; `p2p keys client --devices` writes the file the daemon reads."""

from __future__ import annotations

import shutil
import time

import numpy as np
import pytest
import zmq
import zmq.auth
from helpers import simulated_ppg
from zmq_helpers import daemon_process, ipc_addresses

from p2p_stream.errors import ConfigError
from p2p_stream.stream.security.curve import curve_client
from p2p_stream.stream.security.grants import DeviceGrants, KeyGrant, read_authorized, read_key_file
from p2p_stream.stream.state.control import handle
from p2p_stream.tools.cli.keys import main as keys_main
from p2p_stream.wire.protocol import decode_estimate, decode_map, encode_ingest, pack

FS = 125.0
T0 = 1_700_000_000.0


@pytest.fixture()
def keys(tmp_path):
    """keys/ by `p2p keys`: ward-a may act for 'a-*' only, ward-c for 'c-1' and 'c-2'; `legacy` is a key file as
    p2p keys wrote them before ids were bound to keys (no devices line): it may act for any device."""
    folder = tmp_path / "keys"
    assert keys_main(["init", str(folder)]) == 0
    assert keys_main(["client", "ward-a", "--dir", str(folder), "--devices", "a-*"]) == 0
    assert keys_main(["client", "ward-c", "--dir", str(folder), "--devices", "c-1, c-2"]) == 0
    public, _ = zmq.auth.create_certificates(folder / "clients", "legacy")
    shutil.copy(public, folder / "authorized" / "legacy.key")
    return folder


# ---------------------------------------------------------------- key files and grants, no sockets


def test_p2p_keys_writes_the_devices_the_daemon_reads(keys, capsys):
    grants = {g.name: g for g in read_authorized(keys / "authorized").values()}
    assert grants["ward-a"].patterns == ("a-*",) and grants["ward-c"].patterns == ("c-1", "c-2")
    assert grants["legacy"].patterns == ("*",)  # no devices line: any device, as before
    assert 'devices = "a-*"' in (keys / "authorized" / "ward-a.key").read_text()
    a = grants["ward-a"]
    assert a.allows("a-1") and a.allows("a-") and not a.allows("b-1") and not a.allows("xa-1")
    assert grants["ward-c"].allows("c-2") and not grants["ward-c"].allows("c-3")
    assert grants["legacy"].allows("anything")
    # The client's key is the one the daemon allows, with its devices.
    public, _ = zmq.auth.load_certificate(keys / "clients" / "ward-a.key_secret")
    assert read_key_file(keys / "authorized" / "ward-a.key") == (public.decode(), a)
    # `grant` changes what an allowed key may act for; the key stays.
    assert keys_main(["grant", "ward-a", "--dir", str(keys), "--devices", "a-*,ward3.*"]) == 0
    assert read_key_file(keys / "authorized" / "ward-a.key") == (
        public.decode(),
        KeyGrant("ward-a", ("a-*", "ward3.*")),
    )
    capsys.readouterr()
    for argv in (
        ["client", "bad", "--dir", str(keys), "--devices", "a b"],
        ["client", "bad", "--dir", str(keys), "--devices", ""],
        ["grant", "ward-a", "--dir", str(keys), "--devices", "a/b"],
    ):
        assert keys_main(argv) == 2, argv  # one line: what is wrong and what would be right
        assert "comma-separated patterns" in capsys.readouterr().err
    assert keys_main(["grant", "nobody", "--dir", str(keys), "--devices", "x"]) == 2
    assert "allowed now: ['legacy', 'ward-a', 'ward-c']" in capsys.readouterr().err


def test_a_bad_or_duplicated_key_file_is_refused_at_start(keys):
    shutil.copy(keys / "authorized" / "ward-a.key", keys / "authorized" / "copy.key")
    with pytest.raises(ConfigError, match="copy.key and ward-a.key hold the same public key"):
        read_authorized(keys / "authorized")
    (keys / "authorized" / "copy.key").unlink()
    path = keys / "authorized" / "ward-a.key"
    path.write_text(path.read_text().replace('"a-*"', '"a b"'))
    with pytest.raises(ConfigError, match=r"ward-a.key: device pattern 'a b'"):
        read_authorized(keys / "authorized")


def test_grants_without_curve_allow_everything_and_count_nothing():
    grants = DeviceGrants(None, max_devices_per_key=1)
    assert grants.open and grants.allows(None, "any") and grants.refusal(None, "x") is None
    grants.hold(None, "x")
    assert grants.held == {}


def test_a_key_holds_at_most_max_devices_per_key_of_the_table():
    grants = DeviceGrants({"KEY": KeyGrant("ward", ("a-*",)), "GW": KeyGrant("gateway", ("*",))}, max_devices_per_key=2)
    for device in ("a-1", "a-2"):
        assert grants.refusal("KEY", device) is None
        grants.hold("KEY", device)
    grants.hold("GW", "a-2")  # a gateway relaying the same wearable holds it too
    assert grants.refusal("KEY", "a-1") is None  # one it holds: always
    assert grants.refusal("KEY", "a-3") == "too_many_devices"
    assert grants.refusal("KEY", "b-1") == "unauthorized_device"
    assert grants.refusal("OTHER", "a-1") == "unauthorized_device"  # an unknown key: nothing
    assert grants.refusal(None, "a-1") == "unauthorized_device"  # no key at all, with CURVE on
    grants.release(["a-2"])  # evicted, forgotten or replaced: the slot is free at once, for every key holding it
    assert grants.refusal("KEY", "a-3") is None
    assert grants.held == {"KEY": {"a-1"}}


def test_control_refuses_a_device_the_key_may_not_act_for_and_touches_nothing():
    class State:
        def __init__(self):
            self.calls = []

        def status(self):
            return {"devices": 1}

        def known(self, device):
            self.calls.append(("known", device))
            return True

        def forget(self, device):
            self.calls.append(("forget", device))
            return True

        def calibrate(self, device, sbp, dbp, wearer=None):
            self.calls.append(("calibrate", device))
            return {"applied": True, "session": 1}

        def admit(self, device):
            return None

    state, asked = State(), []

    def allowed(device):
        asked.append(device)
        return device.startswith("a-")

    for request in ({"cmd": "calibrate", "device": "b-1", "sbp": 250, "dbp": 150}, {"cmd": "forget", "device": "b-1"}):
        reply = handle(request, state, allowed)
        assert reply["ok"] is False and reply["error"].startswith("unauthorized_device: 'b-1'"), reply
    assert state.calls == []  # not even whether b-1 is known is given away
    assert handle({"cmd": "ping"}, state, allowed) == {"ok": True}
    assert handle({"cmd": "stats"}, state, allowed) == {"ok": True, "devices": 1}
    assert handle({"cmd": "calibrate", "device": "a-1", "sbp": 120, "dbp": 80}, state, allowed)["ok"]
    assert asked == ["b-1", "b-1", "a-1"]


# ---------------------------------------------------------------- a daemon process with CURVE


class Wearable:
    """A CURVE client of the daemon under one key: an XPUB to ingest (its first read is the daemon's subscription,
    so the handshake is done before anything is sent) and a REQ to control."""

    def __init__(self, ctx: zmq.Context, addresses: dict[str, str], keys, name: str) -> None:
        self.pub, self.req = ctx.socket(zmq.XPUB), ctx.socket(zmq.REQ)
        for sock, address in ((self.pub, addresses["ingest"]), (self.req, addresses["control"])):
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.RCVTIMEO, 30_000)
            curve_client(sock, keys / "server.key", keys / "clients" / f"{name}.key_secret")
            sock.connect(address)
        assert self.pub.recv()[:1] == b"\x01"  # subscribed through CURVE: this key was let in
        self.seq: dict[str, int] = {}

    def stream(self, device: str, seconds: float, chunk: int = 25) -> int:
        """`seconds` of PPG for `device`, continuing its last; the number of messages sent."""
        x = simulated_ppg(72, seconds, FS, seed=len(device)).astype(np.float32)
        sent = 0
        for i in range(0, len(x), chunk):
            seq = self.seq.get(device, 0)
            self.pub.send_multipart(encode_ingest(device, seq, T0 + seq * chunk / FS, FS, x[i : i + chunk]))
            self.seq[device] = seq + 1
            sent += 1
        return sent

    def control(self, request: dict) -> dict:
        self.req.send(pack(request))
        return decode_map(self.req.recv())


def test_a_key_acts_only_for_its_devices_and_at_most_max_devices_per_key_real_process(keys, tmp_path):
    """The red team's case on a daemon process: ward-a's key ('a-*') feeds a-1 and gets estimates, but its messages
    for c-1 and its calibration of another key's device (250/150) are refused and counted `unauthorized_device`; with
    `max_devices_per_key = 2`, its third device is refused (`too_many_devices`) until it forgets one; a key file
    without a devices line still acts for any device. The state store's audit names the key behind each change."""
    flags = (
        "--set", f"security.curve_secret_key={keys / 'server.key_secret'}",
        "--set", f"security.authorized_keys={keys / 'authorized'}",
        "--set", "limits.max_devices_per_key=2",
        "--set", f"state.path={tmp_path / 'state.db'}",
    )  # fmt: skip
    with ipc_addresses() as addresses, daemon_process(addresses, *flags) as proc:
        ctx = zmq.Context()
        try:
            sub = ctx.socket(zmq.SUB)
            sub.setsockopt(zmq.LINGER, 0)
            sub.setsockopt(zmq.SUBSCRIBE, b"")
            sub.connect(addresses["publish"])
            deadline = time.monotonic() + 60
            while not (sub.poll(100) and sub.recv_multipart()[0] == b"status"):  # started, and we hear it
                assert time.monotonic() < deadline and proc.poll() is None, proc.output()
            a, c, legacy = (Wearable(ctx, addresses, keys, n) for n in ("ward-a", "ward-c", "legacy"))
            sent = {"a": a.stream("a-1", 6.0) + a.stream("a-2", 0.4)}  # a-1 estimated; a-2 its second device
            sent["unauthorized"] = a.stream("c-1", 6.0)  # ward-c's device: refused, every message
            sent["legacy"] = legacy.stream("zz-9", 6.0)  # no devices line: any id
            sent["c"] = c.stream("c-1", 6.0)
            sent["over_cap"] = a.stream("a-3", 0.4)  # a third device of ward-a: over its cap of 2
            total = sum(sent.values())

            def stats() -> dict:
                deadline = time.monotonic() + 30
                while (s := a.control({"cmd": "stats"}))["messages_total"] < total:  # stats: open to any key
                    assert time.monotonic() < deadline, s
                    time.sleep(0.05)
                return s

            first = stats()
            assert first["devices"] == 4, first  # a-1, a-2, zz-9, c-1: not a-3, and c-1 from ward-c only
            assert first["rejected"]["unauthorized_device"] == sent["unauthorized"], first["rejected"]
            assert first["rejected"]["too_many_devices"] == sent["over_cap"], first["rejected"]

            # Control: ward-a may not calibrate nor forget ward-c's device; ward-c may.
            forged = {"cmd": "calibrate", "device": "c-1", "sbp": 250, "dbp": 150}
            for request in (forged, {"cmd": "forget", "device": "c-1"}):
                reply = a.control(request)
                assert reply["ok"] is False and "unauthorized_device" in reply["error"], reply
            assert legacy.control({"cmd": "ping"}) == {"ok": True}
            assert c.control({"cmd": "calibrate", "device": "c-1", "sbp": 120, "dbp": 80})["ok"]
            assert a.control({"cmd": "calibrate", "device": "a-1", "sbp": 120, "dbp": 80})["ok"]

            # ward-a forgets a device of its own: the slot is free, a-3 gets in.
            assert a.control({"cmd": "forget", "device": "a-2"}) == {"ok": True, "known": True}
            total += a.stream("a-3", 0.4)
            second = stats()
            assert second["devices"] == 4  # a-1, a-3, zz-9, c-1
            assert second["rejected"]["unauthorized_device"] == sent["unauthorized"] + 2  # the two control requests
            assert second["rejected"]["too_many_devices"] == sent["over_cap"]  # nothing more refused

            # The audit: each change with the public key that made it; refused requests changed nothing.
            public = {
                n: zmq.auth.load_certificate(keys / "clients" / f"{n}.key_secret")[0].decode()
                for n in ("ward-a", "ward-c")
            }
            history = c.control({"cmd": "history", "device": "c-1"})["history"]
            assert [(h["cmd"], h["values"]["sbp"], h["client"], h["client_name"]) for h in history] == [
                ("calibrate", 120.0, public["ward-c"], "ward-c")
            ]
            assert [(h["cmd"], h["client"]) for h in a.control({"cmd": "history", "device": "a-2"})["history"]] == [
                ("forget", public["ward-a"])
            ]
            reply = a.control({"cmd": "history", "device": "c-1"})  # another key's device: not even its history
            assert reply["ok"] is False and "unauthorized_device" in reply["error"], reply

            got: dict[str, list[dict]] = {}
            deadline = time.monotonic() + 30
            while not {"a-1", "c-1", "zz-9"} <= {d for d, e in got.items() if any(x["ok"] for x in e)}:
                assert time.monotonic() < deadline, {d: len(e) for d, e in got.items()}
                if sub.poll(100):
                    frames = sub.recv_multipart()
                    if frames[0] != b"status":
                        estimate = decode_estimate(frames)
                        got.setdefault(estimate["device"], []).append(estimate)
            assert proc.poll() is None
        finally:
            ctx.destroy(linger=0)
        log = " ".join(proc.output().split())  # the log's lines are wrapped
    assert "refused key ward-a acting for device c-1" in log, log[-3000:]
    assert "refused new device a-3 from key ward-a" in log, log[-3000:]
    assert "bound to device patterns" in log
