"""Training configuration: TOML holds what differs; unknown keys and wrong types are refused with the choices."""

import pytest

from p2p_stream.config.train import load_train_config, parse_override
from p2p_stream.errors import ConfigError


def test_defaults_file_and_overrides(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[model]\nname = "seed-lstm"\n[optim]\nepochs = 7\n')
    c = load_train_config(path, [parse_override("optim.lr=0.01"), parse_override("model.params.outputs=1")])
    assert c.model.name == "seed-lstm" and c.optim.epochs == 7 and c.optim.lr == 0.01
    assert c.model.params == {"outputs": 1}
    assert c.optim.batch_size == 32  # untouched default


def test_every_shipped_config_loads():
    from pathlib import Path

    files = sorted((Path(__file__).parent.parent / "configs" / "train").glob("*.toml"))
    assert files
    for f in files:
        load_train_config(f)


@pytest.mark.parametrize(
    "override,message",
    [
        ("optim.epoch=3", r"unknown key optim\.epoch; valid keys: .*, epochs, .*; did you mean epochs\?"),
        ("optim.epochs=3.5", "optim.epochs must be an integer, got 3.5"),
        ("split.protocol='random'", r"split.protocol must be one of \('subject', 'seed', 'lodo'\)"),
        ("split.protocol='lodo'", "split.protocol = 'lodo' needs data.dataset = 'pool'"),
        ("optim.loss='mae'", "optim.loss must be one of"),
        ("split.folds=1", "split.folds must be ≥ 2"),
        ("data=3", "data must be a table"),
    ],
)
def test_bad_values_are_refused(override, message):
    with pytest.raises(ConfigError, match=message):
        load_train_config(None, [parse_override(override)])


def test_bad_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_train_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[optim\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_train_config(bad)
