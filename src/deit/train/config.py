"""Typed training configuration: dataclasses, YAML files and built-in presets, dotted ``key=value`` overrides.

A config is a tree of dataclasses. It is built from a preset name (a YAML file shipped in ``deit/configs``) or a
YAML path, then ``key=value`` overrides (``optim.lr=1e-3``, ``data.root=/data/in1k``) are applied, and every key
and value is checked at load: an unknown or misspelled key is an error naming that key and the nearest valid one,
a value of the wrong type is an error naming the key and the expected type.

A YAML file may start from another config with ``base: NAME_OR_PATH``; its keys then override the base's.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from deit.data.config import DataConfig

DISTILLATION_TYPES = ("none", "soft", "hard")
DISTILLATION_TOKENS = ("dist", "cls")
KL_NORMALISATIONS = ("batchmean", "batch_classes")
AMP_MODES = ("none", "bf16", "fp16")
OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("cosine", "constant")
DTYPES = ("float32", "bfloat16", "float16")


class ConfigError(ValueError):
    """A config problem: names the key, what is wrong, and the fix."""


@dataclass
class ModelConfig:
    name: str = "deit_tiny_distilled_patch16_224"
    # Input resolution; None: the model's own (or the data's, for convnets).
    img_size: int | None = None
    drop_path: float = 0.1
    # Start from these weights (fine-tuning): a checkpoint path in any layout deit reads, or a registered model
    # name whose official weights are used. Heads are re-initialised for another class count and pos_embed is
    # resampled for another resolution. Distillation is allowed while fine-tuning.
    finetune: str | None = None
    # Any other field of the model's architecture config (e.g. embed_dim, depth, num_heads, patch_size).
    args: dict[str, Any] = field(default_factory=dict)
    # Overrides of the model's preprocessing, stored in its checkpoints (crop_pct, mean, std, interpolation).
    preprocessing: dict[str, Any] = field(default_factory=dict)


@dataclass
class TeacherConfig:
    # A registered model name (e.g. regnety_160, resnet_digits); with checkpoint null and model set, the
    # official weights of that model are used (downloaded once, on rank 0).
    model: str | None = None
    # Weights: a checkpoint path in any layout deit reads (our safetensors, official, timm, ...). With model null,
    # it must be one of our checkpoints (they carry their architecture).
    checkpoint: str | None = None
    # The teacher's own dtype: float32, bfloat16 or float16 (float16 only on GPU).
    dtype: str = "float32"


@dataclass
class DistillationConfig:
    type: str = "none"  # none | soft | hard
    alpha: float = 0.5  # weight of the distillation term: (1 - alpha) * base + alpha * distillation
    tau: float = 1.0  # soft distillation temperature
    # Soft distillation: KL(teacher || student) at temperature tau, times tau^2, summed over classes and
    # "batchmean": averaged over the batch (Hinton's form, the default), or
    # "batch_classes": divided by batch x classes (the reference DeiT code; 1/classes of the former).
    kl_normalisation: str = "batchmean"
    # Which output gets the teacher term: "dist", the distillation token's head (a model with one), or "cls", the
    # class token of a model without one ("usual distillation": both terms on the single output).
    token: str = "dist"


@dataclass
class OptimConfig:
    name: str = "adamw"  # adamw | sgd
    lr: float = 5e-4  # base lr, for a total batch of lr_base_batch when scale_lr is on
    # lr = lr * total_batch / lr_base_batch, total_batch = data.batch_size x world size x accum_steps
    scale_lr: bool = True
    lr_base_batch: int = 512
    weight_decay: float = 0.05  # never applied to biases, norms, pos_embed, cls/dist tokens
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    momentum: float = 0.9  # sgd only
    nesterov: bool = True  # sgd only
    clip_grad: float | None = None  # max global gradient norm; null: no clipping
    accum_steps: int = 1  # gradient accumulation: micro-batches per optimizer step


@dataclass
class ScheduleConfig:
    name: str = "cosine"  # cosine | constant
    warmup_epochs: float = 5.0  # linear warmup from warmup_lr, stepped per iteration
    warmup_lr: float = 1e-6
    min_lr: float = 1e-5  # cosine floor


@dataclass
class EmaConfig:
    enabled: bool = False
    decay: float = 0.99996


@dataclass
class TrainConfig:
    name: str = "custom"
    epochs: int = 300
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: str = "none"  # none | bf16 (CPU and GPU) | fp16 (GPU only, with a grad scaler)
    output_dir: str | None = None  # default: runs/<name>
    log_every: int = 50  # a metrics line every N optimizer steps (0: per epoch only)
    save_every: int = 0  # training state every N optimizer steps (0: at each epoch end only)
    # Validate after every N-th epoch and always after the last one (0: after the last one only). On a small
    # training set validation can cost as much as the epoch itself; best.safetensors only sees validated epochs.
    eval_every: int = 1
    progress: bool = True  # tqdm progress bar on rank 0
    # torch intra-op threads per process; null: torch's default (torchrun sets OMP_NUM_THREADS=1 per process).
    # On a CPU shared with other busy processes, 1 is often faster than several spinning threads.
    threads: int | None = None
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    distillation: DistillationConfig = field(default_factory=DistillationConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    ema: EmaConfig = field(default_factory=EmaConfig)

    def validate(self) -> TrainConfig:
        """Value checks that need no model or data (those come at the start of training)."""
        checks = [
            ("distillation.type", self.distillation.type, DISTILLATION_TYPES),
            ("distillation.token", self.distillation.token, DISTILLATION_TOKENS),
            ("distillation.kl_normalisation", self.distillation.kl_normalisation, KL_NORMALISATIONS),
            ("amp", self.amp, AMP_MODES),
            ("optim.name", self.optim.name, OPTIMIZERS),
            ("schedule.name", self.schedule.name, SCHEDULES),
            ("teacher.dtype", self.teacher.dtype, DTYPES),
        ]
        for key, value, allowed in checks:
            if value not in allowed:
                raise ConfigError(f"{key}={value!r} is not one of {', '.join(allowed)}")
        for key, value, low in [
            ("epochs", self.epochs, 1),
            ("optim.accum_steps", self.optim.accum_steps, 1),
            ("optim.lr_base_batch", self.optim.lr_base_batch, 1),
            ("log_every", self.log_every, 0),
            ("save_every", self.save_every, 0),
            ("eval_every", self.eval_every, 0),
            ("threads", self.threads if self.threads is not None else 1, 1),
        ]:
            if value < low:
                raise ConfigError(f"{key} must be >= {low}, got {value}")
        if not 0.0 <= self.distillation.alpha <= 1.0:
            raise ConfigError(f"distillation.alpha must be in [0, 1], got {self.distillation.alpha}")
        if self.distillation.tau <= 0:
            raise ConfigError(f"distillation.tau must be > 0, got {self.distillation.tau}")
        if not 0.0 <= self.ema.decay < 1.0:
            raise ConfigError(f"ema.decay must be in [0, 1), got {self.ema.decay}")
        if len(self.optim.betas) != 2:
            raise ConfigError(f"optim.betas needs two values, got {self.optim.betas}")
        self._validate_model()
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ConfigError(f"device={self.device!r} is not one of auto, cpu, cuda, cuda:N")
        return self

    def _validate_model(self) -> None:
        from deit.models import Preprocessing, get_entry

        try:
            entry = get_entry(self.model.name)
        except ValueError as exc:
            raise ConfigError(f"model.name: {exc}") from None
        valid = [f.name for f in dataclasses.fields(entry.config)]
        for key in self.model.args:
            if key not in valid:
                raise _unknown_key(key, "model.args.", valid)
            dedicated = {"img_size": "model.img_size", "drop_path_rate": "model.drop_path",
                         "num_classes": "nothing (the class count comes from the data)"}
            if key in dedicated:
                raise ConfigError(f"model.args.{key}: set {dedicated[key]} instead")
        valid_pre = [f.name for f in dataclasses.fields(Preprocessing)]
        for key in self.model.preprocessing:
            if key not in valid_pre:
                raise _unknown_key(key, "model.preprocessing.", valid_pre)
        if self.teacher.model is not None:
            try:
                get_entry(self.teacher.model)
            except ValueError as exc:
                raise ConfigError(f"teacher.model: {exc}") from None

    def to_dict(self) -> dict:
        return to_dict(self)


# ------------------------------------------------------------------------------------------- (de)serialisation
def to_dict(obj: Any) -> Any:
    """A plain dict / list / scalar tree (YAML- and JSON-safe) of a dataclass config."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): to_dict(v) for k, v in obj.items()}
    return obj


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check (and gently convert: int -> float, str paths) a YAML value against a field type."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{key}={value!r}: expected {_type_name(tp)}")
    if tp is Any:
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}={value!r}: expected a list")
        (item_tp, *_) = typing.get_args(tp) or (Any,)
        out = [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}={value!r}: expected a mapping")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}={value!r}: expected true or false")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{key}={value!r}: expected an integer")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}={value!r}: expected a number")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key}={value!r}: expected a string")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping of {tp.__name__} fields, got {value!r}")
        return from_dict(tp, value, prefix=f"{key}.")
    return value


def _unknown_key(key: str, prefix: str, valid: list[str]) -> ConfigError:
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
            raise _unknown_key(str(key), prefix, valid)
        kwargs[key] = _coerce(value, hints[key], f"{prefix}{key}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"{prefix.rstrip('.') or cls.__name__}: {exc}") from exc


def _deep_merge(base: dict, top: dict) -> dict:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


# ------------------------------------------------------------------------------------------------------ presets
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
        if not path.is_file():
            raise FileNotFoundError(f"config file {key} does not exist")
        text = path.read_text()
    else:
        res = resources.files("deit") / "configs" / f"{key}.yaml"
        if not res.is_file():
            presets = list_presets()
            close = difflib.get_close_matches(key, presets, n=1, cutoff=0.5)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"unknown config {key!r}{hint} (a YAML path, or a preset: {', '.join(presets)})")
        text = res.read_text()
    raw = yaml.safe_load(text) or {}
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
        merged = _deep_merge(merged, _read_yaml(base, seen))
    return _deep_merge(merged, raw)


def parse_override(item: str) -> tuple[list[str], Any]:
    """``a.b.c=value`` -> (["a", "b", "c"], value); the value is read as YAML (numbers, bools, null, lists)."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like key=value (e.g. optim.lr=1e-3)")
    key, _, text = item.partition("=")
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {item!r} has an empty key")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text
    return key.split("."), value


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Set dotted keys in a raw config dict. Unknown keys are caught by :func:`from_dict` afterwards."""
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


def _check_paths(cls: type, raw: dict, prefix: str = "") -> None:
    """Unknown keys at any depth, named with their full dotted path (before any value is converted)."""
    hints = typing.get_type_hints(cls)
    valid = [f.name for f in dataclasses.fields(cls) if f.init]
    for key, value in raw.items():
        if key not in valid:
            raise _unknown_key(str(key), prefix, valid)
        if dataclasses.is_dataclass(hints[key]) and isinstance(value, dict):
            _check_paths(hints[key], value, f"{prefix}{key}.")


def load_config(config: str | Path | dict | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """A validated :class:`TrainConfig` from a preset name, a YAML path or a dict, plus ``key=value`` overrides."""
    if config is None:
        raw: dict = {}
    elif isinstance(config, dict):
        raw = _merge_bases(config, None)
    else:
        raw = _read_yaml(config)
    raw = apply_overrides(raw, list(overrides or []))
    _check_paths(TrainConfig, raw)
    return from_dict(TrainConfig, raw).validate()


def dump_config(cfg: TrainConfig) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


__all__ = [
    "AMP_MODES",
    "DISTILLATION_TYPES",
    "ConfigError",
    "DistillationConfig",
    "EmaConfig",
    "ModelConfig",
    "OptimConfig",
    "ScheduleConfig",
    "TeacherConfig",
    "TrainConfig",
    "dump_config",
    "from_dict",
    "list_presets",
    "load_config",
    "to_dict",
]
