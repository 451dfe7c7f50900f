"""Blood-pressure categories: the AHA/ACC 2017 adult categories plus hypotension, with the colour each is shown in."""

from __future__ import annotations

# (name, colour, attention rank: lower needs attention sooner)
CATEGORIES = {
    "crisis": ("bold white on red", 0),  # SBP > 180 and/or DBP > 120
    "stage 2": ("red", 1),  # SBP ≥ 140 or DBP ≥ 90
    "stage 1": ("dark_orange", 3),  # SBP 130–139 or DBP 80–89
    "hypotension": ("cyan", 4),  # SBP < 90 or DBP < 60
    "elevated": ("yellow", 5),  # SBP 120–129 and DBP < 80
    "normal": ("green", 6),  # SBP < 120 and DBP < 80
}


def bp_category(sbp: float, dbp: float) -> str:
    """AHA category of one reading (mmHg); the higher category wins when SBP and DBP disagree."""
    if sbp > 180 or dbp > 120:
        return "crisis"
    if sbp >= 140 or dbp >= 90:
        return "stage 2"
    if sbp >= 130 or dbp >= 80:
        return "stage 1"
    if sbp < 90 or dbp < 60:
        return "hypotension"
    if sbp >= 120:
        return "elevated"
    return "normal"
