"""Every default from its one declaration: a tool's default address and an ingest stage's default limit are the
daemon's own settings (config/daemon.py), never a copy that can drift."""

import argparse
import importlib
import inspect

import pytest

from p2p_stream.config.addresses import SCHEMES
from p2p_stream.config.daemon import DaemonConfig
from p2p_stream.config.settings import declared
from p2p_stream.stream.ingest.bounds import MB
from p2p_stream.stream.ingest.devices import DeviceTable
from p2p_stream.stream.ingest.ring_buffer import DeviceStream
from p2p_stream.tools.cli import ctl
from p2p_stream.tools.cli.main import VERBS
from p2p_stream.tools.cluster import plan, proxy

DAEMON = {d.key: d.default for d in declared(DaemonConfig)}
# verb → {its flag's dest: the daemon setting whose default it must have}
SAME_AS_THE_DAEMON = {
    "monitor": {"estimates": "sockets.publish"},
    "record": {"estimates": "sockets.publish"},
    "lsl": {"ingest": "sockets.ingest"},
    "replay": {"ingest": "sockets.ingest"},
    "fleet": {"ingest": "sockets.ingest"},
    "demo": {"ingest": "sockets.ingest", "estimates": "sockets.publish", "control": "sockets.control",
             "torch_device": "model.torch_device"},
    "proxy": {"wearables": "sockets.ingest", "subscribers": "sockets.publish"},  # it stands in for one daemon
}  # fmt: skip
PROXY_ONLY = ("shards", "estimates")  # the proxy's inner side, which no daemon setting has


class Parsed(Exception):
    """Raised in place of parsing: carries the parser a verb built."""


def parser_of(verb: str, monkeypatch: pytest.MonkeyPatch) -> argparse.ArgumentParser:
    def stop(self, args=None, namespace=None):
        raise Parsed(self)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", stop)  # parse_args of every parser comes here
    with pytest.raises(Parsed) as info:
        importlib.import_module(VERBS[verb][0]).main([])
    return info.value.args[0]


@pytest.mark.parametrize("verb", [v for v in VERBS if v not in ("daemon", "train")])  # those two read the settings
def test_a_tool_s_default_address_is_the_daemon_s_declared_default(verb, monkeypatch):
    parser = parser_of(verb, monkeypatch)
    expected = SAME_AS_THE_DAEMON.get(verb, {})
    for dest, key in expected.items():
        assert parser.get_default(dest) == DAEMON[key], f"p2p {verb}: --{dest} differs from {key}"
        assert f"default {DAEMON[key]}" in " ".join(parser.format_help().split()), f"p2p {verb} --help: --{dest}"
    addresses = {a.dest for a in parser._actions if isinstance(a.default, str) and a.default.startswith(SCHEMES)}
    own = set(PROXY_ONLY) if verb == "proxy" else set()
    assert addresses - set(expected) == own, f"p2p {verb}: a default address that is no daemon setting's"


def test_the_proxy_s_own_addresses_are_declared_once_and_used_by_the_cluster_file():
    assert {k: proxy.DEFAULTS[k] for k in SAME_AS_THE_DAEMON["proxy"]} == {
        k: DAEMON[key] for k, key in SAME_AS_THE_DAEMON["proxy"].items()
    }
    assert set(proxy.DEFAULTS) == {*SAME_AS_THE_DAEMON["proxy"], *PROXY_ONLY}
    section = plan.ProxySection()
    assert {name: getattr(section, name) for name in proxy.DEFAULTS} == proxy.DEFAULTS


def test_ctl_asks_the_daemon_s_declared_control_address():
    assert ctl.DEFAULT_CONTROL == DAEMON["sockets.control"]


@pytest.mark.parametrize("stage", [DeviceTable, DeviceStream])
def test_an_ingest_stage_s_default_limits_are_the_daemon_s(stage):
    defaults = {k: p.default for k, p in inspect.signature(stage).parameters.items() if p.default is not p.empty}
    assert defaults["rate_factor"] == DAEMON["limits.rate_factor"]
    assert defaults["burst_s"] == DAEMON["limits.burst_s"]
    if "ring_memory_bytes" in defaults:
        assert defaults["ring_memory_bytes"] == DAEMON["limits.ring_memory_mb"] * MB


@pytest.mark.parametrize(
    "verb,argv", [("daemon", []), ("demo", []), ("eval", ["--out", "report", "--model", "default"])]
)
def test_the_torch_device_flag_is_one_name_everywhere_the_old_one_logging_a_line(verb, argv, monkeypatch, caplog):
    parser = parser_of(verb, monkeypatch)
    monkeypatch.undo()
    dest = next(a.dest for a in parser._actions if "--torch-device" in a.option_strings)
    assert getattr(parser.parse_args([*argv, "--torch-device", "cpu"]), dest) == "cpu"
    assert caplog.records == []
    assert getattr(parser.parse_args([*argv, "--device", "cpu"]), dest) == "cpu"
    assert [r.getMessage() for r in caplog.records] == ["--device is deprecated; use --torch-device"]
