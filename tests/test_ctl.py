"""`p2p ctl`, the operator's command, against a real daemon process: ping, a readable stats table, calibrate and
forget of a streamed wearable, the daemon's refusals passed on, and clear errors when no daemon (or no key) answers."""

from __future__ import annotations

import json
import time

import msgpack
import numpy as np
import pytest
from helpers import simulated_ppg
from zmq_helpers import client, daemon_process, ipc_addresses, wait_ready

from p2p_stream.tools.cli.ctl import DEFAULT_CONTROL, render_stats
from p2p_stream.tools.cli.ctl import main as ctl_main
from p2p_stream.tools.cli.keys import main as keys_main
from p2p_stream.wire.protocol import encode_ingest

FS = 125.0
T0 = 1_700_000_000.0


def ctl(capsys, *argv: str) -> tuple[int, str, str]:
    """Run `p2p ctl argv`; (exit status, stdout, stderr)."""
    code = ctl_main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def daemon():
    """One plain daemon process for the module, its state in memory (`state.path=`); its addresses."""
    with ipc_addresses() as addresses, daemon_process(addresses, "--set", "state.path=") as proc:
        wait_ready(addresses["control"])
        assert proc.poll() is None, proc.output()
        yield addresses


def test_the_default_control_address_is_the_daemon_s():
    from p2p_stream.config.daemon import load_daemon_config

    assert DEFAULT_CONTROL == load_daemon_config(None, []).sockets.control


def test_ping_says_the_daemon_is_up(daemon, capsys):
    code, out, err = ctl(capsys, "ping", "--control", daemon["control"])
    assert code == 0, err
    assert f"the daemon at {daemon['control']} is up" in out
    # The connection flags may come before the command too.
    assert ctl(capsys, "--control", daemon["control"], "ping")[0] == 0


def test_stats_table_has_the_heartbeat_and_the_rejected_counts_most_first(daemon, capsys):
    with client(daemon) as c:
        for _ in range(5):  # 5 × not_msgpack, 2 × bad_version: a known order at the top
            c.pub.send_multipart([b"ppg.junk", b"\xc1 not msgpack"])
        good = msgpack.unpackb(encode_ingest("junk", 0, T0, FS, np.ones(25))[1])
        for _ in range(2):
            c.pub.send_multipart([b"ppg.junk", msgpack.packb({**good, "v": 2})])
        c.stream("table-1", simulated_ppg(72, 6.0, FS, seed=1).astype(np.float32), FS)
        c.estimates(lambda got: any(e["device"] == "table-1" for e in got))
        deadline = time.monotonic() + 10
        while (rejected := c.control({"cmd": "stats"})["rejected"]).get("bad_version", 0) < 2:
            assert time.monotonic() < deadline, rejected
    code, out, err = ctl(capsys, "stats", "--control", daemon["control"])
    assert code == 0, err
    code, raw, _ = ctl(capsys, "stats", "--control", daemon["control"], "--json")
    reply = json.loads(raw)
    assert code == 0 and reply["ok"] is True and reply["devices"] >= 1
    lines = out.splitlines()
    assert lines[0] == f"daemon at {daemon['control']}"
    table = {line.split("  ")[1].strip(): line.split("  ", 2)[-1].strip() for line in lines[1:]}
    for label in ("uptime", "devices", "windows/s", "latency p50 / p99", "queue", "model", "rejected"):
        assert label in table, out
    assert table["devices"] == str(reply["devices"])
    assert table["rejected"] == f"{sum(reply['rejected'].values()):,}"
    reasons = [line.split()[0] for line in lines[lines.index(next(x for x in lines if "rejected" in x)) + 1 :]]
    counts = [reply["rejected"][r] for r in reasons]
    assert set(reasons) == set(reply["rejected"]) and counts == sorted(counts, reverse=True), out
    assert reasons.index("not_msgpack") < reasons.index("bad_version")


def test_stats_table_renders_every_figure():
    stats = {
        "ok": True, "uptime_s": 3725.2, "devices": 1234, "windows_total": 98765, "windows_per_s": 41.25,
        "batch_mean": 7.5, "latency_p50_ms": 12.34, "latency_p99_ms": 48.9, "queue": 3, "messages_total": 5_000_000,
        "model": "conv-lstm@db6b43cb", "backend_device": "cuda:0", "rejected": {"gap": 2, "time_gap": 9, "nan": 2},
    }  # fmt: skip
    text = render_stats(stats, "tcp://10.0.0.5:5557")
    assert text.splitlines() == [
        "daemon at tcp://10.0.0.5:5557",
        "  uptime             1 h 02 min",
        "  devices            1,234",
        "  windows/s          41.2  (98,765 in all)",
        "  latency p50 / p99  12.3 / 48.9 ms",
        "  queue              3 windows",
        "  batch mean         7.5",
        "  messages           5,000,000",
        "  model              conv-lstm@db6b43cb on cuda:0",
        "  rejected           13",
        "    time_gap         9",
        "    gap              2",
        "    nan              2",
    ]
    fresh = render_stats({"uptime_s": 0.4, "latency_p50_ms": None, "latency_p99_ms": None, "rejected": {}}, "x")
    assert "latency p50 / p99  — / — ms" in fresh and "rejected           none" in fresh


def test_calibrate_and_forget_a_streamed_wearable(daemon, capsys):
    x = simulated_ppg(72, 16.0, FS, seed=2).astype(np.float32)
    control = ("--control", daemon["control"])
    with client(daemon) as c:
        seq = c.stream("watch-7", x[:1250], FS)  # 10 s: 7 estimates, enough to form a reference at once
        c.estimates(lambda got: len([e for e in got if e["device"] == "watch-7" and e["ok"]]) >= 5)
        code, out, err = ctl(capsys, "calibrate", "watch-7", "121", "79", *control)
        assert code == 0, err
        assert out.strip() == "calibrated watch-7 with 121/79 mmHg: its estimates are calibrated from now on"
        c.stream("watch-7", x[1250:], FS, t0=T0 + 1250 / FS, seq0=seq)  # its next windows come out calibrated
        later = c.estimates(lambda got: any(e["device"] == "watch-7" and e["calibrated"] for e in got))
        assert any(e["calibrated"] for e in later if e["device"] == "watch-7")

        code, out, err = ctl(capsys, "forget", "watch-7", *control)
        assert (code, out.strip()) == (0, "forgot watch-7: its buffer, calibration and smoothing are dropped"), err
        code, out, _ = ctl(capsys, "forget", "watch-7", *control)
        assert code == 0 and "watch-7 was not known" in out
        # Forgotten: a calibration is the daemon's error now, passed on with exit status 2.
        code, out, err = ctl(capsys, "calibrate", "watch-7", "121", "79", *control)
        assert code == 2 and out == ""
        assert err.strip() == (
            f"error: the daemon at {daemon['control']} refused calibrate: unknown device 'watch-7': it has sent no "
            "data (or was forgotten)"
        )


def test_history_lists_each_change_with_a_state_store_and_says_what_is_missing_without(daemon, capsys, tmp_path):
    x = simulated_ppg(72, 10.0, FS, seed=2).astype(np.float32)
    with ipc_addresses() as addresses, daemon_process(addresses, "--set", f"state.path={tmp_path / 's.db'}"):
        wait_ready(addresses["control"])
        control = ("--control", addresses["control"])
        with client(addresses) as c:
            c.stream("watch-7", x, FS)
            c.estimates(lambda got: len([e for e in got if e["device"] == "watch-7" and e["ok"]]) >= 5)
        assert ctl(capsys, "calibrate", "watch-7", "121", "79", *control)[0] == 0
        assert ctl(capsys, "forget", "watch-7", *control)[0] == 0
        code, out, err = ctl(capsys, "history", "watch-7", *control)
        assert code == 0, err
        lines = out.strip().splitlines()
        assert lines[0] == "history of watch-7 (UTC; who: the CURVE key that asked, '-' without CURVE)"
        assert [line.split()[2:] for line in lines[1:]] == [
            ["calibrate", "121/79", "mmHg", "ok", "-"],
            ["forget", "ok", "-"],
        ]
        code, out, _ = ctl(capsys, "history", "watch-7", "--limit", "1", "--json", *control)
        assert code == 0 and [h["cmd"] for h in json.loads(out)["history"]] == ["forget"]
        assert (
            ctl(capsys, "history", "watch-8", *control)[1].strip()
            == "no calibrate or forget of watch-8 in the daemon's state store"
        )
    code, out, err = ctl(capsys, "history", "watch-7", "--control", daemon["control"])
    assert code == 2 and out == ""
    assert "refused history: history needs the daemon's state store: start it with --set state.path=FILE" in err


def test_the_daemon_s_refusals_are_its_own_words_and_exit_2(daemon, capsys):
    code, _, err = ctl(capsys, "calibrate", "nobody", "120", "80", "--control", daemon["control"])
    assert code == 2 and "refused calibrate: unknown device 'nobody'" in err
    code, _, err = ctl(capsys, "calibrate", "nobody", "80", "120", "--control", daemon["control"])
    assert code == 2 and "implausible cuff reading 80.0/120.0 mmHg" in err
    code, _, err = ctl(capsys, "forget", "no good", "--control", daemon["control"])  # checked before sending
    assert code == 2 and "'no good' is not a device id" in err


def test_no_daemon_is_a_clear_error_within_the_timeout(capsys, tmp_path):
    address = f"ipc://{tmp_path}/nobody"
    start = time.monotonic()
    code, out, err = ctl(capsys, "ping", "--control", address, "--timeout-s", "0.5")
    assert time.monotonic() - start < 2.5
    assert code == 2 and out == ""
    assert err.startswith(f"error: no daemon answered at {address} within 0.5 s: it may not be running")
    assert "CURVE" in err and "--curve-server-key" in err and err.count("\n") == 1


@pytest.mark.parametrize(
    "argv,message",
    [
        (["ping", "--timeout-s", "0"], "--timeout-s must be > 0 seconds"),
        (["history", "watch", "--limit", "0"], "--limit is a number of rows, 1–1000; got 0"),
        (["ping", "--control", "localhost:5557"], "--control 'localhost:5557' has no scheme"),
        (["ping", "--curve-server-key", "keys/server.key"], "--curve-server-key and --curve-client-key go together"),
    ],
)
def test_a_mistake_is_one_line_before_anything_is_sent(argv, message, capsys):
    code, _, err = ctl(capsys, *argv)
    assert code == 2 and message in err and err.count("\n") == 1


# ---------------------------------------------------------------- CURVE


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ctl") / "keys"
    assert keys_main(["init", str(folder)]) == 0
    assert keys_main(["client", "operator", "--dir", str(folder)]) == 0
    assert keys_main(["client", "ward-a", "--dir", str(folder), "--devices", "a-*"]) == 0
    assert keys_main(["client", "intruder", "--dir", str(folder)]) == 0
    assert keys_main(["revoke", "intruder", "--dir", str(folder)]) == 0  # a key pair the daemon does not allow
    return folder


def curve_flags(keys, name: str, server: str = "server.key") -> tuple[str, ...]:
    return "--curve-server-key", str(keys / server), "--curve-client-key", str(keys / "clients" / f"{name}.key_secret")


def test_with_curve_the_right_key_works_and_a_wrong_one_is_named(keys, capsys):
    flags = (
        "--set", f"security.curve_secret_key={keys / 'server.key_secret'}",
        "--set", f"security.authorized_keys={keys / 'authorized'}",
    )  # fmt: skip
    with ipc_addresses() as addresses, daemon_process(addresses, *flags) as proc:
        control = ("--control", addresses["control"], "--timeout-s", "3")
        deadline = time.monotonic() + 60
        while ctl(capsys, "ping", *control, *curve_flags(keys, "operator"))[0] != 0:
            assert time.monotonic() < deadline and proc.poll() is None, proc.output()
        code, out, err = ctl(capsys, "stats", *control, *curve_flags(keys, "operator"))
        assert code == 0 and "devices            0" in out, err

        start = time.monotonic()
        code, _, err = ctl(capsys, "ping", *control, *curve_flags(keys, "intruder"))
        assert code == 2 and time.monotonic() - start < 3  # the refusal ends the wait: no timeout
        assert f"the daemon at {addresses['control']} refused this client's key: it may not be authorized" in err

        code, _, err = ctl(capsys, "ping", *control)
        assert code == 2 and "requires CURVE and this client gave no keys; give --curve-server-key" in err

        code, _, err = ctl(capsys, "ping", *control, *curve_flags(keys, "operator", "clients/operator.key"))
        assert code == 2 and "--curve-server-key may not be its public key" in err

        # A key bound to a-* may not forget another's device: the daemon's words, exit status 2.
        code, _, err = ctl(capsys, "forget", "c-1", *control, *curve_flags(keys, "ward-a"))
        assert code == 2 and "refused forget: unauthorized_device: 'c-1'" in err


def test_keys_given_to_a_daemon_without_curve_are_named(daemon, keys, capsys):
    code, _, err = ctl(capsys, "ping", "--control", daemon["control"], *curve_flags(keys, "operator"))
    assert code == 2 and f"the daemon at {daemon['control']}" in err and "not use CURVE" in err


# ---------------------------------------------------------------- several daemons


def test_stats_of_several_daemons_gives_each_its_table_and_the_exact_total(daemon, capsys, tmp_path):
    """Two daemons running alone report the same name (the host's): told apart by their control addresses."""
    x = simulated_ppg(72, 6.0, FS, seed=3).astype(np.float32)
    with ipc_addresses() as other, daemon_process(other):
        wait_ready(other["control"])
        for addresses, devices in ((daemon, ("sum-1",)), (other, ("sum-2", "sum-3"))):
            with client(addresses) as c:
                for device in devices:
                    c.stream(device, x, FS)
                c.estimates(lambda got, devices=devices: {e["device"] for e in got} >= set(devices))
        controls = ("--control", daemon["control"], "--control", other["control"])
        code, out, err = ctl(capsys, "stats", *controls)
        assert code == 0, err
        code, raw, _ = ctl(capsys, "stats", *controls, "--json")
        dead = f"ipc://{tmp_path}/nobody"
        partial = ctl(capsys, "stats", *controls, "--control", dead, "--timeout-s", "0.5")
    replies = [d["reply"] for d in json.loads(raw)["daemons"]]
    total = json.loads(raw)["cluster"]
    name = replies[0]["daemon"]
    assert code == 0 and replies[1]["daemon"] == name  # one host name for both
    assert total["devices"] == replies[0]["devices"] + replies[1]["devices"] and total["daemons"] == 2
    assert total["messages_total"] == sum(r["messages_total"] for r in replies)
    reasons = set(replies[0]["rejected"]) | set(replies[1]["rejected"])
    assert total["rejected"] == {k: sum(r["rejected"].get(k, 0) for r in replies) for k in reasons}
    assert total["latency_p99_ms_worst"] == max(r["latency_p99_ms"] for r in replies)
    blocks = out.strip().split("\n\n")
    assert [b.splitlines()[0] for b in blocks] == [
        f"daemon {name} at {daemon['control']}",
        f"daemon {name} at {other['control']}",
        f"cluster: 2 daemons ({name}: one name, several daemons)",
    ]
    table = {line.split("  ")[1].strip(): line.split("  ", 2)[-1].strip() for line in blocks[2].splitlines()[1:]}
    assert table["devices"] == f"{total['devices']:,}" and table["daemons"] == "2"
    assert table["latency p99"].endswith("ms  (the worst daemon's)")
    code, out, err = partial  # one address answered nothing: the others are printed, the error names it
    assert code == 2 and "cluster: 2 daemons" in out
    assert err.startswith("error: 1 of 3 daemons did not answer (left out of the total): " + dead)


def test_one_address_twice_would_count_a_daemon_twice(capsys):
    code, _, err = ctl(capsys, "stats", "--control", "ipc:///tmp/a", "--control", "ipc:///tmp/a")
    assert code == 2 and "an address given twice" in err
