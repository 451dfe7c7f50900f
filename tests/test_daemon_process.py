"""The daemon as a real process: end to end, a malformed barrage that changes nothing, SIGTERM, refused configs."""

import signal
import sys
import time

import msgpack
import numpy as np
import pytest
import zmq
from helpers import simulated_ppg
from zmq_helpers import client, daemon_process, ipc_addresses

from p2p_stream import Estimator
from p2p_stream.ppg.preprocess import cut_windows
from p2p_stream.tools.cli.daemon import main as daemon_main
from p2p_stream.wire.protocol import MAX_SAMPLES, encode_ingest

FS = 125.0
T0 = 1_700_000_000.0


def malformed(i: int) -> list[bytes]:
    """One of many ways a message can be wrong."""
    good = msgpack.unpackb(encode_ingest("evil", i, T0, FS, np.ones(25))[1])
    variants = [
        [b"ppg.evil", b"\xc1\xc1 not msgpack"],
        [b"ppg.evil"],
        [b"ppg.evil", msgpack.packb([1, 2, 3])],
        [b"ppg.evil", msgpack.packb({**good, "v": 2})],
        [b"ppg.evil", msgpack.packb({k: v for k, v in good.items() if k != "fs"})],
        [b"ppg.evil", msgpack.packb({**good, "fs": float("nan")})],
        [b"ppg.evil", msgpack.packb({**good, "fs": 1e9})],
        [b"ppg.evil", msgpack.packb({**good, "ppg": b""})],
        [b"ppg.evil", msgpack.packb({**good, "ppg": b"\x00\x01\x02"})],
        [b"ppg.evil", msgpack.packb({**good, "ppg": ["a", "b"]})],
        [b"ppg.evil", msgpack.packb({**good, "ppg": np.zeros(MAX_SAMPLES + 1, "<f4").tobytes()})],
        [b"ppg.evil", msgpack.packb({**good, "device": "other"})],
        [b"ppg.bad id", msgpack.packb({**good, "device": "bad id"})],
        [b"ppg.evil", msgpack.packb({**good, "seq": -1})],
        [b"ppg.evil", msgpack.packb({**good, "seq": "7"})],
        [b"ppg.evil", msgpack.packb({**good, "t0": "now"})],
        [b"ppg.evil", msgpack.packb({**good, "ref": [120, 80]})],
    ]
    return variants[i % len(variants)]


@pytest.fixture
def daemon_proc():
    with ipc_addresses() as addresses, daemon_process(addresses) as proc:
        yield proc, addresses


def test_real_daemon_process_barrage_and_sigterm(daemon_proc):
    proc, addresses = daemon_proc
    est = Estimator.load()
    x = simulated_ppg(80, 10, FS, seed=7)
    windows = cut_windows(x.astype(np.float32), 500, 125)
    expected = est.predict(windows, FS)
    with client(addresses) as c:
        # The good device's messages interleaved with 170 malformed ones from elsewhere.
        for i, start in enumerate(range(0, len(x), 25)):
            c.pub.send_multipart(encode_ingest("good", i, T0 + start / FS, FS, x[start : start + 25]))
            for k in range(4):
                c.pub.send_multipart(malformed(4 * i + k))
        got = c.estimates(lambda g: len([e for e in g if e["device"] == "good"]) >= len(windows), timeout_s=60)
        stats = c.control({"cmd": "stats"})
        assert c.control({"cmd": "ping"}) == {"ok": True}
        good = [e for e in got if e["device"] == "good"]
        np.testing.assert_allclose([[e["sbp_window"], e["dbp_window"]] for e in good], expected[:, :2], atol=0.02)
        assert all(e["device"] == "good" for e in got)  # nothing published for the malformed senders
        rejected = stats["rejected"]
        for reason in (
            "not_msgpack",
            "bad_frames",
            "bad_type",
            "bad_version",
            "missing_key",
            "bad_fs",
            "empty_samples",
            "bad_samples",
            "oversized",
            "bad_device",
        ):
            assert rejected.get(reason, 0) > 0, reason
        assert sum(rejected.values()) == 4 * len(range(0, len(x), 25))
        proc.send_signal(signal.SIGTERM)
        start = time.monotonic()
        code = proc.wait(timeout=10)
        elapsed = time.monotonic() - start
    assert code == 0
    assert elapsed < 2.0, f"took {elapsed:.2f} s to stop"


def test_port_in_use_fails_at_start_up(capsys):
    ctx = zmq.Context()
    squatter = ctx.socket(zmq.PUB)
    port = squatter.bind_to_random_port("tcp://127.0.0.1")
    try:
        with ipc_addresses() as a:
            code = daemon_main(
                [
                    "--publish",
                    f"tcp://127.0.0.1:{port}",
                    "--ingest",
                    a["ingest"],
                    "--control",
                    a["control"],
                    "--torch-device",
                    "cpu",
                ]
            )
    finally:
        squatter.close(0)
        ctx.term()
    assert code == 2
    assert f"sockets.publish: cannot bind tcp://127.0.0.1:{port}" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--max-batch", "0"], "batching.max_batch must be within [1, 4096], got 0"),
        (["--window-s", "1"], "windowing.window_s must be within [2.0, 120.0], got 1.0"),
        (["--hop-s", "20"], "windowing.hop_s (20.0) must not exceed windowing.window_s (10.0)"),
        (["--torch-device", "tpu"], "model.torch_device must be cpu, cuda, cuda:N or auto, got 'tpu'"),
        (
            ["--ingest", "udp://x"],
            "sockets.ingest must be one of tcp://HOST:PORT, ipc://PATH or inproc://NAME (a tcp port 1–65535), "
            "got 'udp://x'",
        ),
        (["--control", "tcp://127.0.0.1:70000"], "got 'tcp://127.0.0.1:70000'"),  # the tools' port rule too
        (
            ["--set", "limits.max_device=3"],
            "unknown key limits.max_device; valid keys: burst_s, device_idle_s, ingest_queue_mb, max_chunk_samples, "
            "max_clock_skew_s, max_devices, max_devices_per_key, max_fs_hz, publish_hwm, rate_factor, "
            "ring_memory_mb; did you mean max_devices?",
        ),
        (["--log-level", "LOUD"], "operation.log_level must be one of"),
        (["--backend", "gpu"], "model.backend must be one of ('local', 'ray'), got 'gpu'"),
        (["--set", "ray.min_replicas=5", "--set", "ray.max_replicas=2"], "ray.min_replicas (5) must not exceed"),
        (["--set", "ray.address=headnode"], "ray.address must be '' (a Ray of this daemon's own), 'auto'"),
        (["--set", "ray.retries=-1"], "ray.retries must be within [0, 100], got -1"),
    ],
)
def test_bad_configuration_is_refused_with_the_valid_range(argv, message, capsys):
    assert daemon_main(argv) == 2
    assert message in capsys.readouterr().err


def test_bad_model_path_is_refused(tmp_path, capsys):
    with ipc_addresses() as a:
        code = daemon_main(
            ["--model", str(tmp_path), "--ingest", a["ingest"], "--publish", a["publish"], "--control", a["control"]]
        )
    assert code == 2 and "no model.json" in capsys.readouterr().err


def test_ray_backend_without_ray_installed_says_how_to_get_it(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "p2p_stream.backends.ray", None)  # as if the [cluster] extra were absent
    with ipc_addresses() as a:
        code = daemon_main(["--backend", "ray", "--ingest", a["ingest"], "--publish", a["publish"],
                            "--control", a["control"]])  # fmt: skip
    assert code == 2
    assert "model.backend = 'ray' needs Ray Serve" in capsys.readouterr().err


def test_default_config_file_matches_the_built_in_defaults():
    from pathlib import Path

    from p2p_stream.config.daemon import DaemonConfig, load_daemon_config

    path = Path(__file__).parent.parent / "configs" / "default.toml"
    assert load_daemon_config(path) == DaemonConfig()


def test_checkpoint_that_needs_longer_windows_is_refused(tmp_path, capsys):
    import json
    import shutil

    from p2p_stream.model.estimator import default_model_path

    ckpt = tmp_path / "ckpt"
    shutil.copytree(default_model_path(), ckpt)
    meta = json.loads((ckpt / "model.json").read_text())
    meta["quality"]["min_s"] = 12.0
    (ckpt / "model.json").write_text(json.dumps(meta))
    with ipc_addresses() as a:
        code = daemon_main(["--model", str(ckpt), "--window-s", "10", "--ingest", a["ingest"],
                            "--publish", a["publish"], "--control", a["control"]])  # fmt: skip
    assert code == 2
    assert (
        "windowing.window_s = 10.0 s is shorter than the 12.0 s the model's quality gate needs"
        in capsys.readouterr().err
    )


def test_fixed_length_checkpoint_with_other_windows_is_refused(tmp_path, capsys):
    # A seed-lstm checkpoint (fixed 10 s input) under a daemon cutting 4 s windows: refused at start-up.
    import torch

    from p2p_stream.model.checkpoint import save_checkpoint
    from p2p_stream.model.estimator import Estimator
    from p2p_stream.model.networks import build_model

    skip = ("model", "weights", "format", "windows", "head", "crop_s")  # the shipped model's, not a seed-lstm's
    meta = {k: v for k, v in Estimator.load().metadata.items() if k not in skip}
    meta["window_s"] = 10.0
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "seed", build_model("seed-lstm", {"outputs": 1}), "seed-lstm", meta)
    with ipc_addresses() as a:
        code = daemon_main(["--model", str(tmp_path / "seed"), "--window-s", "4", "--hop-s", "1", "--torch-device",
                            "cpu", "--ingest", a["ingest"], "--publish", a["publish"], "--control",
                            a["control"]])  # fmt: skip
    assert code == 2
    assert "outside the window lengths" in (err := capsys.readouterr().err) and "set windowing.window_s = 10" in err


def test_a_calibration_span_too_long_for_its_hop_is_refused(capsys):
    code = daemon_main(["--torch-device", "cpu", "--hop-s", "0.1", "--set", "calibration.span_s=3600"])
    assert code == 2
    assert "calibration.span_s / windowing.hop_s must be ≤ 600" in capsys.readouterr().err
