"""Chaos at load (issue 15): a fleet → p2p proxy → p2p daemon (state.path) → subscribers, each process killed -9.

    python benchmarks/chaos.py [--devices 1000] [--kills-each 2] [--spacing-s 25] [--calibrate 50]
                               [--out runs/chaos/chaos-1000.json]

Real processes on ipc:// sockets, each with its own log file beside the JSON (in a folder named after it, with the
recording and the state store): `p2p fleet`, `p2p proxy`, one `p2p daemon` with a durable state store, `p2p record`,
a small subscriber process that is killed, and a witness subscriber inside this process that never is. Once every
device is known, `--calibrate` of them get a cuff reading; then the daemon, the proxy, the subscriber and the
recorder are killed with SIGKILL and restarted, in turn, `--kills-each` times, at least `--spacing-s` apart. Prints
a markdown table — for each kill, the stream back after how long (the witness's first estimate for the daemon and the
proxy, the restarted process's own first estimate or row for the others) and every device back after how long; the
calibrated devices not `calibrated: true` after the last daemon restart; the witness's estimates the recorder lacks
per up-interval and where; repeated (device, epoch, seq); devices that never came back — and the verdict of
tests/chaos.py's `check`; writes every figure as JSON to `--out`. The machinery is tests/chaos.py's (the same pattern
as benchmarks/hostile.py and tests/test_hostile_inputs.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
import chaos as suite  # noqa: E402


def main() -> int:
    d = suite.ChaosConfig()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--devices", type=int, default=d.devices, help="wearables in the fleet (default %(default)s)")
    p.add_argument("--kills-each", type=int, default=d.kills_each, help="kills of each role (default %(default)s)")
    p.add_argument("--spacing-s", type=float, default=d.spacing_s,
                   help="seconds from one kill to the next at least (default %(default)s)")  # fmt: skip
    p.add_argument("--calibrate", type=int, default=d.calibrate, help="devices to calibrate (default %(default)s)")
    p.add_argument("--window-s", type=float, default=d.window_s, help="the daemon's window (default %(default)s)")
    p.add_argument("--hop-s", type=float, default=d.hop_s, help="the daemon's hop (default %(default)s)")
    p.add_argument("--flush-s", type=float, default=d.flush_s, help="the recorder's --flush-s (default %(default)s)")
    p.add_argument("--final-s", type=float, default=d.final_s,
                   help="stream this long after the last kill's stream is back (default %(default)s)")  # fmt: skip
    p.add_argument("--out", type=Path, required=True, help="the JSON report; logs and databases go beside it")
    args = p.parse_args()
    if args.devices < 1 or args.kills_each < 0 or args.spacing_s < 0 or not 0 <= args.calibrate <= args.devices:
        p.error("--devices ≥ 1, --kills-each ≥ 0, --spacing-s ≥ 0 and 0 ≤ --calibrate ≤ --devices")
    config = suite.ChaosConfig(devices=args.devices, kills_each=args.kills_each, spacing_s=args.spacing_s,
                               calibrate=args.calibrate, window_s=args.window_s, hop_s=args.hop_s,
                               flush_s=args.flush_s, final_s=args.final_s)  # fmt: skip
    folder = args.out.parent / args.out.stem
    report = suite.Chaos(config, folder).run()
    bounds = suite.Bounds.for_config(config)
    try:
        suite.check(report, bounds)
        report["verdict"] = "held"
    except AssertionError as exc:
        report["verdict"] = f"BROKEN: {exc}"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1, default=str))
    print(suite.table(report))
    print(f"\nverdict (tests/chaos.py check, stream back within {bounds.back_s} s): {report['verdict']}")
    print(f"wrote {args.out}; logs, recording and state store in {folder}/")
    return 0 if report["verdict"] == "held" else 1


if __name__ == "__main__":
    sys.exit(main())
