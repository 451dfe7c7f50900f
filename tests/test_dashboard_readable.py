"""What a person reads on the dashboard at 80 and 160 columns: whole ids, plain labels, a legend, fixed widths, rows
that stay put, one trend scale, and the research-use line; `p2p monitor --once` at a useful width when piped."""

import io
import re

import pytest
from rich.console import Console
from test_dashboard import HEARTBEAT, NOW, cell, device_line, text_of

from p2p_stream import Estimator
from p2p_stream.tools.dashboard.app import DashboardState, View, main, render, rows_that_fit
from p2p_stream.wire.estimate import INTERVAL_KEYS, example_estimate
from p2p_stream.wire.protocol import encode_estimate, encode_status

WIDTHS = (80, 160)
RESEARCH_USE = "research use — not a medical device"
ELLIPSIS = "…"


def publish(state, device, sbp, dbp, *, at=NOW, half=(11.0, 7.0), ref=None, sqi=0.86, hr=72.0, reason=None, **fields):
    """Hand `state` one estimate as the daemon publishes it (`example_estimate`): an 80 % interval of ± `half`, a cuff
    reading `ref`; rejected for `reason` (then `sbp`, `dbp` None); `fields` sets any other key (`calibrated`, `seq`,
    interval bounds)."""
    values = {"sbp": sbp, "dbp": dbp} if reason is None else {}
    if half and reason is None:
        values.update(zip(INTERVAL_KEYS, (sbp - half[0], sbp + half[0], dbp - half[1], dbp + half[1])))
    level = fields.pop("interval", 0.8 if half else None)
    fields.setdefault("calibrated", reason is None)  # a category is named only for a calibrated estimate
    e = example_estimate(
        reason, device=device, t=1.7e9, sqi=sqi, hr=hr, model="conv-lstm@db6b43cb", latency_ms=35.0,
        interval=level, ref=ref, **values, **fields,
    )  # fmt: skip
    state.update(encode_estimate(e), at)


# A ward as the demo and a hospital pilot name their wearables: ids up to 21 characters.
IDS = ("ppgbp-0123-finger", "aist-wrist-s07", "ppgbp-19", "mimic3-icu-bed12-left")


def ward(frame):
    """The ward after frame 0 (estimates at NOW) or also frame 1 (at NOW + 1), whose values all differ, many in
    their printed length; a heartbeat a second before NOW + 1 + 12 × frame, when each frame is looked at."""
    s = DashboardState("tcp://127.0.0.1:5556")
    s.update(encode_status(HEARTBEAT), NOW + 12 * frame)
    values = [  # (sbp, dbp, half-widths, cuff, sqi, pulse) in frame 0, then frame 1
        [(128, 80, (11, 7), (120, 80), 0.86, 64), (99, 61, (8, 5), (120, 80), 0.91, 108)],
        [(113.7, 72, (16, 9), (121, 77), 0.62, 71), (185, 104, (24, 14), (118, 79), 0.55, 69)],
        [(141, 91, (16, 9), (161, 95), 0.93, 58), (142, 92, (9, 6), (162, 96), 0.8, 61)],
        [(118, 76, (16, 9), None, 0.77, 80), (121, 74, (16, 9), None, 0.74, 84)],
    ]
    for k in range(frame + 1):
        for device, by_frame in zip(IDS, values):
            sbp, dbp, half, ref, sqi, hr = by_frame[k]
            publish(s, device, sbp, dbp, half=half, ref=ref, sqi=sqi, hr=hr, at=NOW + k, seq=k)
    return s


def rendered(state, width, now=NOW + 1, **view):
    return text_of(render(state, now=now, view=View(**view)), width=width)


def table_rows(text):
    """The table's header and device rows, as a reader scans them."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("device "))
    return [lines[start]] + [line for line in lines[start + 2 :] if line.split() and line.split()[0] in IDS]


@pytest.mark.parametrize("width", WIDTHS)
def test_every_device_id_appears_whole_and_every_line_fits(width):
    text = rendered(ward(0), width)
    assert all(len(line) <= width for line in text.splitlines()), text
    for device in IDS:
        assert cell(text, device, "device") == device
        assert ELLIPSIS not in device_line(text, device), device_line(text, device)
    assert not re.search(r"[\w-]" + ELLIPSIS, text)  # no id, nor anything else, cut short


def test_an_id_wider_than_the_terminal_wraps_rather_than_lose_characters():
    device = "ward7-bed12-" + "x" * 40 + "-finger-left"  # 64 characters, the protocol's longest
    s = DashboardState("a")
    publish(s, device, 128, 80)
    text = text_of(render(s, now=NOW), width=40)
    assert ELLIPSIS not in text and device in "".join(text.split())


def test_at_80_columns_the_important_columns_fit_beside_a_26_character_id():
    s = ward(0)
    publish(s, "ward7-bed12-finger-left-02", 131, 84, hr=66.0)  # 26 characters
    text = rendered(s, 80)
    assert cell(text, "ward7-bed12-finger-left-02", "SBP") == "131 ±11"
    assert cell(text, "ward7-bed12-finger-left-02", "pulse") == "66"  # the last of them: pulse
    assert "est−cuff" not in text and "SBP trend" not in text  # left out whole, not squeezed


def test_the_headers_say_what_they_mean():
    header = table_rows(rendered(ward(0), 80))[0].split()  # beside a 21-character id, no room for the cuff
    assert header == ["device", "SBP", "DBP", "updated", "status", "SQI", "pulse"]
    header = table_rows(rendered(ward(0), 160))[0]
    assert header.split() == [
        "device",
        "SBP",
        "DBP",
        "updated",
        "status",
        "SQI",
        "pulse",
        "cuff",
        "est−cuff",
        "SBP",
        "trend",
    ]
    assert not re.search(r"\bage\b", rendered(ward(0), 160))  # it read as the wearer's age


@pytest.mark.parametrize("width", WIDTHS)
def test_column_widths_do_not_shift_between_frames(width):
    first, second = rendered(ward(0), width), rendered(ward(1), width, now=NOW + 13)
    assert table_rows(first)[0] == table_rows(second)[0]  # the same titles at the same places
    assert {len(line) for line in table_rows(first)} == {len(line) for line in table_rows(second)}  # one width
    # Values of other lengths (99 → 128, 64 → 108 bpm) still sit under their titles.
    assert cell(first, "ppgbp-0123-finger", "SBP") == "128 ±11" and cell(second, "ppgbp-0123-finger", "SBP") == "99 ±8"
    assert cell(first, "ppgbp-0123-finger", "pulse") == "64" and cell(second, "ppgbp-0123-finger", "pulse") == "86"
    assert cell(first, "aist-wrist-s07", "updated") == "1 s" and cell(second, "aist-wrist-s07", "updated") == "12 s"
    assert cell(second, "aist-wrist-s07", "DBP") == "104 ±14" and cell(second, "aist-wrist-s07", "status") == "stale"


def test_rows_keep_their_order_between_frames_unless_asked_otherwise():
    def order(text):
        return [line.split()[0] for line in table_rows(text)[1:]]

    first, second = rendered(ward(0), 160), rendered(ward(1), 160)  # between them aist-wrist-s07 reaches a crisis
    assert order(first) == order(second) == sorted(IDS)
    assert order(rendered(ward(1), 160, sort="attention"))[0] == "aist-wrist-s07"
    assert order(rendered(ward(1), 160, sort="sbp")) == [
        "aist-wrist-s07",
        "ppgbp-19",
        "mimic3-icu-bed12-left",
        "ppgbp-0123-finger",
    ]
    s = ward(0)
    publish(s, "ppgbp-19", 140, 90, at=NOW + 0.5)
    assert order(rendered(s, 160, sort="update"))[0] == "ppgbp-19"
    assert "sorted by update (--sort)" in rendered(s, 160, sort="update")


def test_the_trend_has_one_fixed_scale_for_every_row_and_says_so():
    s = DashboardState("a")
    s.update(encode_status(HEARTBEAT), NOW)
    for k in range(12):
        publish(s, "steady-1", 113.7 + 1.1 * (k % 2), 72, seq=k)  # 113.7 ↔ 114.8 mmHg
        publish(s, "rising-1", 80 + 100 * k / 11, 70, seq=k)  # 80 → 180 mmHg
    text = text_of(render(s, now=NOW), width=160)
    assert cell(text, "steady-1", "trend") == "▃" * 12  # a 1 mmHg wobble is flat, not a full-height sawtooth
    rising = cell(text, "rising-1", "trend")
    assert rising[0] == "▁" and rising[-1] == "▇" and list(rising) == sorted(rising)
    assert "fixed scale, ▁ 80 … █ 200 mmHg" in text
    narrow = text_of(render(s, now=NOW, view=View(trend_mmhg=(100.0, 130.0))), width=160)
    assert "fixed scale, ▁ 100 … █ 130 mmHg" in narrow and cell(narrow, "steady-1", "trend") == "▄" * 12


def test_estimate_minus_cuff_is_signed_rounded_as_shown_and_never_minus_zero():
    s = DashboardState("a")
    s.update(encode_status(HEARTBEAT), NOW)
    publish(s, "wrist-1", 119.6, 80.4, ref=(120, 80))  # -0.4 / +0.4 mmHg: printed as 120/80, so no difference
    publish(s, "wrist-2", 128.2, 74.9, ref=(120, 80))
    text = text_of(render(s, now=NOW), width=160)
    assert cell(text, "wrist-1", "est−cuff") == "0/0"
    assert cell(text, "wrist-2", "est−cuff") == "+8/-5"
    assert not re.search(r"-0\b", text)
    assert "est−cuff: estimate minus cuff, mmHg (+: estimate higher)" in text


def test_the_status_names_hypertension_or_the_legend_does():
    wide, narrow = rendered(ward(0), 160), rendered(ward(1), 80)
    assert cell(wide, "ppgbp-0123-finger", "status") == "stage 1 hypertension"
    assert cell(wide, "ppgbp-19", "status") == "stage 2 hypertension"
    assert cell(rendered(ward(1), 160), "aist-wrist-s07", "status") == "hypertensive crisis"
    assert cell(narrow, "ppgbp-19", "status") == "stage 2 HTN" and "HTN: hypertension" in narrow


def test_each_estimate_carries_its_interval_and_the_legend_its_level():
    s = DashboardState("a")
    s.update(encode_status(HEARTBEAT), NOW)
    publish(s, "ppgbp-0123-finger", 128, 80)
    publish(s, "skewed-1", 128, 80, half=None, sbp_lo=120, sbp_hi=140, dbp_lo=74, dbp_hi=85, interval=0.8)
    for width in WIDTHS:
        text = text_of(render(s, now=NOW), width=width)
        assert cell(text, "ppgbp-0123-finger", "SBP") == "128 ±11" and cell(text, "ppgbp-0123-finger", "DBP") == "80 ±7"
        assert cell(text, "skewed-1", "SBP") == "128 ±12" and cell(text, "skewed-1", "DBP") == "80 ±6"  # wider side
        assert "SBP/DBP: mmHg, ± 80 % prediction interval" in text


def test_the_sqi_legend_states_the_quality_gates_threshold():
    threshold = Estimator.load().quality_config.min_sqi  # what the shipped model's gate uses
    for width in WIDTHS:
        text = rendered(ward(0), width)
        line = next(line for line in text.splitlines() if line.startswith("SQI"))
        assert f"a window below {threshold:.2f} is rejected" in line and len(line) <= 80
    stricter = rendered(ward(0), 80, sqi_threshold=0.7)
    assert "a window below 0.70 is rejected" in stricter


def test_an_sqi_below_the_threshold_is_red():
    def colour(view):
        text = text_of(render(ward(0), now=NOW + 1, view=view), color_system="standard", width=160)
        return re.search(r"(\x1b\[[0-9;]*m)?0\.62", device_line(text, "aist-wrist-s07")).group(1)

    assert colour(View(sqi_threshold=0.7)) == "\x1b[31m" and colour(View(sqi_threshold=0.5)) is None


@pytest.mark.parametrize("width", WIDTHS)
def test_the_research_use_line_is_always_on_screen(width):
    assert RESEARCH_USE in rendered(ward(0), width)
    nobody = DashboardState("tcp://127.0.0.1:5999")
    assert RESEARCH_USE in text_of(render(nobody, now=nobody.started + 5), width=width)


def test_the_pulse_is_the_median_of_the_last_windows():
    s = DashboardState("a")
    for seq, hr in enumerate((64, 66, 108, 65, 67)):  # one window counts a beat twice
        publish(s, "wrist-1", 120, 78, hr=float(hr), seq=seq)
    text = text_of(render(s, now=NOW), width=80)
    assert cell(text, "wrist-1", "pulse") == "66" and "pulse: bpm, median of the last 5 windows" in text
    publish(s, "wrist-1", 120, 78, hr=70.0, seq=5)  # 64 leaves the five: 66 108 65 67 70
    assert cell(text_of(render(s, now=NOW), width=80), "wrist-1", "pulse") == "67"
    publish(s, "wrist-1", None, None, hr=None, reason="no_pulse", seq=6)  # a rejected window adds nothing
    assert cell(text_of(render(s, now=NOW), width=80), "wrist-1", "pulse") == "67"


def test_updated_counts_seconds_since_the_estimate():
    s = DashboardState("a")
    publish(s, "wrist-1", 120, 78)
    text = text_of(render(s, now=NOW + 12), width=80)
    assert cell(text, "wrist-1", "updated") == "12 s" and "updated: seconds since the estimate" in text
    assert cell(text, "wrist-1", "status") == "stale"


def test_a_gap_marker_leaves_the_last_window_on_screen():
    s = DashboardState("a")
    publish(s, "wrist-1", 131, 84, sqi=0.8)
    publish(s, "wrist-1", None, None, half=None, sqi=0.0, hr=None, reason="gap", seq=1, at=NOW + 1)
    text = text_of(render(s, now=NOW + 2), width=160)
    assert cell(text, "wrist-1", "status") == "stage 1 hypertension" and cell(text, "wrist-1", "SQI") == "0.80"
    assert cell(text, "wrist-1", "updated") == "2 s" and s.rejected == {"gap": 1}
    assert cell(text_of(render(s, now=NOW + 12), width=160), "wrist-1", "status") == "stale after a stream gap"


def test_the_live_frame_fits_an_80_by_24_terminal():
    s = ward(0)
    for i in range(30):
        publish(s, f"ward7-bed{i:02d}-finger", 118 + i, 76)
    console = Console(file=io.StringIO(), width=80, height=24, color_system=None)
    console.print(render(s, now=NOW + 1, max_rows=rows_that_fit(console, s, View(), now=NOW + 1)))
    lines = console.file.getvalue().splitlines()
    assert len(lines) < 24 and RESEARCH_USE in lines[-1] and "… and" in "\n".join(lines)


@pytest.mark.parametrize(
    "flags, columns, width",
    [([], None, 100), ([], "90", 90), (["--width", "132"], "90", 132)],
)
def test_once_into_a_pipe_prints_at_a_useful_width(flags, columns, width, capsys, monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    if columns:
        monkeypatch.setenv("COLUMNS", columns)
    assert main(["--estimates", "ipc:///tmp/p2p-nobody-width", "--once", "--wait-s", "0.1", *flags]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert max(len(line) for line in lines) == width  # the header's box spans the whole width
    assert RESEARCH_USE in lines[-1]


def test_a_trend_scale_upside_down_is_a_one_line_error(capsys):
    assert main(["--once", "--trend-mmhg", "200", "80"]) == 2
    assert "--trend-mmhg must be LOW < HIGH" in capsys.readouterr().err


def test_stream_breaks_are_shown_apart_from_rejections():
    """The demo's joins between recorded segments are counted as `time_gap` by the daemon: not faults."""
    s = DashboardState("tcp://127.0.0.1:5556")
    s.update(encode_status({**HEARTBEAT, "rejected": {"time_gap": 48, "flatline": 2, "not_msgpack": 1}}), NOW)
    header = " ".join(rendered(s, 160, now=NOW + 0.5).split())
    assert "rejected 3 (flatline 2, not_msgpack 1)" in header and "breaks 48" in header


@pytest.mark.parametrize("width", WIDTHS)
def test_a_calibration_or_facts_from_an_earlier_stream_of_the_session_are_marked_and_explained(width):
    """Issue 24: the dashboard says when what a device's estimate rests on was kept from before a restart or pause."""
    s = ward(0)
    publish(s, IDS[0], 128, 80, calibrated=True, carried=["calibration", "facts"], seq=1)
    publish(s, IDS[1], 99, 61, calibrated=True, seq=1)  # calibrated in this stream: no mark
    text = rendered(s, width)
    assert cell(text, IDS[0], "status").endswith("⟲") and cell(text, IDS[1], "status") == "normal"
    assert "⟲: calibration or facts kept from before a restart or pause, same wearer" in " ".join(text.split())
    assert "⟲" not in rendered(ward(0), width)  # nothing carried, no legend entry


@pytest.mark.parametrize("width", WIDTHS)
def test_an_uncalibrated_estimate_is_named_by_what_it_rests_on_never_by_a_category(width):
    """Issue 25: without a cuff reading the number is the population's (or its age and sex group's) blood pressure:
    the status says so, the numbers take no category colour, and the legend explains it."""
    s = ward(0)
    publish(s, IDS[0], 185, 100, calibrated=False, basis="population", seq=1)  # a crisis, were it the wearer's
    publish(s, IDS[1], 131, 76, calibrated=False, basis="age_sex", seq=1)
    text = rendered(s, width)
    full = cell(text, IDS[0], "status") == "population prior"
    assert cell(text, IDS[0], "status") == ("population prior" if full else "prior")
    assert cell(text, IDS[1], "status") == ("age/sex prior" if full else "prior+age")
    assert "crisis" not in cell(text, IDS[0], "status")
    assert "prior: not calibrated: the population's blood pressure, not the wearer's" in " ".join(text.split())
    calibrated = ward(0)
    publish(calibrated, IDS[0], 185, 100, seq=1)
    assert "crisis" in cell(rendered(calibrated, width), IDS[0], "status")
