"""Security: CURVE on ingest and control with an allow-list of client keys, p2p-keys, and the loopback rule."""

from __future__ import annotations

import logging
import time

import numpy as np
import pytest
import zmq
from helpers import simulated_ppg
from zmq_helpers import running_daemon

from p2p_stream.config.daemon import load_daemon_config
from p2p_stream.config.security import exposure_warning, is_local
from p2p_stream.errors import ConfigError
from p2p_stream.stream.security.curve import curve_client
from p2p_stream.tools.cli.keys import main as keys_main
from p2p_stream.wire.protocol import decode_map, encode_ingest, pack

FS = 125.0


@pytest.fixture()
def keys(tmp_path):
    folder = tmp_path / "keys"
    assert keys_main(["init", str(folder)]) == 0
    assert keys_main(["client", "watch-1", "--dir", str(folder)]) == 0
    assert keys_main(["client", "intruder", "--dir", str(folder)]) == 0
    assert keys_main(["revoke", "intruder", "--dir", str(folder)]) == 0  # has a key pair, but is not allowed
    return folder


def test_p2p_keys_layout_and_errors(keys, capsys):
    assert (keys / "server.key").is_file() and (keys / "server.key_secret").is_file()
    assert sorted(p.name for p in (keys / "authorized").iterdir()) == ["watch-1.key"]
    assert (keys / "clients" / "intruder.key_secret").stat().st_mode & 0o077 == 0  # secret keys are private
    capsys.readouterr()
    assert keys_main(["init", str(keys)]) == 2  # a user's mistake: one line on stderr, exit status 2
    assert "exists" in capsys.readouterr().err
    assert keys_main(["client", "../evil", "--dir", str(keys)]) == 2
    assert "must be 1-64" in capsys.readouterr().err
    assert keys_main(["revoke", "nobody", "--dir", str(keys)]) == 2
    assert "allowed now: ['watch-1']" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("address", "local"),
    [
        ("tcp://127.0.0.1:5555", True),
        ("tcp://127.8.0.1:5555", True),
        ("tcp://localhost:5555", True),
        ("tcp://[::1]:5555", True),
        ("ipc:///tmp/x", True),
        ("tcp://0.0.0.0:5555", False),
        ("tcp://*:5555", False),
        ("tcp://eth0:5555", False),
        ("tcp://10.1.2.3:5555", False),
    ],
)
def test_which_addresses_are_local(address, local):
    assert is_local(address) is local


def test_plaintext_beyond_loopback_is_refused_unless_accepted():
    exposed = {"sockets": {"ingest": "tcp://0.0.0.0:5555"}}
    with pytest.raises(ConfigError, match="sockets.ingest = tcp://0.0.0.0:5555 would accept unauthenticated"):
        load_daemon_config(None, [exposed])
    config = load_daemon_config(None, [exposed, {"security": {"allow_remote_plaintext": True}}])
    assert "exposed without authentication: ingest tcp://0.0.0.0:5555" in exposure_warning(
        config.security, {"ingest": config.sockets.ingest}
    )
    assert exposure_warning(config.security, {"ingest": "tcp://127.0.0.1:5555"}) is None


def test_half_a_curve_setup_or_missing_files_are_refused(tmp_path, keys):
    with pytest.raises(ConfigError, match="go together"):
        load_daemon_config(None, [{"security": {"curve_secret_key": str(keys / "server.key_secret")}}])
    with pytest.raises(ConfigError, match="no file"):
        load_daemon_config(
            None, [{"security": {"curve_secret_key": str(tmp_path / "nope"), "authorized_keys": str(keys)}}]
        )


def _curve_socket(ctx, kind, address, keys, client):
    sock = ctx.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    if client:
        curve_client(sock, keys / "server.key", keys / "clients" / f"{client}.key_secret")
    sock.connect(address)
    return sock


def test_only_authorized_wearables_get_in(est, keys, caplog):
    security = {"curve_secret_key": str(keys / "server.key_secret"), "authorized_keys": str(keys / "authorized")}
    x = simulated_ppg(72, 6.0, FS).astype(np.float32)
    caplog.set_level(logging.WARNING, logger="p2p_stream")
    with running_daemon(est, security=security) as (daemon, addresses):
        ctx = zmq.Context()
        try:
            req = _curve_socket(ctx, zmq.REQ, addresses["control"], keys, "watch-1")
            req.setsockopt(zmq.RCVTIMEO, 10_000)
            req.send(pack({"cmd": "ping"}))
            assert decode_map(req.recv()) == {"ok": True}  # an allowed key reaches the control socket
            good = _curve_socket(ctx, zmq.XPUB, addresses["ingest"], keys, "watch-1")
            good.setsockopt(zmq.RCVTIMEO, 10_000)
            assert good.recv()[:1] == b"\x01"  # handshake done: the daemon's subscription came through CURVE
            bad = [
                _curve_socket(ctx, zmq.PUB, addresses["ingest"], keys, "intruder"),  # revoked key
                _curve_socket(ctx, zmq.PUB, addresses["ingest"], keys, None),  # no CURVE at all
            ]
            bad_req = _curve_socket(ctx, zmq.REQ, addresses["control"], keys, "intruder")
            bad_req.send(pack({"cmd": "stats"}))
            time.sleep(0.5)  # the refused clients' handshakes fail meanwhile
            for i in range(0, len(x), 25):
                chunk = x[i : i + 25]
                good.send_multipart(encode_ingest("good", i // 25, 1.7e9 + i / FS, FS, chunk))
                for k, sock in enumerate(bad):
                    sock.send_multipart(encode_ingest(f"evil{k}", i // 25, 1.7e9 + i / FS, FS, chunk))
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                req.send(pack({"cmd": "stats"}))
                stats = decode_map(req.recv())
                refused = stats["rejected"]
                if stats["windows_total"] >= 3 and refused.get("auth_failed", 0) >= 2 and "handshake_failed" in refused:
                    break
                time.sleep(0.2)
            assert stats["windows_total"] >= 3  # the allowed wearable's windows were inferred
            assert set(daemon.parts.devices.streams) == {"good"}  # nothing of the refused clients reached a buffer
            assert refused.get("auth_failed", 0) >= 2, refused  # the revoked PUB and the revoked REQ
            assert refused.get("handshake_failed", 0) >= 1, refused  # the plaintext PUB
            assert bad_req.poll(500) == 0  # the refused control client gets no answer at all
        finally:
            ctx.destroy(linger=0)
    assert any("CURVE handshake failed" in r.getMessage() for r in caplog.records)
