"""`p2p`: the one command; each verb is one of the tools, with that tool's own flags (`p2p <verb> --help`).

    p2p daemon                             # the streaming daemon: wearables in, estimates out
    p2p replay p2p_stream/assets/demo/ppg_bp_demo.csv --loop
    p2p monitor                            # the live dashboard

The old names are aliases of the same code: p2p-daemon, p2p-monitor, p2p-demo, p2p-train, p2p-eval, p2p-keys,
p2p-proxy, `python daemon.py`, `python simulators/replay.py`, `simulators/fleet.py`, `simulators/make_replay.py`.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from p2p_stream.tools.common import USAGE_ERROR, call

# verb → (module whose `main(argv)` runs it, one line of help). Modules are imported only when their verb runs,
# so `p2p --help` and a mistaken verb answer at once, and the verbs that need no torch never load it.
VERBS: dict[str, tuple[str, str]] = {
    "daemon": ("p2p_stream.tools.cli.daemon", "run the streaming daemon: PPG in over ZeroMQ, blood pressure out"),
    "monitor": ("p2p_stream.tools.dashboard.app", "live terminal dashboard of a daemon's estimates and heartbeat"),
    "record": ("p2p_stream.tools.recording.recorder", "keep every estimate in an SQLite file; export it, score it"),
    "ctl": ("p2p_stream.tools.cli.ctl", "the operator's command: ping, stats, calibrate, forget, history"),
    "lsl": ("p2p_stream.tools.bridges.lsl", "bring real wearables in: Lab Streaming Layer PPG streams → the daemon"),
    "demo": ("p2p_stream.tools.demo", "daemon + bundled real recordings + dashboard in one go"),
    "replay": ("p2p_stream.tools.bridges.replay", "replay recordings (a replay CSV) as live wearables"),
    "fleet": ("p2p_stream.tools.bridges.fleet", "a synthetic wearable fleet for load and fault tests"),
    "train": ("p2p_stream.tools.cli.train", "train a model: subject-disjoint holdout, K-fold CV or LODO"),
    "eval": ("p2p_stream.tools.cli.eval", "evaluate a checkpoint or a predictions table; write a report"),
    "convert": ("p2p_stream.tools.bridges.convert", "write a replay CSV from a dataset (was make_replay.py)"),
    "keys": ("p2p_stream.tools.cli.keys", "make and revoke CURVE key pairs for the daemon and wearables"),
    "proxy": ("p2p_stream.tools.cluster.proxy", "the ingest tier across machines: forward wearables to daemon shards"),
    "cluster": ("p2p_stream.tools.cluster.up", "run N daemons + proxy + Redis from one file: check it, bring it up"),
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="p2p",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="p2p <verb> [flags]   (p2p <verb> --help for a verb's flags)",
    )
    verbs = p.add_subparsers(title="verbs", metavar="<verb>", dest="verb")
    for verb, (_, text) in VERBS.items():
        verbs.add_parser(verb, help=text)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    p = parser()
    if not argv:
        p.error(f"give a verb, one of: {', '.join(VERBS)}")
    if argv[0] not in VERBS:
        p.parse_args(argv[:1])  # --help prints the verbs; an unknown verb is argparse's error (exit 2)
        return USAGE_ERROR  # not reached: a first word that is not a verb is --help or a mistake
    verb, rest = argv[0], argv[1:]
    module = importlib.import_module(VERBS[verb][0])
    code = call(module.main, rest, prog=f"p2p {verb}")
    if verb == "daemon":
        # As `p2p-daemon` does: interpreter teardown with torch loaded can take seconds, and everything that
        # matters (the batch in flight published, sockets closed) is done; flush and leave at once.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
