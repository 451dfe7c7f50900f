"""Benchmark: the attacks of issue 14 for longer than CI allows, one after another or all at once.

    python benchmarks/hostile.py [--seconds 60] [--attacks nan_flood,odd_rate,...] [--all-at-once] [--no-attack-first]
                                 [--set model.inference_process=true]

Each run starts a real daemon process with the tight limits of tests/test_hostile_inputs.py and 50 good devices
(`fleet.py`, 125 Hz), runs the attack(s) and prints, per run: windows the good devices lost, their p99 delay as a
subscriber sees it (receipt − the window's last sample), the longest `ping`, the daemon's peak RSS growth against
the bound its configuration states, and the rejections it counted. `--no-attack-first`: the same run with no attack
at all first, back to back, so what the machine alone gives is measured beside it (issue 24).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
import test_hostile_inputs as suite  # noqa: E402
from hostile import ATTACKS  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--attacks", default=",".join(ATTACKS), help="comma-separated, of: " + ", ".join(ATTACKS))
    p.add_argument("--all-at-once", action="store_true", help="run the chosen attacks together, in one daemon")
    p.add_argument("--no-attack-first", action="store_true", help="first the same run without any attack")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a daemon setting, e.g. "
                   "model.inference_process=true (repeatable)")  # fmt: skip
    args = p.parse_args()
    names = args.attacks.split(",")
    unknown = [n for n in names if n not in ATTACKS]
    if unknown:
        p.error(f"unknown attack(s) {unknown}; choose from {', '.join(ATTACKS)}")
    runs = [names] if args.all_at_once else [[n] for n in names]
    if args.no_attack_first:
        runs.insert(0, [])
    for group in runs:
        m = suite.under_attack(group, seconds=args.seconds, connections=25, settings=tuple(args.set))
        verdict = "held" if _held(m, args.seconds) else "BROKEN"
        print(json.dumps({"attacks": group, "verdict": verdict, **m}, default=str), flush=True)


def _held(m: dict, seconds: float) -> bool:
    try:
        suite.check(m, seconds)
    except AssertionError:
        return False
    return True


if __name__ == "__main__":
    main()
