"""The ingest router: a topic prefix → its handler, and the daemon's SUB subscribed to exactly the registered
prefixes; a new kind of message is one registration. Real sockets, a real daemon."""

from __future__ import annotations

import time

import msgpack
import pytest
from helpers import simulated_ppg
from zmq_helpers import client, running_daemon

from p2p_stream.errors import ProtocolError
from p2p_stream.stream.daemon import Daemon
from p2p_stream.stream.ingest.router import IngestRouter


def test_a_topic_goes_to_the_handler_of_its_prefix():
    got: list[str] = []
    router = IngestRouter()
    router.register(b"ppg.", lambda frames, arrival, user: got.append("ppg"))
    router.register(b"ecg.", lambda frames, arrival, user: got.append("ecg"))
    for topic in (b"ecg.w1", b"ppg.w1"):
        router.route([topic, b""])([topic, b""], 0.0, None)
    assert got == ["ecg", "ppg"] and router.prefixes == [b"ppg.", b"ecg."]


@pytest.mark.parametrize(
    "frames, reason", [([b"acc.w1", b""], "bad_topic"), ([b"ppg.w1"], "bad_frames"), ([], "bad_frames")]
)
def test_what_no_handler_takes_is_a_protocol_error(frames, reason):
    router = IngestRouter()
    router.register(b"ppg.", lambda *_: None)
    with pytest.raises(ProtocolError) as exc:
        router.route(frames)
    assert exc.value.reason == reason


def test_overlapping_prefixes_are_refused():
    router = IngestRouter()
    router.register(b"ppg.", lambda *_: None)
    with pytest.raises(ValueError, match="overlaps"):
        router.register(b"ppg.raw.", lambda *_: None)


class ThirdChannelDaemon(Daemon):
    """A daemon with one more kind of message (after PPG and ECG, say an accelerometer): the one registration a new
    channel needs."""

    def register(self, router: IngestRouter) -> None:
        super().register(router)
        self.second: list[bytes] = []
        router.register(b"acc.", lambda frames, arrival, user: self.second.append(frames[0]))


def test_a_registered_topic_reaches_its_handler_through_the_daemon_s_own_socket(est, monkeypatch):
    monkeypatch.setattr("zmq_helpers.Daemon", ThirdChannelDaemon)
    with running_daemon(est) as (daemon, addresses), client(addresses) as c:
        deadline = time.monotonic() + 20
        while not daemon.second and time.monotonic() < deadline:  # until the SUB's subscription has reached us
            c.pub.send_multipart([b"acc.w1", msgpack.packb({"v": 1})])
            time.sleep(0.05)
        c.stream("w1", simulated_ppg(70, 5, 125.0), 125.0)  # the PPG path goes on beside it
        got = c.estimates(lambda g: len(g) >= 1)
        c.pub.send_multipart([b"tmp.w1", b"x"])  # never subscribed: ZeroMQ drops it before the daemon
        time.sleep(0.2)
        rejected = daemon.status()["rejected"]
    assert daemon.second and set(daemon.second) == {b"acc.w1"}
    assert got[0]["device"] == "w1" and got[0]["ok"]
    assert "bad_topic" not in rejected


def test_in_a_cluster_every_channel_of_a_device_goes_to_the_same_daemon():
    """Ownership reads the device from any registered prefix: a device's PPG and its second channel are one daemon's,
    never split between two (each daemon keeps the devices it owns, and drops the rest unread)."""
    from p2p_stream.stream.cluster.membership import Membership
    from p2p_stream.stream.cluster.ownership import Ownership

    members = ["a", "b", "c"]
    views = {m: Ownership(Membership(m, members), prefixes=[b"ppg.", b"ecg."]) for m in members}
    for k in range(200):
        owners = {
            prefix: [m for m, view in views.items() if view.mine(prefix + f"ward-{k}".encode())]
            for prefix in (b"ppg.", b"ecg.")
        }
        assert len(owners[b"ppg."]) == 1 and owners[b"ppg."] == owners[b"ecg."]
    assert sum(view.foreign for view in views.values()) == 2 * 200 * 2  # each message dropped by the two others
