"""p2p cluster: N daemons + p2p-proxy + Redis from one TOML file — check it, or bring it all up and supervise it.

    p2p cluster check configs/cluster.toml   # validate the file, print the plan; starts nothing
    p2p cluster up configs/cluster.toml      # redis-server (unless [redis] url names one), the proxy, the daemons;
                                             # Ctrl-C or SIGTERM stops them all: daemons, then proxy, then Redis

The file (configs/cluster.toml is a commented example): [supervisor] the logs folder and timeouts; [proxy] its four
addresses and optional CURVE keys; [redis] a server to start (a port or a unix socket, a folder) or the url of one
running; [daemons] how many (or their ids) and the rule for each one's control address; [daemon] any daemon setting
(configs/default.toml), given to every daemon. Each daemon also gets `sockets.connect = true` with the proxy's shards
and estimates addresses, its `cluster.id`, `cluster.redis` and its own control address; every daemon's settings go
through the daemon's own validation before anything starts. Relative paths are relative to the folder `p2p cluster`
runs in, as for every other tool.

Supervision: every child writes to its own log file in the logs folder. One that exits while the cluster is up is
restarted after `restart_delay_s`, doubled at each further death (at most 30 s), and the exit logged; one that dies
`max_deaths` times within `death_window_s` is not restarted again, logged as an error. If Redis or the proxy gives
up, or every daemon has, the whole cluster stops (exit 1). The children run in their own process group (a terminal's
Ctrl-C reaches only this supervisor, which stops them in order) and, on Linux, get SIGTERM if the supervisor dies.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from p2p_stream.tools.cluster.plan import Plan, make_plan
from p2p_stream.tools.cluster.supervisor import up
from p2p_stream.tools.common import command, parent_parser, setup_logging


def print_plan(plan: Plan, source: Path) -> None:
    children = ([plan.redis] if plan.redis else []) + [plan.proxy] + plan.daemons
    where = "" if plan.redis else f" (Redis at {plan.redis_url}, running already)"
    print(f"{source}: valid. `p2p cluster up` starts, in this order{where}:")
    for c in children:
        print(f"  {c.name:<12} {c.address:<48} log {c.log}\n      {shlex.join(c.cmd)}")
    print(f"and stops them in the reverse order: SIGTERM, then SIGKILL after {plan.file.supervisor.stop_timeout_s:g} s")


@command
def main(argv: list[str] | None = None, prog: str = "p2p cluster") -> int:
    p = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[parent_parser(log_level="INFO")],
    )  # fmt: skip
    p.add_argument("action", choices=("check", "up"), help="check: validate and print the plan; up: run it")
    p.add_argument("file", type=Path, help="the cluster's TOML file, e.g. configs/cluster.toml")
    args = p.parse_args(argv)
    setup_logging(args.log_level)
    plan = make_plan(args.file)
    if args.action == "check":
        print_plan(plan, args.file)
        return 0
    return up(plan, args.file)


if __name__ == "__main__":
    sys.exit(main())
