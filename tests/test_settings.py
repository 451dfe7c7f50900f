"""One place per setting: the declarations drive validation, the defaults files, the flags and --help."""

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from p2p_stream.config import __main__ as defaults_files
from p2p_stream.config.daemon import DaemonConfig, load_daemon_config
from p2p_stream.config.layers import parse_override
from p2p_stream.config.settings import check_settings, declared, flag_values, setting, value_at
from p2p_stream.config.train import TrainConfig, load_train_config
from p2p_stream.errors import ConfigError
from p2p_stream.tools.cli import daemon as cli_daemon
from p2p_stream.tools.cli import train as cli_train

ROOT = Path(__file__).parent.parent
CONFIGS = [(DaemonConfig, load_daemon_config), (TrainConfig, load_train_config)]


def test_the_defaults_files_are_what_the_declarations_generate():
    for name, make in defaults_files.DEFAULT_FILES.items():
        assert (ROOT / name).read_text() == make(), f"{name} is stale: run python -m p2p_stream.config"
    assert load_daemon_config(ROOT / "configs" / "default.toml") == DaemonConfig()
    assert load_train_config(ROOT / "configs" / "train-defaults.toml") == TrainConfig()


def test_the_check_finds_a_stale_file(tmp_path, capsys):
    assert defaults_files.main(["--root", str(tmp_path)]) == 0  # writes both
    assert defaults_files.main(["--check", "--root", str(tmp_path)]) == 0
    path = tmp_path / "configs" / "default.toml"
    path.write_text(path.read_text().replace("max_batch = 64", "max_batch = 32"))
    assert defaults_files.main(["--check", "--root", str(tmp_path)]) == 1
    assert "out of date: configs/default.toml" in capsys.readouterr().err


@pytest.mark.parametrize("config_cls", [DaemonConfig, TrainConfig])
def test_every_setting_is_declared_with_help(config_cls):
    keys = [d.key for d in declared(config_cls)]  # raises for a field made without setting(...)
    assert len(keys) == len(set(keys)) > 10
    for d in declared(config_cls):
        assert d.spec.help, d.key
    check_settings(config_cls())  # every default inside its own range and choices


def test_an_undeclared_field_is_refused():
    @dataclasses.dataclass
    class Section:
        a: int = setting(1, "declared")
        b: int = 2

    with pytest.raises(TypeError, match="b is not declared"):
        list(declared(Section))


@pytest.mark.parametrize(
    "config_cls,key",
    [(c, d.key) for c, _ in CONFIGS for d in declared(c) if d.spec.range],
)
def test_every_declared_range_is_enforced(config_cls, key):
    d = next(d for d in declared(config_cls) if d.key == key)
    r, step = d.spec.range, 1 if d.kind is int else 1e-6
    outside = [r.lo - (0 if r.lo_open else step)] if r.lo is not None else []
    outside += [r.hi + (0 if r.hi_open else step)] if r.hi is not None else []
    assert outside
    *sections, name = key.split(".")
    for value in outside:
        config = config_cls()
        setattr(value_at(config, ".".join(sections)), name, d.kind(value) if d.kind is int else value)
        with pytest.raises(ConfigError, match=rf"^{key} must be .*, got "):
            check_settings(config)
    check_settings(config_cls())  # the defaults are inside


@pytest.mark.parametrize(
    "override,message",
    [
        ("model.backend='gpu'", "model.backend must be one of ('local', 'ray'), got 'gpu'"),
        ("cluster.members='a,b c'", "cluster.members must be comma-separated ids of 1–64 characters"),
        ("cluster.redis='localhost:6379'", "cluster.redis must be redis://host:port[/db]"),
        ("limits.max_devices='many'", "limits.max_devices must be an integer, got 'many'"),
        ("limits=3", "limits must be a table"),
        ("limit.max_devices=3", "unknown key limit; valid keys: batching, calibration, cluster, limits, model, "),
        ("calibration.min_estimates=65", "calibration.min_estimates must be within [1, 64], got 65"),
    ],
)
def test_daemon_values_are_refused_naming_the_key_and_what_is_right(override, message):
    with pytest.raises(ConfigError) as info:
        load_daemon_config(None, [parse_override(override)])
    assert message in str(info.value)


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["cluster.members='a,b'"], "cluster.id: a daemon in a cluster needs a name unique there"),
        (
            ["cluster.members='a,b'", "cluster.id='c'"],
            "must include this daemon's cluster.id 'c'",
        ),
        (["cluster.members='a'", "cluster.redis='redis://h:1'", "cluster.id='a'"], "give one — a fixed list, or Redis"),
        (
            ["security.curve_secret_key='k'", "security.authorized_keys='a'", "sockets.connect=true"],
            "behind p2p-proxy, CURVE goes on the proxy",
        ),
    ],
)
def test_a_cluster_is_named_and_one_kind(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_daemon_config(None, [parse_override(o) for o in overrides])


def test_log_level_is_accepted_in_any_case():
    assert load_daemon_config(None, [parse_override("operation.log_level='debug'")]).operation.log_level == "debug"


@pytest.mark.parametrize(
    "override,message",
    [
        ("split.val_fraction=0.5", "split.val_fraction must be in (0.0, 0.5), got 0.5"),
        ("head.level=1.0", "head.level must be in [0.5, 1.0), got 1.0"),
        ("optim.lr=0", "optim.lr must be > 0.0, got 0.0"),
        ("optim.demographics_dropout=1.5", "optim.demographics_dropout must be within [0.0, 1.0], got 1.5"),
        ("data.exclude_subjects=[1]", "data.exclude_subjects must be a list of strings, got [1]"),
    ],
)
def test_train_values_are_refused_naming_the_key_and_what_is_right(override, message):
    with pytest.raises(ConfigError) as info:
        load_train_config(None, [parse_override(override)])
    assert message in str(info.value)


def _daemon_config(argv: list[str]) -> DaemonConfig:
    args = cli_daemon.build_parser().parse_args(argv)
    return load_daemon_config(args.config, [flag_values(args, DaemonConfig)] + [parse_override(s) for s in args.set])


def test_daemon_flags_set_their_declared_keys_and_the_old_names_still_work():
    c = _daemon_config(
        ["--ingest", "ipc:///tmp/i", "--estimates", "ipc:///tmp/e", "--control", "ipc:///tmp/c", "--window-s", "4",
         "--hop-s", "1", "--max-batch", "8", "--max-wait-ms", "5", "--threads", "3", "--torch-device", "cpu",
         "--backend", "local", "--model", "m", "--log-level", "DEBUG"]
    )  # fmt: skip
    assert c.sockets.addresses() == {"ingest": "ipc:///tmp/i", "publish": "ipc:///tmp/e", "control": "ipc:///tmp/c"}
    assert (c.windowing.window_s, c.windowing.hop_s, c.batching.max_batch, c.batching.max_wait_ms) == (4, 1, 8, 5)
    assert (c.model.threads, c.model.torch_device, c.model.backend, c.model.path) == (3, "cpu", "local", "m")
    assert c.operation.log_level == "DEBUG"
    old = _daemon_config(["--publish", "ipc:///tmp/e", "--device", "cuda:1"])
    assert (old.sockets.publish, old.model.torch_device) == ("ipc:///tmp/e", "cuda:1")
    # --set after the flags wins; the flags win over the file
    assert _daemon_config(["--max-batch", "8", "--set", "batching.max_batch=9"]).batching.max_batch == 9


def test_a_flag_for_every_declared_flag_and_help_from_the_declaration(capsys):
    with pytest.raises(SystemExit):
        cli_daemon.build_parser().parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    flags = [d.spec.flag for d in declared(DaemonConfig) if d.spec.flag]
    assert flags == ["--ingest", "--estimates", "--control", "--window-s", "--hop-s", "--max-batch", "--max-wait-ms",
                     "--model", "--torch-device", "--threads", "--backend", "--log-level"]  # fmt: skip
    for flag in flags:
        assert flag in text
    assert "--window-s S window length (s), 2–120 [10.0]" in text
    assert "--max-wait-ms MS the oldest window waits at most this long for company (ms), 0–10000 [20.0]" in text
    assert "--torch-device DEVICE torch device the network runs on" in text
    assert "--device" not in text  # a deprecated name works (below) but is not offered


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--window", "5"], "unknown flag --window; did you mean --window-s?"),
        (["--window-s", "abc"], "windowing.window_s must be a number, got 'abc'"),
        (["--max-batch", "2.5"], "batching.max_batch must be an integer, got '2.5'"),
        (["--window-s"], "argument --window-s: expected one argument"),
        (["--set", "window_s"], "--set expects section.key=value, got 'window_s'"),
    ],
)
def test_daemon_flag_mistakes_are_one_line(argv, message, capsys):
    assert cli_daemon.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and "usage:" not in err


def test_train_flags_set_their_declared_keys(tmp_path, capsys):
    args = cli_train.build_parser().parse_args(
        ["--out", str(tmp_path), "--data", "d", "--dataset", "pool", "--protocol", "lodo", "--epochs", "3", "--seed",
         "4"]
    )  # fmt: skip
    c = load_train_config(None, [flag_values(args, TrainConfig)])
    assert (c.data.path, c.data.dataset, c.split.protocol, c.optim.epochs, c.split.seed) == ("d", "pool", "lodo", 3, 4)
    assert cli_train.main(["--out", str(tmp_path), "--protocol", "random"]) == 2
    assert "split.protocol must be one of ('subject', 'seed', 'lodo'), got 'random'" in capsys.readouterr().err
    assert cli_train.main(["--out", str(tmp_path), "--epoch", "3"]) == 2
    assert "unknown flag --epoch; did you mean --epochs?" in capsys.readouterr().err


DEPRECATED_KEY = "model.device is deprecated; use model.torch_device"


@pytest.mark.parametrize(
    "toml",
    ['[model]\ndevice = "cpu"\n', 'model.device = "cpu"\n', '[model]\ntorch_device = "cpu"\n'],
    ids=["old key in its table", "old key dotted", "new key"],
)
def test_a_renamed_key_still_works_under_its_old_name_with_one_line_saying_so(toml, tmp_path, caplog):
    path = tmp_path / "daemon.toml"
    path.write_text(toml)
    caplog.set_level("WARNING")
    assert load_daemon_config(path).model.torch_device == "cpu"
    old = "torch_device" not in toml
    assert [r.getMessage() for r in caplog.records] == ([DEPRECATED_KEY] if old else [])
    caplog.clear()  # the old key in the file and in --set: still one line
    config = load_daemon_config(path, [parse_override("model.device='cuda:1'")])
    assert config.model.torch_device == "cuda:1"
    assert [r.getMessage() for r in caplog.records] == [DEPRECATED_KEY]


def test_a_renamed_key_and_its_new_name_together_are_refused():
    with pytest.raises(ConfigError, match="give only model.torch_device"):
        load_daemon_config(None, [{"model": {"device": "cpu", "torch_device": "cuda"}}])
    config = load_daemon_config(None, [parse_override("model.device=cpu"), parse_override("model.torch_device=cuda")])
    assert config.model.torch_device == "cuda"  # in separate layers, the later wins as for any key


@pytest.mark.parametrize(
    "argv,lines",
    [
        (["--device", "tpu"], ["--device is deprecated; use --torch-device"]),
        (["--set", "model.device=tpu"], [DEPRECATED_KEY]),
        (["--torch-device", "tpu"], []),
        (["--set", "model.torch_device=tpu"], []),
    ],
)
def test_the_old_flag_and_key_print_one_deprecation_line_and_are_checked_as_the_new(argv, lines):
    """A real command line: the line reaches the terminal before logging is set up, and the value is checked under
    its new name."""
    cmd = [sys.executable, "-m", "p2p_stream.tools.cli.daemon", *argv]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 2
    err = out.stderr.splitlines()
    assert err == [*lines, "error: model.torch_device must be cpu, cuda, cuda:N or auto, got 'tpu'"]


def test_an_unknown_key_is_still_refused_and_the_old_name_is_not_offered():
    with pytest.raises(ConfigError) as info:
        load_daemon_config(None, [parse_override("model.devices=cpu")])
    assert str(info.value) == (
        "unknown key model.devices; valid keys: backend, burst_threads, inference_process, path, reuse_crops, "
        "threads, torch_device; did you mean torch_device?"
    )


def test_config_imports_no_stream_tool_offline_zmq_or_torch():
    code = (
        "import sys, p2p_stream.config.daemon, p2p_stream.config.train, p2p_stream.config.__main__; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('zmq', 'torch') "
        "or m.startswith(('p2p_stream.stream', 'p2p_stream.tools', 'p2p_stream.offline', 'p2p_stream.model'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_resume_gap_shorter_than_the_idle_time_is_refused():
    """A device paused but still in the table must be able to resume its wearer session (issue 24 review)."""
    with pytest.raises(ConfigError, match=r"state.resume_gap_s \(1800.0 s\) must be at least limits.device_idle_s"):
        load_daemon_config(None, [{"limits": {"device_idle_s": 3600.0}}])
