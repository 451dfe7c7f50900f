"""One view of many daemons: `p2p monitor` behind a proxy keeps each daemon's latest heartbeat, adds up those still
beating in its header, shows a silent one as silent, tells apart two daemons of one name, and gives each daemon its
line in an 80×24 terminal; `p2p ctl stats` of several daemons adds them up with the same function. Heartbeats built
here where the claim is about the arithmetic; a real proxy, two daemon processes and the fleet where it is about
what arrives."""

from __future__ import annotations

import io
import re
import signal
import time
from contextlib import ExitStack

import pytest
from rich.console import Console
from test_cluster import IDS, cluster_ends, fleet_of, member
from test_dashboard import HEARTBEAT, NOW, cell, estimate, text_of
from zmq_helpers import request, wait_ready

from p2p_stream.stream.cluster.ownership import owner
from p2p_stream.tools.cli.ctl import main as ctl_main
from p2p_stream.tools.dashboard.app import DashboardState, View, pump, render, rows_that_fit, subscribe
from p2p_stream.tools.dashboard.daemons import HEARTBEAT_LOST_S, cluster_total
from p2p_stream.wire.protocol import decode_estimate, encode_estimate, encode_status


def beat(state: DashboardState, at: float, **fields) -> None:
    """One heartbeat into `state` at `at` (monotonic), HEARTBEAT with `fields` over it."""
    state.update(encode_status({**HEARTBEAT, **fields}), at)


def header(text: str) -> str:
    """The header panel's text on one line."""
    lines = text.splitlines()
    end = next(i for i, line in enumerate(lines) if line.startswith("╰"))
    return " ".join(" ".join(line.strip("│╭╮ ").split()) for line in lines[1:end])


def daemon_row(text: str, label: str) -> list[str]:
    """The cells of `label`'s line in the per-daemon table (split where columns are two or more spaces apart)."""
    line = next(line for line in text.splitlines() if line.startswith(label + " "))
    return re.split(r"\s{2,}", line.strip())


def two_daemons() -> DashboardState:
    """Daemons a and b of a cluster, ten devices each, with their own figures; one estimate per device."""
    s = DashboardState("tcp://127.0.0.1:5556")
    a = {"daemon": "a", "devices": 10, "windows_per_s": 3.5, "latency_p50_ms": 12.0, "latency_p99_ms": 40.0,
         "rejected": {"flatline": 2, "not_msgpack": 1, "time_gap": 5}, "queue": 3, "messages_total": 1000}  # fmt: skip
    b = {"daemon": "b", "devices": 10, "windows_per_s": 4.25, "latency_p50_ms": 20.0, "latency_p99_ms": 61.0,
         "rejected": {"flatline": 7, "nan": 1}, "queue": 0, "messages_total": 2500, "uptime_s": 9.0}  # fmt: skip
    beat(s, NOW, **a)
    beat(s, NOW, **b)
    for k in range(20):
        e = decode_estimate(estimate(f"bed-{k:02d}", 120.0, 78.0))
        s.update(encode_estimate({**e, "daemon": "ab"[k % 2]}), NOW)
    return s


def test_the_header_adds_up_every_daemon_and_says_how_many():
    text = text_of(render(two_daemons(), now=NOW + 0.5))
    top = header(text)
    assert "2 daemons" in top and "devices 20" in top and "windows/s 7.8" in top  # 3.5 + 4.25 = 7.75
    assert "rejected 11 (flatline 9, not_msgpack 1, nan 1)" in top and "breaks 5" in top  # a's 3 + b's 8; gaps apart
    # Percentiles do not add up: the p50s as a range, the worst p99, said to be the worst.
    assert "latency p50 12–20 ms, worst p99 61 ms" in top
    assert daemon_row(text, "a") == ["a", "10", "3.5", "40", "3", "3", "0 s ago"]
    assert daemon_row(text, "b") == ["b", "10", "4.2", "61", "0", "8", "0 s ago"]  # 4.25 printed to one place
    assert cell(text, "bed-00", "daemon") == "a" and cell(text, "bed-01", "daemon") == "b"  # who estimated it


def test_one_daemon_looks_as_it_always_did():
    s = DashboardState("tcp://127.0.0.1:5556")
    beat(s, NOW, daemon="ward-host")
    text = text_of(render(s, now=NOW))
    assert "daemons" not in text and "latency p50/p99 12 / 40 ms" in header(text) and "devices 7" in header(text)


def test_a_daemon_that_stops_beating_is_shown_silent_and_left_out_of_the_sums():
    s = two_daemons()
    for k in range(1, 5):  # a beats on each second; b's last heartbeat was at NOW
        beat(s, NOW + k, daemon="a", devices=10, windows_per_s=3.5, uptime_s=5 + k)
    alive = text_of(render(s, now=NOW + HEARTBEAT_LOST_S))  # b's last heartbeat three seconds ago: not yet silent
    assert "2 daemons" in header(alive) and "devices 20" in header(alive)
    text = text_of(render(s, now=NOW + 4))
    assert "1 daemon + 1 silent" in header(text) and "devices 10" in header(text) and "windows/s 3.5" in header(text)
    assert daemon_row(text, "b")[-1] == "silent 4 s" and daemon_row(text, "a")[-1] == "0 s ago"
    assert "worst p99" not in header(text) and "12 / 40 ms" in header(text)  # one daemon beating: its own figures
    beat(s, NOW + 5, daemon="b", devices=10, uptime_s=14.0)  # b again, the same run: counted again
    assert "2 daemons" in header(text_of(render(s, now=NOW + 5)))


def test_a_daemon_that_beats_slower_is_silent_after_three_of_its_own_periods():
    s = DashboardState("a")
    beat(s, NOW, daemon="a", uptime_s=10.0)
    beat(s, NOW + 2, daemon="a", uptime_s=12.0)  # every 2 s
    beat(s, NOW + 2, daemon="b", uptime_s=12.0)
    at = NOW + 7  # a: 5 s since its heartbeat, under 3 × 2 s; b (one heartbeat, period unknown): over 3 s
    assert [d.label for d in s.daemons.silent(at)] == ["b"]
    assert [d.label for d in s.daemons.silent(NOW + 8.5)] == ["a", "b"]


def test_two_daemons_of_one_name_are_told_apart_by_when_they_started():
    """Two daemons running alone on one host both report the host name: each counts, and the screen says so."""
    s = DashboardState("a")
    for k in range(3):  # one started 30 s before the dashboard, the other 8 s before: interleaved heartbeats
        beat(s, NOW + k, daemon="host-1", devices=4, uptime_s=30.0 + k)
        beat(s, NOW + k + 0.1, daemon="host-1", devices=6, uptime_s=8.1 + k)
    assert [d.label for d in s.daemons.heard] == ["host-1", "host-1 #2"]
    text = text_of(render(s, now=NOW + 2.5))
    assert "2 daemons" in header(text) and "devices 10" in header(text)
    assert "host-1: one name, several daemons" in text
    assert daemon_row(text, "host-1 #2")[:2] == ["host-1 #2", "6"]


def test_a_restarted_daemon_takes_its_own_place():
    s = DashboardState("a")
    beat(s, NOW, daemon="a", uptime_s=100.0)
    beat(s, NOW + 1, daemon="b", uptime_s=50.0)
    beat(s, NOW + 6, daemon="a", uptime_s=2.0)  # a restarted 4 s after its last heartbeat: the same daemon again
    assert [d.label for d in s.daemons.heard] == ["a", "b"] and s.daemons.live(NOW + 6)[0].heartbeat["uptime_s"] == 2
    assert "1 daemon + 1 silent" in header(text_of(render(s, now=NOW + 6)))  # b, not a's former run, is silent


def test_a_heartbeat_without_a_daemon_name_is_one_unnamed_daemon():
    s = DashboardState("a")
    beat(s, NOW, devices=3)  # HEARTBEAT has no `daemon`: a daemon older than the key
    beat(s, NOW + 1, devices=3, uptime_s=6)
    beat(s, NOW + 1, daemon="a", devices=2)
    text = text_of(render(s, now=NOW + 1))
    assert "2 daemons" in header(text) and "devices 5" in header(text)
    assert daemon_row(text, "(unnamed)")[:2] == ["(unnamed)", "3"]


def test_the_cluster_total_is_exact():
    a = {**HEARTBEAT, "queue": 2, "messages_total": 7, "batches_total": 3, "foreign_total": 11, "windows_per_s": 0.1}
    b = {**HEARTBEAT, "queue": 5, "messages_total": 9, "batches_total": 4, "windows_per_s": 0.2, "model": "other@1"}
    total = cluster_total([a, b])
    assert {k: total[k] for k in ("daemons", "devices", "windows_total", "queue", "messages_total")} == {
        "daemons": 2,
        "devices": 14,
        "windows_total": 140,
        "queue": 7,
        "messages_total": 16,
    }
    assert total["windows_per_s"] == 0.3 and total["foreign_total"] == 11  # not 0.30000000000000004
    assert total["rejected"] == {"flatline": 4, "not_msgpack": 2}
    assert total["latency_p50_ms_range"] == [12.0, 12.0] and total["latency_p99_ms_worst"] == 40.0
    assert total["models"] == ["conv-lstm@abcd", "other@1"]
    assert "foreign_total" not in cluster_total([HEARTBEAT]) and cluster_total([])["devices"] == 0


def test_three_daemons_and_twenty_devices_fit_an_80_by_24_terminal():
    s = two_daemons()
    beat(s, NOW - 10, daemon="c-with-a-longer-name", devices=4)  # silent
    console = Console(file=io.StringIO(), width=80, height=24, color_system=None)
    console.print(render(s, now=NOW + 1, max_rows=rows_that_fit(console, s, View(), now=NOW + 1)))
    text = console.file.getvalue()
    lines = text.splitlines()
    assert len(lines) < 24 and all(len(line) <= 80 for line in lines), text
    assert "research use" in lines[-1] and "… and" in text and "2 daemons + 1 silent" in header(text)
    assert daemon_row(text, "c-with-a-longer-name")[-1] == "silent 11 s"
    assert len([line for line in lines if line.startswith("bed-")]) >= 3  # devices still shown beside the daemons


# ---------------------------------------------------------------- real processes: a proxy, two daemons, the fleet


def test_a_cluster_behind_a_proxy_is_one_view_and_a_killed_daemon_goes_silent(capsys):
    names = ("a", "b")
    flags = ("--set", f"cluster.members={','.join(names)}")
    with cluster_ends() as (ends, sub), ExitStack() as stack:
        procs = {n: stack.enter_context(member(ends, n, *flags)) for n in names}
        for n in names:
            wait_ready(ends[n])
        ctx, sock = subscribe(ends["subscribers"])
        stack.callback(ctx.destroy, 0)
        state = DashboardState(ends["subscribers"])
        time.sleep(1.0)  # every daemon's subscription has reached the proxy
        pub = fleet_of(ends, IDS)
        stack.callback(pub.wait, 10)
        stack.callback(pub.kill)

        def heard(until, timeout_s: float) -> None:
            deadline = time.monotonic() + timeout_s
            while not until():
                assert time.monotonic() < deadline, text_of(render(state))
                pump(sock, state, 100)

        def counted() -> bool:
            live = state.daemons.live(time.monotonic())
            return len(live) == 2 and sum(d.heartbeat["devices"] for d in live) == len(IDS)

        heard(counted, 60)
        owned = {n: sum(owner(d, names) == n for d in IDS) for n in names}
        top = header(text_of(render(state)))
        assert f"devices {len(IDS)}" in top and "2 daemons" in top, top
        heard(lambda: len(state.devices) == len(IDS), 30)
        text = text_of(render(state))
        assert all(cell(text, d, "daemon") == owner(d, names) for d in IDS[:5])

        # p2p ctl stats of both: each daemon's table and the total, summed by the same function.
        assert ctl_main(["stats", "--control", ends["a"], "--control", ends["b"]]) == 0
        out = capsys.readouterr().out
        assert f"daemon a at {ends['a']}" in out and f"daemon b at {ends['b']}" in out
        total = out[out.index("cluster: 2 daemons") :]
        assert re.search(rf"^  devices +{len(IDS)}$", total, re.M), out

        procs["b"].send_signal(signal.SIGKILL)
        killed = time.monotonic()
        procs["b"].wait(10)
        heard(lambda: [d.label for d in state.daemons.silent(time.monotonic())] == ["b"], HEARTBEAT_LOST_S + 3)
        took_s = time.monotonic() - killed
        text = text_of(render(state))
        assert "1 daemon + 1 silent" in header(text) and f"devices {owned['a']}" in header(text), text
        assert daemon_row(text, "b")[-1].startswith("silent")
        assert request(ends["a"], {"cmd": "stats"})["devices"] == owned["a"]
    print(f"\nb shown silent {took_s:.1f} s after kill -9 (its last heartbeat ≤ 1 s before)")
    assert took_s <= HEARTBEAT_LOST_S + 1.5


@pytest.mark.parametrize("argv", [["ping", "--control", "ipc:///tmp/x1", "--control", "ipc:///tmp/x2"]])
def test_several_addresses_are_for_stats_only(argv, capsys):
    assert ctl_main(argv) == 2
    assert "ping goes to one daemon" in capsys.readouterr().err
