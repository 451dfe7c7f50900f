"""What the number rests on (issue 25): the estimate's `basis`, and the prior it is without a cuff — the national
survey's adults, not our three datasets' mean. A real daemon with the shipped model, on real sockets."""

from __future__ import annotations

import numpy as np
from helpers import simulated_ppg
from zmq_helpers import client, running_daemon

from p2p_stream.model.prior import SURVEY

FS = 125.0
T0 = 1_700_000_000.0
X = simulated_ppg(75, 12, FS, seed=5)


def ok_estimates(c, device: str, after: float, n: int = 5) -> list[dict]:
    def mine(got):
        return [e for e in got if e["device"] == device and e["ok"] and e["t"] > after]

    return mine(c.estimates(lambda got: len(mine(got)) >= n))


def test_the_estimate_says_whether_it_is_the_population_an_age_group_or_a_cuff(est):
    with running_daemon(est) as (_, a), client(a) as c:
        c.stream("nobody", X, FS, t0=T0)
        c.stream("aged", X, FS, t0=T0, meta={"age": 70, "sex": "F"})
        nobody, aged = ok_estimates(c, "nobody", T0), ok_estimates(c, "aged", T0)
        reply = c.control({"cmd": "calibrate", "device": "nobody", "sbp": 150.0, "dbp": 95.0})
        assert reply["ok"] and reply["applied"], reply
        c.stream("nobody", X, FS, t0=T0 + 12, seq0=len(X) // 25)
        cuffed = ok_estimates(c, "nobody", T0 + 12)
    assert {e["basis"] for e in nobody} == {"population"}
    # Nothing known of the wearer: the survey's adult mean, whatever the pulse (the shipped head's gain is 0).
    np.testing.assert_allclose([[e["sbp_window"], e["dbp_window"]] for e in nobody], [SURVEY] * len(nobody), atol=0.01)
    assert {e["basis"] for e in aged} == {"age_sex"} and all(e["sbp_window"] > SURVEY[0] + 5 for e in aged)
    assert {e["basis"] for e in cuffed} == {"cuff"} and all(e["calibrated"] for e in cuffed)
    assert abs(cuffed[-1]["sbp_window"] - 150.0) < 0.01
