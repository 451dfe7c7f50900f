"""The dashboard rendered into a recorded console: rows, order, colours and messages; p2p-monitor --once live.

What a newcomer reads at 80 and 160 columns (labels, legend, widths, order) is in test_dashboard_readable.py.
"""

import io
import re
import subprocess
import sys
import time

import numpy as np
import pytest
from helpers import simulated_ppg
from rich.console import Console
from zmq_helpers import client, running_daemon

from p2p_stream import Estimator
from p2p_stream.tools.dashboard.app import DashboardState, View, render
from p2p_stream.tools.dashboard.category import bp_category
from p2p_stream.tools.dashboard.columns import sparkline
from p2p_stream.wire.estimate import INTERVAL_KEYS, example_estimate
from p2p_stream.wire.protocol import encode_estimate, encode_status

NOW = 1000.0


def estimate(device, sbp, dbp, reason=None, ref=None, seq=0, interval=None, calibrated=True):
    """One estimate's frames (`example_estimate`): accepted at `sbp`/`dbp`, or rejected for `reason` (numbers nil);
    `interval`: (SBP half-width, DBP half-width, level), bounds nil on a rejected window. Calibrated unless told
    otherwise: a category is named only for a calibrated estimate."""
    values = {"sbp": sbp, "dbp": dbp, "calibrated": calibrated} if reason is None else {}
    if interval and reason is None:
        s_half, d_half, _ = interval
        values.update(zip(INTERVAL_KEYS, (sbp - s_half, sbp + s_half, dbp - d_half, dbp + d_half)))
    level = interval[2] if interval else None
    e = example_estimate(reason, device=device, seq=seq, t=0.0, sqi=0.9, model="m", interval=level, ref=ref, **values)
    return encode_estimate(e)


HEARTBEAT = {
    "uptime_s": 5,
    "devices": 7,
    "windows_total": 70,
    "windows_per_s": 3.5,
    "batch_mean": 2.5,
    "latency_p50_ms": 12.0,
    "latency_p99_ms": 40.0,
    "rejected": {"flatline": 2, "not_msgpack": 1},
    "model": "conv-lstm@abcd",
}


def device_line(text, device):
    return next(line for line in text.splitlines() if re.search(rf"(^|\s){re.escape(device)}\s", line))


def cell(text, device, title):
    """What a reader finds in `device`'s row under the column titled `title` ("" when that cell is empty).

    Right-aligned columns end where their title ends; the left-aligned ones (device, status, daemon) start where it
    starts.
    A cell holds single spaces at most (`128 ±16`, `stage 1 hypertension`); columns are two or more apart.
    """
    header = next(line for line in text.splitlines() if line.startswith("device "))
    title_at = re.search(rf"(?<!\S){re.escape(title)}(?!\S)", header)
    assert title_at, f"no column {title!r} in {header!r}"
    line = device_line(text, device)
    if title in ("device", "status", "daemon"):
        found = re.match(r"\S+(?: \S+)*", line[title_at.start() :])
    else:
        found = re.search(r"\S+(?: \S+)*$", line[: title_at.end()])
    return found.group(0) if found else ""


def state_with_devices():
    s = DashboardState("tcp://127.0.0.1:5556")
    s.update(encode_status(HEARTBEAT), NOW)
    for frames in (
        estimate("normal-1", 112, 70, ref=(110, 72)),
        estimate("elevated-1", 124, 75),
        estimate("hypo-1", 85, 55),
        estimate("stage1-1", 134, 82),
        estimate("stage2-1", 150, 95),
        estimate("crisis-1", 185, 100),
        estimate("loose-1", 0, 0, reason="flatline"),
    ):
        s.update(frames, NOW)
    return s


def text_of(renderable, color_system=None, width=160):
    out = io.StringIO()
    Console(file=out, width=width, color_system=color_system, force_terminal=color_system is not None).print(renderable)
    return out.getvalue()


def test_rows_sort_by_attention_on_request_and_show_everything():
    text = text_of(render(state_with_devices(), now=NOW, view=View(sort="attention")))
    order = [text.index(d) for d in ("crisis-1", "stage2-1", "loose-1", "stage1-1", "hypo-1", "elevated-1", "normal-1")]
    assert order == sorted(order)
    assert [cell(text, "crisis-1", title) for title in ("SBP", "DBP", "status", "pulse")] == [
        "185",
        "100",
        "hypertensive crisis",
        "72",
    ]
    assert cell(text, "loose-1", "status") == "rejected: flatline"
    assert cell(text, "normal-1", "cuff") == "110/72" and cell(text, "normal-1", "est−cuff") == "+2/-2"
    assert "devices 7" in text and "windows/s 3.5" in text and "12 / 40 ms" in text and "flatline 2" in text


def test_categories_have_their_colours():
    text = text_of(render(state_with_devices(), now=NOW), color_system="standard")
    codes = {
        device: re.search(r"\x1b\[([0-9;]+)m *" + sbp + r"\b", device_line(text, device)).group(1)
        for device, sbp in (("stage2-1", "150"), ("normal-1", "112"), ("hypo-1", "85"), ("crisis-1", "185"))
    }
    assert codes == {"stage2-1": "31", "normal-1": "32", "hypo-1": "36", "crisis-1": "1;37;41"}  # red, green, cyan


@pytest.mark.parametrize(
    "sbp,dbp,category",
    [
        (185, 100, "crisis"),
        (120, 125, "crisis"),
        (145, 70, "stage 2"),
        (120, 92, "stage 2"),
        (132, 70, "stage 1"),
        (115, 85, "stage 1"),
        (85, 70, "hypotension"),
        (110, 55, "hypotension"),
        (125, 70, "elevated"),
        (110, 70, "normal"),
    ],
)
def test_aha_categories(sbp, dbp, category):
    assert bp_category(sbp, dbp) == category


def demo_like_state(interval=(16.0, 9.0, 0.8)):
    """Eight devices named like the demo's, with references, a full trend and (by default) intervals."""
    s = DashboardState("tcp://127.0.0.1:5556")
    s.update(encode_status(HEARTBEAT), NOW)
    refs = [(161, 89), (182, 80), (161, 95), (133, 77), (107, 63), (123, 75), (127, 83), (80, 48)]
    for i, ref in enumerate(refs):
        for k in range(24):
            s.update(estimate(f"ppgbp-{100 + i}", 125.0 + (k % 5), 80.0, ref=ref, seq=k, interval=interval), NOW)
    return s


def test_intervals_sit_beside_the_estimates_with_the_level_once():
    s = state_with_devices()
    s.update(estimate("wide-1", 128, 80, interval=(16, 9, 0.8)), NOW)
    s.update(estimate("wide-2", 110, 70, interval=(12, 7, 0.8)), NOW)
    text = text_of(render(s, now=NOW))
    assert "128 ±16" in device_line(text, "wide-1") and "80 ±9" in device_line(text, "wide-1")
    assert "110 ±12" in device_line(text, "wide-2") and "70 ±7" in device_line(text, "wide-2")
    assert text.count("80 %") == 1 and "± 80 % prediction interval" in text  # the level once, in the legend
    assert "±" not in device_line(text, "normal-1")  # a row without interval keys shows its estimate alone


def test_an_80_column_terminal_keeps_every_row_readable_with_intervals():
    text = text_of(render(demo_like_state(), now=NOW), width=80)
    lines = text.splitlines()
    assert all(len(line) <= 80 for line in lines)
    assert "± 80 % prediction interval" in text and text.count("80 %") == 1
    for i, ref in enumerate([(161, 89), (182, 80), (161, 95), (133, 77), (107, 63), (123, 75), (127, 83), (80, 48)]):
        line = device_line(text, f"ppgbp-{100 + i}")
        assert "…" not in line, line  # nothing cut: device, estimates ± interval, status, SQI, pulse, cuff
        assert cell(text, f"ppgbp-{100 + i}", "SBP") == "128 ±16" and cell(text, f"ppgbp-{100 + i}", "DBP") == "80 ±9"
        assert cell(text, f"ppgbp-{100 + i}", "cuff") == f"{ref[0]}/{ref[1]}"
        assert cell(text, f"ppgbp-{100 + i}", "pulse") == "72"


def test_without_intervals_the_estimate_stands_alone_at_any_width():
    for width in (80, 160):
        text = text_of(render(demo_like_state(interval=None), now=NOW), width=width)
        assert "interval" not in text and "±" not in text and "%" not in text
        line = device_line(text, "ppgbp-100")
        assert cell(text, "ppgbp-100", "SBP") == "128" and cell(text, "ppgbp-100", "DBP") == "80"
        assert "161/89" in line and "…" not in line


def test_a_rejected_window_keeps_the_last_estimate_and_its_interval():
    s = DashboardState("a")
    s.update(encode_status(HEARTBEAT), NOW)
    s.update(estimate("wrist-1", 128, 80, interval=(16, 9, 0.8)), NOW)
    s.update(estimate("wrist-1", 0, 0, reason="no_pulse", interval=(16, 9, 0.8), seq=1), NOW)
    line = device_line(text_of(render(s, now=NOW)), "wrist-1")
    assert "128 ±16" in line and "80 ±9" in line and "rejected: no_pulse" in line


def test_no_daemon_message():
    s = DashboardState("tcp://127.0.0.1:5999")
    text = text_of(render(s, now=s.started + 5))
    assert "No daemon reachable at tcp://127.0.0.1:5999" in text and "No estimates yet" in text


def test_stale_heartbeat_means_unreachable():
    s = state_with_devices()
    assert "No daemon reachable" in text_of(render(s, now=NOW + 10))


def test_a_thousand_devices_stay_readable():
    s = DashboardState("a")
    s.update(encode_status(HEARTBEAT), NOW)
    rng = np.random.default_rng(0)
    for i in range(1000):
        s.update(estimate(f"dev{i:04d}", float(rng.uniform(100, 125)), 70.0), NOW)
    s.update(estimate("ward9-crisis", 200, 110), NOW)
    text = text_of(render(s, now=NOW, max_rows=20, view=View(sort="attention")))
    assert text.index("ward9-crisis") < text.index("dev0")
    assert "… and 981 more devices" in text
    assert len(text.splitlines()) < 40
    by_id = text_of(render(s, now=NOW, max_rows=20))  # the crisis is below the cut, and the screen says so
    assert "ward9-crisis" not in by_id and "… and 981 more devices, 1 needing attention (--sort attention" in by_id


def test_sparkline_draws_on_the_fixed_scale_it_is_given():
    assert sparkline([80, 140, 200], 80, 200) == "▁▅█"  # 140 is 3.5 levels up: ▅ (round half to even: 4)
    assert sparkline([50, 250], 80, 200) == "▁█"  # outside the scale: at its ends
    assert sparkline([113.7, 114.8, 113.9], 80, 200) == "▃▃▃"  # a 1 mmHg wobble is no sawtooth
    assert sparkline([], 80, 200) == ""


def test_garbage_on_the_socket_is_ignored():
    s = DashboardState("a")
    s.update([b"sbp.x", b"\xc1"], NOW)
    s.update([b"status"], NOW)
    assert s.devices == {} and s.heartbeat is None


def test_monitor_once_against_a_live_daemon():
    est = Estimator.load()
    x = simulated_ppg(70, 300, 125.0, seed=8)
    with running_daemon(est, operation={"heartbeat_s": 0.2}) as (daemon, addresses), client(addresses) as c:
        monitor = subprocess.Popen(
            [sys.executable, "-m", "p2p_stream.tools.dashboard.app"]
            + ["--estimates", addresses["publish"], "--once", "--wait-s", "4"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={"COLUMNS": "160", "PATH": ""},
        )
        # Keep estimates coming while the monitor starts and listens: one second of PPG every 0.1 s.
        seq = 0
        while monitor.poll() is None and seq < len(x) // 25:
            seq = c.stream(
                "wrist-7", x[seq * 25 : seq * 25 + 125], 125.0, t0=1.7e9 + seq / 5, seq0=seq, ref=(118.0, 76.0)
            )
            time.sleep(0.1)  # pacing a live stream, not waiting for a result
        out_text, err = monitor.communicate(timeout=60)
    out = subprocess.CompletedProcess(monitor.args, monitor.returncode, out_text, err)
    assert out.returncode == 0, out.stderr
    assert "wrist-7" in out.stdout and "118/76" in out.stdout and "devices 1" in out.stdout


def test_monitor_once_without_a_daemon():
    out = subprocess.run(
        [sys.executable, "-m", "p2p_stream.tools.dashboard.app"]
        + ["--estimates", "ipc:///tmp/p2p-nobody", "--once", "--wait-s", "0.3"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"COLUMNS": "160", "PATH": ""},
    )
    assert out.returncode == 1 and "No daemon reachable at ipc:///tmp/p2p-nobody" in out.stdout
