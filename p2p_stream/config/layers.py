"""Configuration layers: dataclass defaults, a TOML file, then CLI overrides; unknown keys and wrong types refused,
renamed keys accepted under their old name with a line saying so."""

from __future__ import annotations

import copy
import difflib
import logging
import tomllib
from collections.abc import Mapping
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

from p2p_stream.errors import ConfigError

log = logging.getLogger(__name__)


def apply_values(target: Any, values: dict, where: str) -> None:
    names = {f.name: f for f in fields(target)}
    for key, value in values.items():
        if key not in names:
            raise ConfigError(unknown_key(f"{where}{key}", sorted(names)))
        current = getattr(target, key)
        if is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}{key} must be a table")
            apply_values(current, value, f"{where}{key}.")
        elif isinstance(current, dict):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}{key} must be a table")
            current.update(value)
        else:
            setattr(target, key, _coerce(value, type(current), f"{where}{key}"))


def unknown_key(key: str, valid: list[str]) -> str:
    """'unknown key limits.max_device; valid keys: device_idle_s, …; did you mean max_devices?'"""
    near = difflib.get_close_matches(key.rsplit(".", 1)[-1], valid, n=1)
    return f"unknown key {key}; valid keys: {', '.join(valid)}" + (f"; did you mean {near[0]}?" if near else "")


_KIND_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string", list: "a list of strings"}


def _coerce(value: Any, kind: type, where: str) -> Any:
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
    elif kind in (int, float) and not isinstance(value, bool):
        try:
            number = kind(value)
        except (TypeError, ValueError):
            pass
        else:
            if kind is float or float(value) == number:
                return number
    elif kind is str and isinstance(value, str):
        return value
    elif kind is list and isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise ConfigError(f"{where} must be {_KIND_NAMES.get(kind, kind.__name__)}, got {value!r}")


def parse_override(text: str) -> dict:
    """`section.key=value` (value read as TOML, else as a string) → nested dict."""
    if "=" not in text:
        raise ConfigError(f"--set expects section.key=value, got {text!r}")
    dotted, raw = text.split("=", 1)
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    out: dict = {}
    node = out
    keys = dotted.strip().split(".")
    for k in keys[:-1]:
        node = node.setdefault(k, {})
    node[keys[-1]] = value
    return out


def rename_keys(values: dict, renamed: Mapping[str, str], warned: set[str]) -> dict:
    """`values` with each old dotted key of `renamed` (old → new) moved to its new key; the first use of each old key
    (per `warned`) logs 'model.device is deprecated; use model.torch_device'. Old and new key together: refused."""
    for old, new in renamed.items():
        *old_sections, old_name = old.split(".")
        node = values
        for s in old_sections:
            node = node.get(s) if isinstance(node, dict) else None
        if not isinstance(node, dict) or old_name not in node:
            continue
        if old not in warned:
            warned.add(old)
            log.warning("%s is deprecated; use %s", old, new)
        value = node.pop(old_name)
        *new_sections, new_name = new.split(".")
        target = values
        for s in new_sections:
            target = target.setdefault(s, {})
            if not isinstance(target, dict):
                raise ConfigError(f"{s} must be a table")
        if new_name in target:
            raise ConfigError(f"{old} and {new} are one setting, {old} its deprecated name: give only {new}")
        target[new_name] = value
    return values


def apply_layers(
    config: Any, path: str | Path | None, overrides: list[dict] | None, renamed: Mapping[str, str] | None = None
) -> None:
    """Apply the TOML file at `path` (if any), then each override dict, in order, onto `config`; a key of `renamed`
    (old dotted key → new) is taken as its new key, with one line logged for each old key used."""
    renamed, warned = renamed or {}, set[str]()
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} not found")
        try:
            values = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: invalid TOML ({exc})") from exc
        apply_values(config, rename_keys(values, renamed, warned), "")
    for o in overrides or []:
        apply_values(config, rename_keys(copy.deepcopy(o), renamed, warned), "")
