"""The one-command demo, non-interactive: daemon + bundled real recordings + subscriber, then a summary."""

import subprocess
import sys

import pytest
from zmq_helpers import ipc_addresses

from p2p_stream.tools.dashboard.app import DashboardState
from p2p_stream.tools.demo import SIMULATED, population_mean, score_estimates, summary
from p2p_stream.wire.protocol import encode_estimate


def run_demo(*args: str) -> subprocess.CompletedProcess:
    """`p2p-demo` on private ipc:// addresses, non-interactive."""
    with ipc_addresses() as a:
        cmd = [sys.executable, "-m", "p2p_stream.tools.demo", *args,
               "--ingest", a["ingest"], "--estimates", a["publish"], "--control", a["control"]]  # fmt: skip
        return subprocess.run(cmd, capture_output=True, text=True, timeout=240, env={"COLUMNS": "200", "PATH": ""})


def test_demo_runs_by_itself_and_summarises():
    out = run_demo("--duration-s", "12", "--speed", "2", "--torch-device", "cpu")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "devices: 9" in out.stdout  # 8 real PPG-BP recordings, one simulated wearer with ECG
    assert "mean absolute error against the cuff references: SBP" in out.stdout
    assert "always answering" in out.stdout  # the constant to beat, from the shipped model's metadata
    assert "intervals held the cuff reading" in out.stdout or "no prediction intervals" in out.stdout
    windows = int(out.stdout.split("windows estimated: ")[1].split()[0])
    assert windows >= 8 * 3  # at 2x for 12 s: about 11 windows per device
    assert "breaks (joins between recorded segments)" in out.stdout


def test_demo_reports_a_daemon_that_cannot_start():
    out = run_demo("--duration-s", "1", "--torch-device", "tpu")
    assert out.returncode == 2
    assert "the daemon did not start" in out.stderr and "model.torch_device must be" in out.stderr


def scored(sbp, dbp, ref, interval=None, ok=True):
    """An estimate as the daemon publishes it, with its reference and (optionally) an (SBP, DBP) interval."""
    e = {"ok": ok, "sbp": sbp if ok else None, "dbp": dbp if ok else None, "ref_sbp": ref[0], "ref_dbp": ref[1]}
    if interval:
        (e["sbp_lo"], e["sbp_hi"]), (e["dbp_lo"], e["dbp_hi"]) = interval
        e["interval"] = 0.8
    return e


ESTIMATES = [
    scored(120, 80, (130, 85), interval=((110, 135), (75, 84))),  # SBP held, DBP missed (85 > 84)
    scored(140, 90, (120, 80), interval=((125, 155), (80, 100))),  # SBP missed (120 < 125), DBP held (on the edge)
    scored(100, 60, (110, 70), interval=((90, 110), (50, 70))),  # both held, on the upper edges
    scored(0, 0, (150, 95), ok=False),  # rejected: not scored
    {"ok": False, "sbp": 200.0, "dbp": 120.0, "ref_sbp": 150.0, "ref_dbp": 95.0},  # not ok, even with numbers
    {"ok": True, "sbp": 125.0, "dbp": 78.0},  # no reference: not scored
]


def test_the_score_counts_interval_coverage_and_the_constants_error():
    score = score_estimates(ESTIMATES, constant=(125.0, 75.0))
    assert score.n == 3 and score.n_interval == 3 and score.level == "80 %"
    assert score.mae == pytest.approx(((10 + 20 + 10) / 3, (5 + 10 + 10) / 3))
    assert score.constant_mae == pytest.approx(((5 + 5 + 15) / 3, (10 + 5 + 5) / 3))
    assert score.coverage == pytest.approx((2 / 3, 2 / 3))


def test_estimates_without_intervals_are_scored_without_coverage():
    plain = [scored(120, 80, (130, 85)), scored(140, 90, (120, 80), interval=((150, 160), (95, 99)))]
    score = score_estimates(plain)
    assert score.n == 2 and score.constant_mae is None
    assert score.n_interval == 1 and score.coverage == (0.0, 0.0)  # coverage only over those that carry one
    assert score_estimates([scored(120, 80, (130, 85))]).coverage is None
    assert score_estimates([scored(0, 0, (130, 85), ok=False)]) is None


def test_the_constant_is_the_models_population_mean_else_the_training_mean():
    label_stats = {"sbp_mean": 127.7, "dbp_mean": 71.3}
    assert population_mean({"label_stats": label_stats, "head": {"prior": {"mean": [121.0, 74.5]}}}) == (
        (121.0, 74.5),
        "the model's population mean",
    )
    assert population_mean({"label_stats": label_stats}) == ((127.7, 71.3), "the training labels' mean")


def test_the_summary_reports_what_the_dashboard_received():
    state = DashboardState("a")
    for seq, e in enumerate(ESTIMATES):
        state.update(encode_estimate({"v": 1, "device": "d", "seq": seq, **e}), 0.0)
    text = summary(state, ((125.0, 75.0), "the model's population mean"))
    assert "mean absolute error against the cuff references: SBP 13.3 mmHg, DBP 8.3 mmHg over 3 estimates" in text
    assert "always answering 125/75 (the model's population mean): SBP 8.3, DBP 6.7 mmHg" in text
    assert "80 % intervals held the cuff reading: SBP 67 %, DBP 67 % (3 estimates)" in text


def test_the_simulated_wearer_is_scored_apart_against_carrying_its_cuff_forward():
    state = DashboardState("a")
    for seq, e in enumerate(ESTIMATES):
        state.update(encode_estimate({"v": 1, "device": "d", "seq": seq, **e}), 0.0)
    truth = [120.0, 135.0, 150.0, 150.0]
    for seq, (sbp, ref) in enumerate(zip([121.0, 130.0, 146.0, 148.0], truth)):
        e = {"v": 1, "device": SIMULATED, "seq": seq, "t": 1.0 + seq, "window_s": 2.1, "sbp": sbp, "dbp": 80.0,
             "ok": True, "calibrated": True, "basis": "cuff+tracking", "ref_sbp": ref, "ref_dbp": 80.0}  # fmt: skip
        state.update(encode_estimate(e), 0.0)
    text = summary(state, ((125.0, 75.0), "the model's population mean"), {"sbp": 120.0, "dbp": 80.0})
    # The real recordings' score is theirs alone, as without the simulated wearer…
    assert "SBP 13.3 mmHg, DBP 8.3 mmHg over 3 estimates" in text
    # …and the simulated one's its own line: |1|+|5|+|4|+|2| = 12 / 4 tracked, |0|+|15|+|30|+|30| / 4 carried.
    assert "its pressure moved up to 30 mmHg; SBP error 3.0 mmHg tracked (cuff+tracking), 18.8 carrying" in text
    assert "not a person" in text
