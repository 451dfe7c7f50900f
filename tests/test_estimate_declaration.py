"""The estimate declared once (p2p_stream/wire/estimate.py): docs/protocol.md shows it, its checks catch each broken
rule, the other copies agree with it, and every estimate a real daemon publishes satisfies it."""

import re
from pathlib import Path

import numpy as np
import pytest
from helpers import simulated_ppg
from zmq_helpers import client, running_daemon

from p2p_stream.backends.base import BackendUnavailable
from p2p_stream.model.estimator import OUTPUTS
from p2p_stream.ppg.quality import REASONS as GATE_REASONS
from p2p_stream.tools.dashboard import state as dashboard
from p2p_stream.wire import estimate
from p2p_stream.wire.estimate import GAP, OK, REJECTED, check_estimate, example_estimate, status_of

DOC = Path(__file__).parent.parent / "docs" / "protocol.md"
FS = 125.0
T0 = 1_700_000_000.0


def test_the_protocol_doc_shows_the_declaration():
    """Its tables are the declaration's: a key declared and not documented, documented and not declared, or a nil
    rule that differs fails here. Regenerate with `python -m p2p_stream.wire.estimate --write docs/protocol.md`."""
    shown = estimate.documented(DOC.read_text())
    assert shown, f"docs/protocol.md lacks the block {estimate.BEGIN!r} … {estimate.END!r}"
    assert shown == estimate.markdown()
    for f in estimate.FIELDS:
        assert f"| `{f.name}` | {' | '.join(f.nil)} |" in shown


def test_the_other_copies_agree():
    assert OUTPUTS == ("sbp", "dbp", *estimate.INTERVAL_KEYS)  # the model's answer, column by column
    assert dashboard.INTERVAL_KEYS == estimate.INTERVAL_KEYS
    assert set(GATE_REASONS) | {BackendUnavailable.reason, GAP} == set(estimate.REASONS)
    assert estimate.ALWAYS_KEYS == estimate.NAMES[: len(estimate.ALWAYS_KEYS)]  # the worker's order: the always first


@pytest.mark.parametrize(
    "reason,values,status",
    [
        (None, {}, OK),
        (None, {"interval": 0.8, "ref": (121, 79), "epoch": 2, "daemon": "a"}, OK),
        ("flatline", {"interval": 0.8}, REJECTED),
        ("nan", {"hr": 71.5, "sqi": 0.7}, REJECTED),  # passed the gate, the model's answer was not finite
        (GAP, {"window_s": 4.0}, GAP),
    ],
)
def test_examples_are_well_formed(reason, values, status):
    e = example_estimate(reason, **values)
    assert check_estimate(e) == [] and status_of(e) == status
    assert list(e) == [k for k in estimate.NAMES if k in e]


@pytest.mark.parametrize(
    "change,broken",
    [
        ({"sbp": None}, "'sbp' is nil (status ok)"),
        ({"sbp_window": "high"}, "'sbp_window' is 'high' (str), not a finite float"),
        ({"t": float("nan")}, "'t' is nan (float), not a finite float"),
        ({"seq": -1}, "'seq' is -1, below 0"),
        ({"seq": 1.0}, "'seq' is 1.0 (float), not a finite int"),
        ({"ok": 1}, "'sbp' is 120.0, not nil (status rejected)"),  # 1 is not true: the window counts as rejected
        ({"reason": "flatline"}, "'reason' present (status ok)"),
        ({"sqi": 1.5}, "'sqi' is 1.5, above 1"),
        ({"v": 2}, "'v' is 2, above 1"),
        ({"device": "a b"}, "'device' 'a b' is not 1–64 of [A-Za-z0-9_.:-]"),
        ({"future": 1}, "undeclared key 'future'"),
        ({"ref_sbp": 120.0}, "ref_sbp, ref_dbp come together; present: ref_sbp"),
        ({"interval": 0.8}, "sbp_lo, sbp_hi, dbp_lo, dbp_hi, interval come together; present: interval"),
        ({"epoch": None}, "'epoch' is nil (status ok)"),
    ],
)
def test_each_broken_rule_is_named(change, broken):
    assert broken in check_estimate({**example_estimate(), **change})


def test_missing_keys_and_status_rules():
    ok = example_estimate()
    assert check_estimate({k: v for k, v in ok.items() if k != "latency_ms"}) == ["'latency_ms' missing (always)"]
    rejected = example_estimate("no_pulse")
    assert check_estimate({**rejected, "reason": "tired"})[0].startswith("'reason' 'tired' is not one of")
    assert check_estimate({k: v for k, v in rejected.items() if k != "reason"}) == ["'reason' missing (`ok` is false)"]
    assert "'hr' is 70.0, not nil (status gap)" in check_estimate({**example_estimate(GAP), "hr": 70.0})
    assert check_estimate([1]) == ["an estimate is a map, not list"]


def test_the_builder_refuses_what_is_not_an_estimate():
    with pytest.raises(ValueError, match="not keys of an estimate: pulse"):
        example_estimate(pulse=70)
    with pytest.raises(ValueError, match=re.escape("'sbp' is 120, not nil (status rejected)")):
        example_estimate("flatline", sbp=120)


# --- a real daemon's estimates ------------------------------------------------------------------------------------


@pytest.mark.parametrize("extended", [False, True], ids=["alone", "store+cluster"])
def test_every_estimate_of_a_real_daemon_is_declared(est, extended, tmp_path):
    """Accepted windows (with a reference and the model's interval), gate rejections, windows the model could not
    answer and a break marker, from a daemon alone and from one with a state store in a cluster (`epoch`, `daemon`)."""
    sections = {"state": {"path": str(tmp_path / "state.sqlite")}, "cluster": {"id": "a", "members": "a"}}
    x = simulated_ppg(72, 8, FS, seed=11)
    alone = {"state": {"path": ""}}  # in memory: no `epoch`
    with running_daemon(est, **(sections if extended else alone)) as (_, addresses), client(addresses) as c:
        c.stream("ok-1", x, FS, ref=(121.0, 79.0))
        c.stream("flat-1", np.full(int(6 * FS), 2048.0), FS)
        c.stream("wild-1", (x - x.mean()) / x.std() * 1e37, FS)  # finite samples the model's arithmetic overflows
        seq = c.stream("gap-1", x[:625], FS)  # then a lost message: a break marker
        c.stream("gap-1", x[650:], FS, t0=T0 + 650 / FS, seq0=seq + 1)

        def done(got: list[dict]) -> bool:
            n = {d: sum(e["device"] == d for e in got) for d in ("ok-1", "flat-1", "wild-1")}
            return n["ok-1"] >= 5 and n["flat-1"] >= 3 and n["wild-1"] >= 5 and any(e.get("reason") == GAP for e in got)

        got = c.estimates(done)
    problems = {(e["device"], e["seq"]): check_estimate(e) for e in got}
    assert {k: v for k, v in problems.items() if v} == {}
    assert {status_of(e) for e in got} == {OK, REJECTED, GAP}
    assert all(status_of(e) == REJECTED for e in got if e["device"] == "flat-1")
    for e in got:
        assert ("epoch" in e, "daemon" in e) == (extended, extended)
        assert all(k in e for k in estimate.INTERVAL_KEYS)  # the bundled model has an interval
        assert ("ref_sbp" in e) == (e["device"] == "ok-1")
