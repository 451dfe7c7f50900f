"""Configuration: every setting's declaration and the layers (defaults → TOML → flags) that fill it."""
