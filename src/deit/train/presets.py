"""Configs from presets and YAML files: ``load_config(NAME_OR_PATH, ["key=value", ...])`` -> a checked
:class:`~deit.train.config.TrainConfig`.

A preset is a YAML file shipped in ``deit/configs`` (files starting with ``_`` are shared bases, not presets). A
YAML file may start from another config with ``base: NAME_OR_PATH`` (or a list of them); its keys then override
the base's. Dotted overrides (``optim.lr=1e-3``, ``data.root=/data/in1k``) come last, and every key and value is
checked at load (``deit.runtime.typedconfig``).
"""

from __future__ import annotations

import difflib
import os
from importlib import resources
from pathlib import Path

import yaml

from deit.runtime.typedconfig import (
    ConfigError,
    apply_overrides,
    check_keys,
    deep_merge,
    from_dict,
    read_yaml,
    read_yaml_file,
    to_dict,
)
from deit.train.config import TrainConfig, default_output_dir


def list_presets() -> list[str]:
    root = resources.files("deit") / "configs"
    # Files starting with "_" are shared bases, not presets.
    return sorted(p.name[: -len(".yaml")] for p in root.iterdir() if p.name.endswith(".yaml") and p.name[0] != "_")


def _read_yaml(name_or_path: str | Path, seen: tuple[str, ...] = ()) -> dict:
    """The raw dict of a preset name or YAML path, with its ``base`` chain merged in."""
    key = str(name_or_path)
    if key in seen:
        raise ConfigError(f"config base chain loops: {' -> '.join((*seen, key))}")
    path = Path(key)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.exists():
            raise FileNotFoundError(f"config file {key} does not exist")
        if path.is_dir() and any((path / n).is_file() for n in ("config.yaml", "state.pt")):
            raise ConfigError(f"{key} is a run directory, not a config: continue it with `deit train --resume {key}`, "
                              f"or start from its config with --config {path / 'config.yaml'}")
        raw = read_yaml_file(path)
        if raw is None:  # an empty file (or only comments): a truncated write, not a wish for every default
            raise ConfigError(f"config file {key} is empty: give it keys (e.g. `base: deit-tiny_pt-4xb256_in1k`), "
                              "or pass a preset name (see `deit train --list`)")
    else:
        res = resources.files("deit") / "configs" / f"{key}.yaml"
        if not res.is_file():
            presets = list_presets()
            close = difflib.get_close_matches(key, presets, n=1, cutoff=0.5)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"unknown config {key!r}{hint} (a YAML path, or a preset: {', '.join(presets)})")
        raw = read_yaml(res.read_text(), f"preset {key}")
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise ConfigError(f"config {key} must be a mapping of keys to values")
    return _merge_bases(raw, path.parent if path.suffix in (".yaml", ".yml") else None, (*seen, key))


def _merge_bases(raw: dict, folder: Path | None, seen: tuple[str, ...] = ()) -> dict:
    """Resolve ``base: NAME`` or ``base: [NAME, ...]`` (merged in order, then ``raw`` on top)."""
    raw = dict(raw)
    bases = raw.pop("base", None)
    if bases is None:
        return raw
    merged: dict = {}
    for base in bases if isinstance(bases, list) else [bases]:
        base = str(base)
        if folder is not None and not Path(base).is_absolute() and (folder / base).exists():
            base = str(folder / base)
        merged = deep_merge(merged, _read_yaml(base, seen))
    return deep_merge(merged, raw)


def load_config(config: str | Path | dict | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """A validated :class:`TrainConfig` from a preset name, a YAML path or a dict, plus ``key=value`` overrides."""
    if config is None:
        raw: dict = {}
    elif isinstance(config, dict):
        raw = _merge_bases(config, None)
    else:
        raw = _read_yaml(config)
    raw = apply_overrides(raw, list(overrides or []))
    check_keys(TrainConfig, raw)
    return from_dict(TrainConfig, raw).validate()


def load_run_config(run_dir: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    """The config a run directory was made with (its ``config.yaml``), plus ``key=value`` overrides."""
    run_dir = Path(run_dir)
    saved = run_dir / "config.yaml"
    if not saved.is_file():
        raise FileNotFoundError(f"{run_dir} is not a run directory (no config.yaml); nothing to resume")
    return load_config(saved, [*(overrides or []), f"output_dir={run_dir}"])


def preset_writing(path: str | Path) -> str | None:
    """The preset whose run writes the file ``path`` (e.g. ``runs/NAME/best.safetensors``) by default, or None."""
    folder = os.path.normpath(Path(path).parent)
    for name in list_presets():
        if os.path.normpath(default_output_dir(load_config(name))) == folder:
            return name
    return None


def dump_config(cfg: TrainConfig) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


__all__ = ["dump_config", "list_presets", "load_config", "load_run_config", "preset_writing"]
