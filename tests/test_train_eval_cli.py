"""p2p-train and p2p-eval end to end on the bundled real sample: checkpoint, predictions, reports, refusals."""

import json

import numpy as np
import pytest

from p2p_stream import Estimator
from p2p_stream.errors import CheckpointError
from p2p_stream.model.checkpoint import METADATA, WEIGHTS
from p2p_stream.tools.cli.eval import main as eval_main
from p2p_stream.tools.cli.train import main as train_main

QUICK = ["--epochs", "2", "--set", "optim.patience=2", "--set", "split.test_fraction=0.3"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, request):
    out = tmp_path_factory.mktemp("run")
    sample = request.config.rootpath / "tests" / "data" / "ppg_bp_sample"
    assert train_main(["--data", str(sample), "--out", str(out), *QUICK]) == 0
    return out


def test_holdout_run_writes_checkpoint_and_report(trained):
    assert (trained / WEIGHTS).is_file() and (trained / METADATA).is_file()
    for name in (
        "predictions.csv",
        "report.json",
        "report.md",
        "per_subject.csv",
        "bland_altman.png",
        "scatter.png",
        "error_hist.png",
    ):
        assert (trained / "report" / name).is_file(), name
    meta = json.loads((trained / METADATA).read_text())
    assert meta["model"]["name"] == "conv-lstm" and meta["preprocess"]["fs"] == 125.0
    assert len(meta["weights"]["sha256"]) == 64 and len(meta["data"]["fingerprint"]) == 64
    assert set(meta["label_stats"]) == {"sbp_mean", "sbp_std", "dbp_mean", "dbp_std"}
    report = json.loads((trained / "report" / "report.json").read_text())
    test_subjects = {r["subject"] for r in report["sbp"]["per_subject"]}
    train_groups = set(meta["split"]["test_groups"])
    assert test_subjects <= {s for g in train_groups for s in g.split("+")}


def test_checkpoint_predicts_like_the_estimator(trained, ppg_bp_sample):
    est = Estimator.load(trained)
    raw = np.array((ppg_bp_sample / "0_subject" / "2_1.txt").read_text().split(), dtype=np.float64)
    one = est.predict(raw, fs=1000.0)
    assert one.shape == (1, 2) and np.isfinite(one).all()
    two = est.predict([raw, raw[:2000]], fs=1000.0, meta=[{"age": 45, "sex": "F"}, None])
    assert two.shape == (2, 2)


def test_eval_on_checkpoint_and_on_predictions(trained, ppg_bp_sample, tmp_path):
    assert eval_main(["--model", str(trained), "--data", str(ppg_bp_sample), "--out", str(tmp_path / "a")]) == 0
    a = json.loads((tmp_path / "a" / "report.json").read_text())
    assert a["split"] == "test" and a["sbp"]["model"]["n_windows"] > 0
    assert eval_main(["--predictions", str(trained / "report" / "predictions.csv"), "--out", str(tmp_path / "b")]) == 0
    b = json.loads((tmp_path / "b" / "report.json").read_text())
    assert b["sbp"]["model"]["mae"] == pytest.approx(a["sbp"]["model"]["mae"], abs=0.01)
    assert "MASE" in (tmp_path / "b" / "report.md").read_text()


def test_cross_validation_scores_every_window_once(ppg_bp_sample, tmp_path):
    assert train_main(["--data", str(ppg_bp_sample), "--out", str(tmp_path), "--cv", "3", *QUICK]) == 0
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["folds"] == 3 and report["n_subjects"] == 12
    assert not (tmp_path / WEIGHTS).exists()  # CV measures; it ships nothing


def test_tampered_weights_are_refused(trained, tmp_path):
    import shutil

    copy = tmp_path / "ckpt"
    shutil.copytree(trained, copy)
    data = bytearray((copy / WEIGHTS).read_bytes())
    data[-1] ^= 0xFF
    (copy / WEIGHTS).write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="SHA-256 .* does not match"):
        Estimator.load(copy)


def test_mismatched_metadata_is_refused(trained, tmp_path):
    import shutil

    copy = tmp_path / "ckpt"
    shutil.copytree(trained, copy)
    meta = json.loads((copy / METADATA).read_text())
    meta["model"]["params"]["hidden"] = 96
    (copy / METADATA).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="weights do not fit model 'conv-lstm'"):
        Estimator.load(copy)
    meta["model"]["params"] = {"bogus": 1}
    (copy / METADATA).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="no parameter"):
        Estimator.load(copy)
    with pytest.raises(CheckpointError, match="no model.json"):
        Estimator.load(tmp_path)


def test_cli_errors_are_clear(tmp_path, capsys, ppg_bp_sample):
    assert train_main(["--out", str(tmp_path), "--set", "optim.epoch=3"]) == 2
    assert "unknown key optim.epoch; valid keys: augment, balance" in capsys.readouterr().err
    assert train_main(["--out", str(tmp_path), "--data", str(tmp_path)]) == 2
    assert "not a PPG-BP folder" in capsys.readouterr().err
    assert eval_main(["--model", "default", "--out", str(tmp_path)]) == 2
    assert "--model needs --data" in capsys.readouterr().err
