"""Typed configuration trees: dataclasses built from nested dicts (YAML) and dotted ``key=value`` overrides, with
every key and value checked.

An unknown or misspelled key is an error naming that key and the nearest valid one; a value of the wrong type is
an error naming the key and the expected type; a value outside a ``Literal[...]`` field's choices is an error
listing them. Knows nothing of deit: the training config (``deit.train.config``) and the data settings of the
command line (``deit.data.formats``) are both read through it.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A config problem: names the key, what is wrong, and the fix."""


def to_dict(obj: Any) -> Any:
    """A plain dict / list / scalar tree (YAML- and JSON-safe) of a dataclass config."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): to_dict(v) for k, v in obj.items()}
    return obj


_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string", type(None): "null"}


def _type_name(tp: Any) -> str:
    """How a value of type ``tp`` is written in YAML, for error messages."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(arm) for arm in typing.get_args(tp))
    if origin is typing.Literal:
        return " or ".join(str(c) for c in typing.get_args(tp))
    if origin in (list, tuple):
        return "a list"
    return _NAMES.get(tp) or getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _number(value: Any, key: str) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
        try:
            return float(value)
        except ValueError:
            pass
    raise ConfigError(f"{key}={value!r}: expected a number")


def _integer(value: Any, key: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise ConfigError(f"{key}={value!r}: expected an integer")


def _string(value: Any, key: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise ConfigError(f"{key}={value!r}: expected a string")


def _boolean(value: Any, key: str) -> bool:
    if isinstance(value, bool):
        return value
    raise ConfigError(f"{key}={value!r}: expected true or false")


_SCALARS = {bool: _boolean, int: _integer, float: _number, str: _string}


def _union(value: Any, tp: Any, key: str) -> Any:
    args = typing.get_args(tp)
    if value is None and type(None) in args:
        return None
    for arg in args:
        if arg is type(None):
            continue
        try:
            return coerce(value, arg, key)
        except ConfigError:
            continue
    raise ConfigError(f"{key}={value!r}: expected {_type_name(tp)}")


def _literal(value: Any, tp: Any, key: str) -> Any:
    choices = typing.get_args(tp)
    if value not in choices:
        raise ConfigError(f"{key}={value!r} is not one of {', '.join(str(c) for c in choices)}")
    return value


def _sequence(value: Any, tp: Any, key: str) -> Any:
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{key}={value!r}: expected a list")
    (item_tp, *_) = typing.get_args(tp) or (Any,)
    out = [coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    return tuple(out) if (typing.get_origin(tp) or tp) is tuple else out


def coerce(value: Any, tp: Any, key: str) -> Any:
    """Check (and gently convert: int -> float, numbers -> str) a YAML value against a field type."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return _union(value, tp, key)
    if origin is typing.Literal:
        return _literal(value, tp, key)
    if origin in (list, tuple) or tp in (list, tuple):
        return _sequence(value, tp, key)
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}={value!r}: expected a mapping")
        return dict(value)
    if tp in _SCALARS:
        return _SCALARS[tp](value, key)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping of {tp.__name__} fields, got {value!r}")
        return from_dict(tp, value, prefix=f"{key}.")
    return value


def unknown_key(key: str, prefix: str, valid: list[str]) -> ConfigError:
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    hint = f"; did you mean '{prefix}{close[0]}'?" if close else ""
    return ConfigError(f"unknown config key '{prefix}{key}'{hint} (valid keys here: {', '.join(valid)})")


def from_dict(cls: type, data: dict, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a nested dict, checking every key and value."""
    hints = typing.get_type_hints(cls)
    valid = [f.name for f in dataclasses.fields(cls) if f.init]
    kwargs = {}
    for key, value in data.items():
        if key not in valid:
            raise unknown_key(str(key), prefix, valid)
        kwargs[key] = coerce(value, hints[key], f"{prefix}{key}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"{prefix.rstrip('.') or cls.__name__}: {exc}") from exc


def check_keys(cls: type, raw: dict, prefix: str = "") -> None:
    """Unknown keys at any depth, named with their full dotted path (before any value is converted)."""
    hints = typing.get_type_hints(cls)
    valid = [f.name for f in dataclasses.fields(cls) if f.init]
    for key, value in raw.items():
        if key not in valid:
            raise unknown_key(str(key), prefix, valid)
        if dataclasses.is_dataclass(hints[key]) and isinstance(value, dict):
            check_keys(hints[key], value, f"{prefix}{key}.")


def deep_merge(base: dict, top: dict) -> dict:
    """``base`` with ``top``'s keys on top; nested mappings are merged, not replaced."""
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for k, v in tree.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: tree}


def dict_differences(before: dict, after: dict, ignored: tuple[str, ...] = ()) -> list[str]:
    """``key: before -> after`` for every dotted key whose value differs (keys under ``ignored`` skipped)."""
    a, b = flatten(before), flatten(after)
    keys = sorted(k for k in set(a) | set(b) if not any(k == i or k.startswith(i + ".") for i in ignored))
    return [f"{k}: {a.get(k, '<unset>')!r} -> {b.get(k, '<unset>')!r}" for k in keys if a.get(k) != b.get(k)]


def _where(mark: Any) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}"


def read_yaml(text: str, source: str) -> Any:
    """``yaml.safe_load(text)``; a syntax error is a ConfigError naming ``source`` (a file, an override), the line
    and the column, and what YAML expected there."""
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        parts = [f"{text} at {_where(mark)}" if mark else text
                 for text, mark in ((exc.context, exc.context_mark), (exc.problem, exc.problem_mark)) if text]
        fix = ("indent with spaces: YAML does not allow tabs" if "'\\t'" in str(exc.problem) else
               "fix the YAML there (a value holding ': ', '#', '[' or '{' needs quotes)")
        raise ConfigError(f"{source}: YAML syntax error: {', '.join(parts) or type(exc).__name__}; {fix}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML ({' '.join(str(exc).split())}); fix the file") from None
    except RecursionError:  # brackets nested a thousand deep
        raise ConfigError(f"{source}: YAML nested too deeply to read; fix the file") from None
    except ValueError as exc:  # a date like 2024-02-30
        raise ConfigError(f"{source}: YAML value that cannot be read ({exc}); quote it or fix it") from None


def read_yaml_file(path: str | os.PathLike, source: str | None = None) -> Any:
    """The YAML content of a user's file, every failure a ConfigError or FileNotFoundError naming the file."""
    source = source or f"config file {os.fspath(path)}"
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{source} is not UTF-8 text (is it a YAML file?); pass a YAML config") from None
    except IsADirectoryError:
        raise ConfigError(f"{source} is a directory; pass a YAML file") from None
    return read_yaml(text, source)


def parse_override(item: str) -> tuple[list[str], Any]:
    """``a.b.c=value`` -> (["a", "b", "c"], value); the value is read as YAML (numbers, bools, null, lists)."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like key=value (e.g. optim.lr=1e-3)")
    key, _, text = item.partition("=")
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {item!r} has an empty key")
    try:
        value = read_yaml(text, f"override {item!r}") if text.strip() else None
    except ConfigError:
        value = text  # not YAML: the text itself (the field's type check then names the key if it is wrong)
    return key.split("."), value


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Set dotted keys in a raw config dict. Unknown keys are caught by :func:`check_keys` afterwards."""
    raw = dict(raw)
    for item in overrides:
        parts, value = parse_override(item)
        node = raw
        for part in parts[:-1]:
            child = node.get(part)
            child = dict(child) if isinstance(child, dict) else {}
            node[part] = child
            node = child
        node[parts[-1]] = value
    return raw


# ------------------------------------------------------------------------------------ facts about config fields
# What a field does beyond its value, declared once on the field (``dataclasses.field(metadata=...)``, through
# :func:`setting`) and read by whoever needs it, so a new field states its facts where it is written:
#   resumable: may differ between a run and its continuation (it changes nothing that is computed);
#   stream: changes the data a run's networks see (its images, their order, augmentation, mixing).
FACT_DEFAULTS: dict[str, bool] = {"resumable": False, "stream": True}


def setting(default: Any = dataclasses.MISSING, *, default_factory: Any = dataclasses.MISSING, **facts: bool) -> Any:
    """A dataclass field with facts (``resumable=True``, ``stream=False``) besides its default."""
    unknown = set(facts) - set(FACT_DEFAULTS)
    if unknown:
        raise TypeError(f"unknown config field fact(s) {sorted(unknown)}; known: {sorted(FACT_DEFAULTS)}")
    return dataclasses.field(default=default, default_factory=default_factory, metadata=facts)


def fact(f: dataclasses.Field, name: str) -> bool:
    return bool(f.metadata.get(name, FACT_DEFAULTS[name]))


def keys_where(cls: type, name: str, value: bool, prefix: str = "") -> tuple[str, ...]:
    """The dotted keys of config class ``cls`` whose fact ``name`` is ``value``. A nested config whose own field
    declares it stands for its whole subtree; otherwise its fields are asked one by one."""
    hints = typing.get_type_hints(cls)
    keys: list[str] = []
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        if name in f.metadata or not dataclasses.is_dataclass(hints[f.name]):
            if fact(f, name) == value:
                keys.append(key)
        else:
            keys.extend(keys_where(hints[f.name], name, value, f"{key}."))
    return tuple(keys)


__all__ = [
    "FACT_DEFAULTS",
    "ConfigError",
    "apply_overrides",
    "check_keys",
    "coerce",
    "deep_merge",
    "dict_differences",
    "fact",
    "flatten",
    "from_dict",
    "keys_where",
    "parse_override",
    "read_yaml",
    "read_yaml_file",
    "setting",
    "to_dict",
    "unknown_key",
]
