"""Calibrated tracking: is a calibrated estimate worth more than the cuff reading it was calibrated with?

Scored on AIST (the one set with several cuff readings per person: 8 sessions over four weeks), per person:
calibrate on the first session — the cuff reading, and the robust reference of the model's estimates over the
first `span_s` of that session, as the daemon's `calibrate` forms it — then estimate each later session (the
mean of its windows) and compare with the truth. Three ways, all against the same sessions:

- carry forward: the calibration cuff, unchanged (what the estimate must beat);
- shipped: cuff + (estimate − reference) on the published estimate, what the daemon's `calibrate` does (change
  gain 1, the robust offset); where the head shrank the network to the prior, this is the cuff carried forward;
- offset on the network: the same on the network's own, unshrunk answer;
- change model: cuff + g · (network − reference) + h · (pulse rate − reference pulse rate), g and h fitted
  leave-one-subject-out, so each person is scored by a model fitted on the other ten.

The shipped way's interval half-width is the `level` quantile of its session errors, each person weighted
equally, with the finite-sample correction for 11 persons; it is measured on the same sessions (in-sample).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from p2p_stream.model.generalisation import weighted_quantile
from p2p_stream.model.prior import TARGETS

G_GRID = np.round(np.arange(0.0, 1.0001, 0.1), 2)
H_GRID = np.round(np.arange(-0.5, 0.5001, 0.1), 2)  # mmHg per bpm


@dataclass
class Sessions:
    """Per person, the calibration session's reference and each later session's change."""

    subject: np.ndarray  # (S,) the later sessions' subjects
    cuff: np.ndarray  # (S, 2) that subject's calibration cuff
    truth: np.ndarray  # (S, 2) the session's cuff
    d_est: np.ndarray  # (S, 2) session mean estimate − calibration reference
    d_hr: np.ndarray  # (S,) session mean pulse rate − calibration reference, bpm


def session_changes(
    subject: np.ndarray,
    session: np.ndarray,
    order: np.ndarray,
    y: np.ndarray,
    estimate: np.ndarray,
    hr: np.ndarray,
    span_windows: int,
) -> Sessions:
    """Windows of many sessions → each later session's change since its subject's first session.

    `session` sorts in time within a subject (e.g. "A1/week1/session2"); `order` is the window's position in it.
    The reference is the median of the first `span_windows` windows of the first session.
    """
    rows = {"subject": [], "cuff": [], "truth": [], "d_est": [], "d_hr": []}
    for s in np.unique(subject):
        mine = subject == s
        sessions = sorted(np.unique(session[mine]))
        first = mine & (session == sessions[0])
        idx = np.flatnonzero(first)[np.argsort(order[first])][:span_windows]
        ref, ref_hr, cuff = np.median(estimate[idx], axis=0), np.nanmedian(hr[idx]), y[idx[0]]
        for later in sessions[1:]:
            m = mine & (session == later)
            rows["subject"].append(s)
            rows["cuff"].append(cuff)
            rows["truth"].append(y[m][0])
            rows["d_est"].append(estimate[m].mean(axis=0) - ref)
            rows["d_hr"].append(np.nanmean(hr[m]) - ref_hr)
    return Sessions(**{k: np.asarray(v) for k, v in rows.items()})


def _fit(s: Sessions, keep: np.ndarray, t: int) -> tuple[float, float]:
    best = None
    for g in G_GRID:
        for h in H_GRID:
            err = np.abs(s.cuff[keep, t] + g * s.d_est[keep, t] + h * s.d_hr[keep] - s.truth[keep, t]).mean()
            if best is None or err < best[0] - 1e-9:
                best = (err, float(g), float(h))
    return best[1], best[2]


def person_mae(s: Sessions, pred: np.ndarray) -> np.ndarray:
    """(2,) mean over persons of each person's mean absolute error over their later sessions."""
    err = np.abs(pred - s.truth)
    return np.mean([err[s.subject == p].mean(axis=0) for p in np.unique(s.subject)], axis=0)


def score_tracking(published: Sessions, network: Sessions, level: float = 0.8) -> dict:
    """The four ways, per target; `published` and `network` are the same sessions under the two estimates."""
    s = network
    carry = s.cuff.astype(np.float64)
    shipped = published.cuff + published.d_est
    offset = s.cuff + s.d_est
    loso = np.empty_like(carry)
    for p in np.unique(s.subject):
        out = s.subject == p
        for t in range(2):
            g, h = _fit(s, ~out, t)
            loso[out, t] = s.cuff[out, t] + g * s.d_est[out, t] + h * s.d_hr[out]
    fitted = [_fit(s, np.ones(len(s.subject), bool), t) for t in range(2)]
    result: dict = {"persons": int(len(np.unique(s.subject))), "sessions": int(len(s.subject)), "level": level}
    errors = np.abs(shipped - s.truth)
    # Each person counts once (their sessions share a weight), and the finite-sample correction counts persons:
    # 77 sessions of 11 people are 11 draws, not 77. Measured on the same sessions: no one is held out of it.
    persons = np.unique(s.subject)
    weight = np.array([1.0 / np.sum(s.subject == p) for p in s.subject])
    share = min(1.0, level * (1 + 1 / len(persons)))
    for t, name in enumerate(TARGETS):
        c, sh, o, m = (person_mae(s, v)[t] for v in (carry, shipped, offset, loso))
        result[name] = {
            "carry_forward_mae": float(c),
            "shipped_mae": float(sh),
            "offset_network_mae": float(o),
            "change_model_mae": float(m),
            "best_vs_carry": float(min(sh, o, m) / c),
            "change_model_g_h": [fitted[t][0], fitted[t][1]],
            "halfwidth": weighted_quantile(errors[:, t], weight, share),
        }
    return result


def markdown(result: dict) -> str:
    lines = [
        f"{result['persons']} persons, {result['sessions']} later sessions; per-person MAE (mmHg), averaged over "
        "persons. Calibrated on each person's first session, scored on the seven after it.",
        "",
        "| target | carry the cuff forward | shipped (offset on the published estimate) | offset on the network | "
        "change model, leave-one-subject-out (g, h fitted on all) | best vs carry-forward | shipped "
        f"{result['level']:.0%} half-width |",
        "|---|---|---|---|---|---|---|",
    ]
    for t in TARGETS:
        r = result[t]
        g, h = r["change_model_g_h"]
        verdict = "beats it" if r["best_vs_carry"] < 1 else "does not beat it"
        lines.append(
            f"| {t.upper()} | {r['carry_forward_mae']:.2f} | {r['shipped_mae']:.2f} | {r['offset_network_mae']:.2f} | "
            f"{r['change_model_mae']:.2f} (g {g:.1f}, h {h:+.1f} mmHg/bpm) | {r['best_vs_carry']:.3f} ({verdict}) | "
            f"±{r['halfwidth']:.1f} |"
        )
    return "\n".join(lines) + "\n"
