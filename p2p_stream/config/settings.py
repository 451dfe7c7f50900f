"""Settings: each one declared once — default, range or choices, unit, help, flag — and everything else derived.

A config section is a dataclass whose fields are made by `setting(...)`:

    window_s: float = setting(10.0, "window length", unit="s", range=(2, 120), flag="--window-s")

From these declarations come the per-setting checks (`check_settings`: type, range, choices, a rule in words),
the TOML defaults file (`defaults_toml`, help and unit as comments), the CLI flags and their `--help`
(`add_flags`, `flag_values`). Rules across settings (hop ≤ window, min ≤ max replicas…) stay explicit checks in
the module that declares them. The layers that fill a config (defaults → TOML → flags) are in layers.py.
"""

from __future__ import annotations

import argparse
import copy
import difflib
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import MISSING, Field, dataclass, field, fields, is_dataclass
from typing import Any, NoReturn

from p2p_stream.errors import ConfigError

SPEC = "p2p_setting"  # the key of a field's metadata that holds its `Spec`
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Range:
    """Accepted values lo…hi, ends included unless open; None = unbounded on that side."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def __contains__(self, v: float) -> bool:
        above = self.lo is None or (v > self.lo if self.lo_open else v >= self.lo)
        below = self.hi is None or (v < self.hi if self.hi_open else v <= self.hi)
        return above and below

    def rule(self, kind: type | None = None) -> str:
        """As an error says it, the ends as `kind` (2 → 2.0 for a float setting): 'within [1, 4096]', '≥ 2',
        'in (0, 0.5)'."""
        lo, hi = (e if e is None or kind is None else kind(e) for e in (self.lo, self.hi))
        if hi is None:
            return f"{'>' if self.lo_open else '≥'} {lo}"
        if lo is None:
            return f"{'<' if self.hi_open else '≤'} {hi}"
        word = "within" if not (self.lo_open or self.hi_open) else "in"
        return f"{word} {'(' if self.lo_open else '['}{lo}, {hi}{')' if self.hi_open else ']'}"

    def text(self) -> str:
        """As help says it, the ends as declared: '2–120', '≥ 2', '(0, 0.5)'."""
        if self.lo is not None and self.hi is not None and not (self.lo_open or self.hi_open):
            return f"{self.lo}–{self.hi}"
        return self.rule().removeprefix("in ")


@dataclass(frozen=True)
class Spec:
    """What a setting is, besides its default (which the dataclass field holds)."""

    help: str
    unit: str = ""  # s, ms, Hz… shown in help and the TOML comment
    range: Range | None = None  # numbers only
    choices: tuple[str, ...] = ()  # strings only
    fold_case: bool = False  # choices compared ignoring case (log levels)
    rule: Callable[[Any], bool] | None = None  # a per-setting rule neither range nor choices can say…
    expect: str = ""  # …and what it accepts, in words: "{key} must be {expect}, got {value!r}"
    flag: str = ""  # the named CLI flag, e.g. "--window-s"; "" = only through --set key=value
    aliases: tuple[str, ...] = ()  # other names of the flag, shown in --help
    metavar: str = ""  # the flag's value in --help; derived from the unit and type when ""
    deprecated: tuple[str, ...] = ()  # older flag names still accepted, kept out of --help; each use logs a line

    def describe(self, kind: type) -> str:
        """'window length (s), 2–120': help, unit, and what is accepted."""
        text = self.help + (f" ({self.unit})" if self.unit else "")
        if self.choices and not all(c in self.help for c in self.choices):  # unless the help names them all
            text += f"; one of {', '.join(self.choices)}"
        elif self.expect and self.expect not in self.help:
            text += f"; {self.expect}"
        if self.range:
            text += f", {self.range.text()}"
        return text


def setting(
    default: Any,
    help: str,
    *,
    unit: str = "",
    range: tuple[float | None, float | None] | Range | None = None,
    choices: tuple[str, ...] = (),
    fold_case: bool = False,
    rule: Callable[[Any], bool] | None = None,
    expect: str = "",
    flag: str = "",
    aliases: tuple[str, ...] = (),
    metavar: str = "",
    deprecated: tuple[str, ...] = (),
) -> Any:
    """A dataclass field declaring one setting: its default and everything the checks, TOML and flags need."""
    if isinstance(range, tuple):
        range = Range(*range)
    if rule is not None and not expect:
        raise TypeError("a setting with a rule says what it expects (expect=...)")
    if range is not None and (isinstance(default, bool) or not isinstance(default, int | float)):
        raise TypeError(f"range is for numbers, not {default!r}")
    if choices and not isinstance(default, str):
        raise TypeError(f"choices are for strings, not {default!r}")
    spec = Spec(
        help, unit, range, tuple(choices), fold_case, rule, expect, flag, tuple(aliases), metavar, tuple(deprecated)
    )
    if isinstance(default, list | dict):
        return field(default_factory=lambda: copy.deepcopy(default), metadata={SPEC: spec})
    return field(default=default, metadata={SPEC: spec})


@dataclass(frozen=True)
class Declared:
    """One setting as found by `declared`: its dotted key, declaration, default and type."""

    key: str  # "windowing.window_s"
    spec: Spec
    default: Any
    kind: type  # the default's type: int, float, bool, str, list, dict


def _default(f: Field) -> Any:
    return f.default_factory() if f.default_factory is not MISSING else f.default


def declared(config: Any, prefix: str = "") -> Iterator[Declared]:
    """Every setting of a config class (or instance), sections recursed, in declaration order."""
    for f in fields(config):
        default = _default(f)
        if is_dataclass(default):
            yield from declared(type(default), f"{prefix}{f.name}.")
        elif SPEC in f.metadata:
            yield Declared(f"{prefix}{f.name}", f.metadata[SPEC], default, type(default))
        else:
            raise TypeError(f"{prefix}{f.name} is not declared with setting(...)")


def value_at(config: Any, key: str) -> Any:
    for name in key.split("."):
        config = getattr(config, name)
    return config


def check_settings(config: Any) -> None:
    """Refuse a value outside its setting's range, choices or rule; the message says what would be right."""
    for d in declared(config):
        value, spec = value_at(config, d.key), d.spec
        if spec.range and value not in spec.range:
            raise ConfigError(f"{d.key} must be {spec.range.rule(d.kind)}, got {value}")
        if spec.choices:
            folded = value.upper() if spec.fold_case else value
            if folded not in spec.choices:
                raise ConfigError(f"{d.key} must be one of {spec.choices}, got {value!r}")
        if spec.rule and not spec.rule(value):
            raise ConfigError(f"{d.key} must be {spec.expect}, got {value!r}")


# --- the TOML defaults file ------------------------------------------------------------------------------------


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | list):
        return json.dumps(value, ensure_ascii=False)  # JSON strings and lists of strings are TOML
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }" if value else "{}"
    raise TypeError(f"no TOML form for {value!r}")


def _section_doc(cls: type) -> str:
    doc = cls.__doc__ or ""
    return "" if doc.startswith(f"{cls.__name__}(") else doc.strip()  # dataclass's made-up doc is no help


def defaults_toml(config_cls: type, header: str) -> str:
    """The TOML file of every setting at its default, each with its help, unit, range and flag as a comment."""
    lines = [f"# {line}".rstrip() for line in header.strip().splitlines()]
    for f in fields(config_cls):
        section = _default(f)
        lines += ["", *(f"# {line}" for line in _section_doc(type(section)).splitlines()), f"[{f.name}]"]
        for d in declared(type(section)):
            comment = d.spec.describe(d.kind)
            if d.spec.flag:
                comment += f"; flag {d.spec.flag}"
            lines.append(f"{f'{d.key} = {toml_value(d.default)}':<32} # {comment}")
    return "\n".join(lines) + "\n"


# --- CLI flags -------------------------------------------------------------------------------------------------

_METAVARS = {"s": "S", "ms": "MS", "Hz": "HZ"}


def _metavar(d: Declared) -> str:
    if d.spec.metavar:
        return d.spec.metavar
    if d.spec.choices:
        return "{" + ",".join(d.spec.choices) + "}"
    if d.spec.unit in _METAVARS:
        return _METAVARS[d.spec.unit]
    return {int: "N", float: "X", bool: "true|false"}.get(d.kind, "TEXT")


def flag_help(d: Declared) -> str:
    """'window length (s), 2–120 [10.0]'; argparse's own % escaped."""
    default = "''" if d.default == "" else d.default
    return f"{d.spec.describe(d.kind)} [{default}]".replace("%", "%%")


class DeprecatedFlag(argparse.Action):
    """An old flag name that still sets what the new one (`new`) does, logging '--old is deprecated; use --new'."""

    def __init__(self, option_strings: list[str], dest: str, new: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, **kwargs)
        self.new = new

    def __call__(self, parser: Any, namespace: argparse.Namespace, values: Any, option: str | None = None) -> None:
        log.warning("%s is deprecated; use %s", option, self.new)
        setattr(namespace, self.dest, values)


def add_flags(parser: argparse.ArgumentParser | argparse._ArgumentGroup, config_cls: type) -> None:
    """One flag per setting that declares one (and its deprecated names, out of --help). Values stay text here: the
    layers check them like a TOML value, so a bad flag gets the same one-line message, naming the key."""
    for d in declared(config_cls):
        if d.spec.flag:
            parser.add_argument(
                d.spec.flag, *d.spec.aliases, dest=d.key, default=None, metavar=_metavar(d), help=flag_help(d)
            )
            for old in d.spec.deprecated:
                parser.add_argument(
                    old, action=DeprecatedFlag, new=d.spec.flag, dest=d.key, default=None, help=argparse.SUPPRESS
                )


def flag_values(args: argparse.Namespace, config_cls: type) -> dict:
    """The flags given on the command line as a nested override dict: {"windowing": {"window_s": "5"}}."""
    out: dict = {}
    for d in declared(config_cls):
        value = getattr(args, d.key, None) if d.spec.flag else None
        if value is not None:
            *sections, name = d.key.split(".")
            node = out
            for s in sections:
                node = node.setdefault(s, {})
            node[name] = value
    return out


class FlagParser(argparse.ArgumentParser):
    """argparse whose mistakes are a ConfigError, so the command's one handler prints them as one line (exit 2);
    an unknown flag gets the nearest known one as a hint. Abbreviated flags are not accepted."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, allow_abbrev=False, **kwargs)

    def error(self, message: str) -> NoReturn:
        raise ConfigError(f"{message} ({self.prog} --help lists the flags)")

    def parse_args(self, args: Any = None, namespace: Any = None) -> argparse.Namespace:  # type: ignore[override]
        parsed, extra = self.parse_known_args(args, namespace)
        if extra:
            word = extra[0].split("=", 1)[0]
            known = sorted(s for a in self._actions if a.help != argparse.SUPPRESS for s in a.option_strings)
            near = difflib.get_close_matches(word, known, n=1) if word.startswith("-") else []
            kind = "flag" if word.startswith("-") else "argument"
            self.error(f"unknown {kind} {extra[0]}" + (f"; did you mean {near[0]}?" if near else ""))
        return parsed
