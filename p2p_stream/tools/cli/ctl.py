"""`p2p ctl`: the operator's command for a running daemon — its control socket (REQ/REP) from the shell.

    p2p ctl ping                          # is the daemon up?
    p2p ctl stats                         # uptime, devices, windows/s, latency, queue, rejected counts
    p2p ctl stats --json                  # the daemon's raw reply, for scripts
    p2p ctl stats --control A --control B # several daemons (a cluster): each one's table, then the cluster's total
    p2p ctl calibrate watch-17 128 82     # a cuff reading (SBP DBP, mmHg) for one wearable
    p2p ctl calibrate watch-17 128 82 --wearer p-0042   # …refused unless p-0042 wears it now
    p2p ctl forget watch-17               # drop a wearable's buffer, calibration and smoothing
    p2p ctl end-session watch-17          # its wearer took it off: the next one starts with nothing known
    p2p ctl history watch-17              # who calibrated or forgot it, when, with what (needs state.path)

With CURVE on, give the daemon's public key and an allowed client's secret key, as replay does:
`--curve-server-key keys/server.key --curve-client-key keys/clients/NAME.key_secret`. No answer within
`--timeout-s`, a refused key and a refused request each end in one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import zmq
from zmq.utils.monitor import recv_monitor_message

from p2p_stream.config.addresses import check_address
from p2p_stream.config.daemon import Sockets
from p2p_stream.errors import ConfigError, P2PError, ProtocolError
from p2p_stream.stream.security.curve import curve_client
from p2p_stream.stream.state.control import HISTORY_DEFAULT, HISTORY_MAX
from p2p_stream.tools.common import LOG_LEVELS, command, parent_parser, setup_logging
from p2p_stream.tools.dashboard.daemons import cluster_total
from p2p_stream.wire.protocol import DEVICE_RE, decode_map, pack

DEFAULT_CONTROL = Sockets().control  # the daemon's own default (config/daemon.py), not a copy of it
DEFAULT_TIMEOUT_S = 5.0
HANDSHAKE_TRIES = 3  # handshakes closed without detail before that is the answer (ZeroMQ retries every ~0.1 s)
CURVE_FLAGS = "--curve-server-key keys/server.key --curve-client-key keys/clients/NAME.key_secret"
# What the REQ socket's monitor can tell us about why no reply came.
WATCHED = (
    zmq.EVENT_CONNECTED
    | zmq.EVENT_DISCONNECTED
    | zmq.EVENT_HANDSHAKE_SUCCEEDED
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
)


def request(address: str, msg: dict, timeout_s: float, curve: tuple[str, str] | None = None) -> dict:
    """One control request → the daemon's reply map; a `P2PError` saying why when none comes within `timeout_s`.

    The REQ socket's monitor tells the cases apart: nothing listening, a handshake the daemon refused (a client
    key it does not allow, or CURVE on one side only), and a daemon that took the request but did not answer.
    A refused handshake ends the wait at once; the others wait the whole timeout.
    """
    ctx = zmq.Context()
    req = ctx.socket(zmq.REQ)
    req.setsockopt(zmq.LINGER, 0)
    monitor = req.get_monitor_socket(WATCHED)
    seen: dict[int, list[int]] = {}  # monitor event → its values so far (errnos, ZMTP error codes)
    try:
        if curve:
            curve_client(req, *curve)
        req.connect(address)
        req.send(pack(msg))
        poller = zmq.Poller()
        poller.register(req, zmq.POLLIN)
        poller.register(monitor, zmq.POLLIN)
        deadline = time.monotonic() + timeout_s
        while (left_s := deadline - time.monotonic()) > 0:
            ready = dict(poller.poll(max(1, int(left_s * 1000))))
            if req in ready:
                try:
                    return decode_map(req.recv())
                except ProtocolError as exc:
                    raise P2PError(f"{address} answered with something that is not a control reply ({exc})") from exc
            if monitor in ready:
                event = recv_monitor_message(monitor)
                seen.setdefault(event["event"], []).append(event["value"])
                refused = handshake_refused(seen, address, curve is not None)
                if refused:
                    raise P2PError(refused)
        raise P2PError(no_answer(seen, address, timeout_s, curve is not None))
    finally:
        req.disable_monitor()
        monitor.close(linger=0)
        req.close(linger=0)
        ctx.term()


def handshake_refused(seen: dict[int, list[int]], address: str, curve: bool, final: bool = False) -> str | None:
    """The error for a handshake the daemon refused, or None while that is not known (`seen`: monitor event → its
    values so far). A refused key and CURVE on one side only are said at once; a handshake closed without detail
    (as a wrong server key is, and as a mismatch may first be) once it happened `HANDSHAKE_TRIES` times, or at
    all when time is up (`final`)."""
    if zmq.EVENT_HANDSHAKE_FAILED_AUTH in seen:
        return (
            f"the daemon at {address} refused this client's key: it may not be authorized; add it with "
            "`p2p keys client NAME --dir keys` (its public key goes into the daemon's authorized/ folder, read at "
            "start-up) and give that client's secret key (--curve-client-key)"
        )
    mismatch = zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH in seen.get(zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL, [])
    failures = sum(
        len(seen.get(e, [])) for e in (zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL, zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL)
    )
    closed = failures >= (1 if final else HANDSHAKE_TRIES)
    if not (mismatch or closed):
        return None
    if not curve:
        return f"the daemon at {address} requires CURVE and this client gave no keys; give {CURVE_FLAGS}"
    if mismatch:
        return f"the daemon at {address} does not use CURVE; drop --curve-server-key and --curve-client-key"
    return (
        f"the daemon at {address} closed the CURVE handshake: --curve-server-key may not be its public key "
        "(keys/server.key of the daemon's keys folder), or that daemon may not use CURVE"
    )


def no_answer(seen: dict[int, list[int]], address: str, timeout_s: float, curve: bool) -> str:
    """The error for a request that got no reply within `timeout_s`, from what the socket's monitor saw."""
    refused = handshake_refused(seen, address, curve, final=True)
    if refused:
        return refused
    if zmq.EVENT_HANDSHAKE_SUCCEEDED in seen:
        return (
            f"the daemon at {address} took the request but gave no answer within {timeout_s:g} s; it may be "
            "overloaded or stuck (see its log), or give it longer with --timeout-s"
        )
    if zmq.EVENT_CONNECTED in seen and curve:
        return (
            f"no answer from {address} within {timeout_s:g} s: the connection closed during the CURVE handshake; "
            "--curve-server-key may not be that daemon's public key (keys/server.key), or this client's key may "
            "not be authorized"
        )
    if zmq.EVENT_CONNECTED in seen:
        return (
            f"no answer from {address} within {timeout_s:g} s: something listens there but did not answer; it may "
            "not be a daemon's control address (p2p daemon --control), or the daemon may need CURVE keys "
            f"({CURVE_FLAGS})"
        )
    keys = "" if curve else f"; if it runs with CURVE, give its keys ({CURVE_FLAGS})"
    return (
        f"no daemon answered at {address} within {timeout_s:g} s: it may not be running, or it listens on another "
        f"control address (p2p daemon --control ADDR; give the same here with --control){keys}"
    )


def ask(args: argparse.Namespace, msg: dict, address: str | None = None) -> dict:
    """Send `msg` to `address` (default: --control); the reply when the daemon said ok, else a `P2PError` carrying
    the daemon's own error."""
    address = address or args.control
    reply = request(address, msg, args.timeout_s, curve_keys(args))
    if reply.get("ok") is not True:
        raise P2PError(f"the daemon at {address} refused {msg['cmd']}: {reply.get('error', reply)}")
    return reply


def curve_keys(args: argparse.Namespace) -> tuple[str, str] | None:
    """The CURVE key files (the daemon's public key, this client's secret key), or None without CURVE."""
    if bool(args.curve_server_key) != bool(args.curve_client_key):
        raise ConfigError(
            "--curve-server-key and --curve-client-key go together; give both (the daemon's public key file and "
            "this client's secret key file) or neither"
        )
    return (args.curve_server_key, args.curve_client_key) if args.curve_server_key else None


# ------------------------------------------------------------------------------------------------------ output


def duration(seconds: float) -> str:
    """`3 d 04 h`, `2 h 05 min`, `4 min 12 s`, `12.3 s`."""
    s = int(seconds)
    if s >= 86_400:
        return f"{s // 86_400} d {s % 86_400 // 3600:02d} h"
    if s >= 3600:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    if s >= 60:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{seconds:.1f} s"


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


def stats_rows(stats: dict) -> list[tuple[str, str]]:
    """The `stats` reply as (label, value) rows: the heartbeat first, then each rejected reason, most first."""
    rejected = stats.get("rejected") or {}
    rows = [
        ("uptime", duration(float(stats.get("uptime_s", 0.0)))),
        ("devices", f"{stats.get('devices', 0):,}"),
        ("windows/s", f"{stats.get('windows_per_s', 0.0):.1f}  ({stats.get('windows_total', 0):,} in all)"),
        ("latency p50 / p99", f"{_ms(stats.get('latency_p50_ms'))} / {_ms(stats.get('latency_p99_ms'))} ms"),
        ("queue", f"{stats.get('queue', 0):,} windows"),
        ("batch mean", f"{stats.get('batch_mean', 0.0):.1f}"),
        ("messages", f"{stats.get('messages_total', 0):,}"),
        ("model", f"{stats.get('model', '?')} on {stats.get('backend_device', stats.get('device', '?'))}"),
        ("rejected", f"{sum(rejected.values()):,}" if rejected else "none"),
    ]
    rows += [
        (f"  {reason}", f"{count:,}") for reason, count in sorted(rejected.items(), key=lambda kv: (-kv[1], kv[0]))
    ]
    return rows


def _span(values: list[float] | None, unit: str = "") -> str:
    """`12.3–30.1` (a range over the daemons), `12.3` when they agree, `—` when none says."""
    if not values:
        return "—"
    lo, hi = f"{values[0]:.1f}", f"{values[1]:.1f}"
    return (lo if lo == hi else f"{lo}–{hi}") + unit


def total_rows(total: dict) -> list[tuple[str, str]]:
    """The cluster's total (`cluster_total`) as (label, value) rows: the sums as in `stats_rows`; the latency as the
    range of the daemons' p50 and the worst daemon's p99 (percentiles do not add up)."""
    rejected = total["rejected"]
    rows = [
        ("daemons", f"{total['daemons']}"),
        ("devices", f"{total['devices']:,}"),
        ("windows/s", f"{total['windows_per_s']:.1f}  ({total['windows_total']:,} in all)"),
        ("latency p50", _span(total["latency_p50_ms_range"], " ms") + "  (the daemons' range)"),
        ("latency p99", f"{_ms(total['latency_p99_ms_worst'])} ms  (the worst daemon's)"),
        ("queue", f"{total['queue']:,} windows"),
        ("batch mean", _span(total["batch_mean_range"])),
        ("messages", f"{total['messages_total']:,}"),
        ("model", ", ".join(total["models"]) + " on " + ", ".join(total["backend_devices"])),
        ("rejected", f"{sum(rejected.values()):,}" if rejected else "none"),
    ]
    rows += [
        (f"  {reason}", f"{count:,}") for reason, count in sorted(rejected.items(), key=lambda kv: (-kv[1], kv[0]))
    ]
    return rows


def _table(title: str, rows: list[tuple[str, str]]) -> str:
    width = max(len(label) for label, _ in rows)
    return "\n".join([title, *(f"  {label:<{width}}  {value}" for label, value in rows)])


def render_stats(stats: dict, address: str) -> str:
    """The readable table of `p2p ctl stats`."""
    return _table(f"daemon at {address}", stats_rows(stats))


def render_cluster(replies: list[tuple[str, dict]]) -> str:
    """`p2p ctl stats` of several daemons: each one's table under its name and control address, then the total.

    A daemon is told apart by its control address: two daemons running alone on one host report the same name."""
    names = [str(reply.get("daemon", "?")) for _, reply in replies]
    tables = [
        _table(f"daemon {name} at {address}", stats_rows(reply)) for name, (address, reply) in zip(names, replies)
    ]
    shared = sorted({n for n in names if names.count(n) > 1})
    note = f" ({', '.join(shared)}: one name, several daemons)" if shared else ""
    total = _table(f"cluster: {len(replies)} daemons{note}", total_rows(cluster_total([r for _, r in replies])))
    return "\n\n".join([*tables, total])


# ------------------------------------------------------------------------------------------------------ verbs


def ask_each(args: argparse.Namespace, msg: dict) -> list[tuple[str, dict | P2PError]]:
    """`msg` to every --control address at once; (address, its reply or the `P2PError` saying why none came)."""

    def one(address: str) -> dict | P2PError:
        try:
            return ask(args, msg, address)
        except P2PError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=len(args.controls)) as pool:
        return list(zip(args.controls, pool.map(one, args.controls)))


def ping(args: argparse.Namespace) -> str:
    start = time.perf_counter()
    ask(args, {"cmd": "ping"})
    return f"the daemon at {args.control} is up (answered in {1000 * (time.perf_counter() - start):.1f} ms)"


def stats(args: argparse.Namespace) -> str:
    """One daemon: its table (--json: its reply). Several: each one's, then the cluster's total over those that
    answered; when some did not, what did is printed and the error names the others (exit status 2)."""
    if len(args.controls) == 1:
        reply = ask(args, {"cmd": "stats"})
        return json.dumps(reply, indent=2, sort_keys=True) if args.json else render_stats(reply, args.control)
    answers = ask_each(args, {"cmd": "stats"})
    replies = [(address, r) for address, r in answers if isinstance(r, dict)]
    failed = [f"{address}: {r}" for address, r in answers if not isinstance(r, dict)]
    if not replies:
        raise P2PError(f"no daemon answered: {'; '.join(failed)}")
    if args.json:
        daemons = [
            {"control": address, "reply": r} if isinstance(r, dict) else {"control": address, "error": str(r)}
            for address, r in answers
        ]
        text = json.dumps({"daemons": daemons, "cluster": cluster_total([r for _, r in replies])}, indent=2)
    else:
        text = render_cluster(replies)
    if failed:
        print(text, flush=True)
        raise P2PError(f"{len(failed)} of {len(answers)} daemons did not answer (left out of the total): "
                       + "; ".join(failed))  # fmt: skip
    return text


def calibrate(args: argparse.Namespace) -> str:
    request = {"cmd": "calibrate", "device": args.device, "sbp": args.sbp, "dbp": args.dbp}
    if args.wearer is not None:
        request["wearer"] = args.wearer
    reply = ask(args, request)
    reading = f"{args.sbp:g}/{args.dbp:g} mmHg"
    if reply.get("applied"):
        return f"calibrated {args.device} with {reading}: its estimates are calibrated from now on"
    return (
        f"cuff reading {reading} stored for {args.device}: its estimates are calibrated once it has enough "
        "estimates around the reading (calibration.min_estimates)"
    )


def forget(args: argparse.Namespace) -> str:
    reply = ask(args, {"cmd": "forget", "device": args.device})
    if reply.get("known"):
        return f"forgot {args.device}: its buffer, calibration and smoothing are dropped"
    return f"{args.device} was not known to the daemon at {args.control}; nothing to forget"


def end_session(args: argparse.Namespace) -> str:
    reply = ask(args, {"cmd": "end_session", "device": args.device})
    return (
        f"ended session {reply['session']} of {args.device}: its calibration and facts no longer apply; the next "
        "wearer starts with nothing known"
    )


def render_history(device: str, rows: list[dict]) -> str:
    """The `history` reply as one line per change, oldest first, times in UTC."""
    if not rows:
        return f"no calibrate or forget of {device} in the daemon's state store"
    lines = [f"history of {device} (UTC; who: the CURVE key that asked, '-' without CURVE)"]
    for row in rows:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(row["time"]))
        values = row.get("values") or {}
        if row["cmd"] == "calibrate":
            what = f"{values['sbp']:g}/{values['dbp']:g} mmHg"
        elif row["cmd"] == "compacted":  # older rows folded into one: how many, and since when
            what = f"{values['rows']} since {time.strftime('%Y-%m-%d', time.gmtime(values['from']))}"
        else:
            what = f"session {row['session']}" if row.get("session") is not None else ""
        who = row.get("client_name") or row.get("client") or "-"  # its key file's name, or the key itself
        lines.append(f"  {when}  {row['cmd']:<9}  {what:<16}  {row['outcome']:<3}  {who}")
    return "\n".join(lines)


def history(args: argparse.Namespace) -> str:
    reply = ask(args, {"cmd": "history", "device": args.device, "limit": args.limit})
    return json.dumps(reply, indent=2, sort_keys=True) if args.json else render_history(args.device, reply["history"])


def connection_args(p: argparse.ArgumentParser, suppress: bool) -> None:
    """The flags of every request. Given to the command and to each verb (`suppress`: no defaults there, so the
    command's value stands unless the flag follows the verb): `p2p ctl --control X stats` and
    `p2p ctl stats --control X` both work."""

    def default(value):
        return argparse.SUPPRESS if suppress else value

    group = p.add_argument_group("connection")
    group.add_argument(
        "--control",
        action="append",
        default=default(None),
        metavar="ADDR",
        help=f"the daemon's control address (default {DEFAULT_CONTROL}, the daemon's own); stats takes it again "
        "for each daemon of a cluster, and adds them up",
    )
    group.add_argument(
        "--timeout-s",
        type=float,
        default=default(DEFAULT_TIMEOUT_S),
        metavar="SECONDS",
        help=f"give up when no answer comes within this long (default {DEFAULT_TIMEOUT_S:g})",
    )
    group.add_argument(
        "--curve-server-key", default=default(None), metavar="FILE", help="the daemon's public key file (CURVE on)"
    )
    group.add_argument(
        "--curve-client-key",
        default=default(None),
        metavar="FILE",
        help="this client's secret key file (with --curve-server-key)",
    )
    group.add_argument(
        "--json",
        action="store_true",
        default=default(False),
        help="print the daemon's raw reply (stats of several: each one's and the cluster's total)",
    )
    if suppress:  # the parent parser's --log-level, after the verb too
        p.add_argument(
            "--log-level", type=str.upper, choices=LOG_LEVELS, default=argparse.SUPPRESS, help=argparse.SUPPRESS
        )


def parser(prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[parent_parser()],
        usage=f"{prog} [flags] {{ping,stats,calibrate,forget,end-session,history}} ...",
    )
    connection_args(p, suppress=False)
    verbs = p.add_subparsers(title="commands", metavar="<command>", dest="cmd", required=True)
    shared = argparse.ArgumentParser(add_help=False)
    connection_args(shared, suppress=True)
    verbs.add_parser("ping", prog=f"{prog} ping", parents=[shared], help="is the daemon up? (it answers, and how fast)")
    verbs.add_parser(
        "stats", prog=f"{prog} stats", parents=[shared], help="the daemon's counters as a table (--json: the raw map)"
    )

    def for_a_device(name: str, help: str) -> argparse.ArgumentParser:
        """A verb that acts for one wearable: its parser, the device id its first argument."""
        verb = verbs.add_parser(name, prog=f"{prog} {name}", parents=[shared], help=help)
        verb.add_argument("device", help="the wearable's device id")
        return verb

    c = for_a_device("calibrate", "a cuff reading (SBP DBP, mmHg) for one wearable")
    c.add_argument("sbp", type=float, help="systolic pressure of the cuff reading, mmHg")
    c.add_argument("dbp", type=float, help="diastolic pressure of the cuff reading, mmHg")
    c.add_argument(
        "--wearer", metavar="KEY", help="refuse unless this wearer (the `wearer` key of its ingest) wears it now"
    )
    for_a_device("forget", "drop a wearable's buffer, calibration and smoothing")
    for_a_device(
        "end-session", "its wearer took it off: calibration and facts no longer apply, the next wearer starts anew"
    )
    h = for_a_device(
        "history", "a wearable's calibrations and forgets: when, what, which key (needs the daemon's state.path)"
    )
    h.add_argument(
        "--limit", type=int, default=HISTORY_DEFAULT, metavar="N", help=f"the latest N (default {HISTORY_DEFAULT})"
    )
    return p


VERBS = {
    "ping": ping,
    "stats": stats,
    "calibrate": calibrate,
    "forget": forget,
    "end-session": end_session,
    "history": history,
}


@command
def main(argv: list[str] | None = None, prog: str = "p2p ctl") -> int:
    args = parser(prog).parse_args(argv)
    setup_logging(args.log_level)
    args.controls = args.control or [DEFAULT_CONTROL]
    for address in args.controls:
        check_address(address, "--control", example=DEFAULT_CONTROL)
    if len(set(args.controls)) < len(args.controls):
        raise ConfigError(f"--control: an address given twice in {' '.join(args.controls)}; give each daemon once")
    if len(args.controls) > 1 and args.cmd != "stats":
        raise ConfigError(f"--control: {args.cmd} goes to one daemon, give one address (several: stats only)")
    args.control = args.controls[0]
    if not args.timeout_s > 0:
        raise ConfigError(f"--timeout-s must be > 0 seconds, got {args.timeout_s}")
    if "limit" in args and not 1 <= args.limit <= HISTORY_MAX:
        raise ConfigError(f"--limit is a number of rows, 1–{HISTORY_MAX}; got {args.limit}")
    if "device" in args and not DEVICE_RE.fullmatch(args.device):
        raise ConfigError(f"{args.device!r} is not a device id; give 1–64 characters of [A-Za-z0-9_.:-]")
    print(VERBS[args.cmd](args), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
