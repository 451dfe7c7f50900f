"""Configuration: every setting's declaration (settings.py, used by daemon.py and train.py) and the layers
(defaults → TOML → flags, layers.py) that fill it. Imports nothing from stream/, offline/ or tools/.
`python -m p2p_stream.config` writes configs/default.toml and configs/train-defaults.toml from the declarations."""
