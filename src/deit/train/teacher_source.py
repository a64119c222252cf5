"""Where a run's teacher outputs come from: the live teacher, or a teacher-output cache
(``distillation.teacher_cache``), which the run reads without loading the teacher, or fills on the fly.

- The cache directory does not exist yet: the live teacher computes every output and the run writes them into it.
- It exists, for this run's stream (anything else is refused, naming the keys): parts the run needs are read; if
  some are missing (an interrupted first run, fewer epochs than this run) the live teacher computes those and they
  are added — or, with no teacher configured, the run stops at start naming how to build them.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from deit.checkpoints import create_model, load_model
from deit.checkpoints.pretrained import sha256_of
from deit.inference.teacher import InputAdapter, Teacher
from deit.models import Preprocessing
from deit.runtime.distributed import DistEnv, barrier, on_main, weights_digest
from deit.train.config import ConfigError, TrainConfig
from deit.train.presets import preset_writing
from deit.train.teacher_cache import (
    CachedTeacher,
    CacheMeta,
    check_compatible,
    missing_epochs,
    read_meta,
    stream_key,
    write_meta,
)

MANY_CLASSES = 100  # above this, a soft cache filled on the fly keeps the top-k logits, not all of them
TOP_K = 10


def teacher_configured(cfg: TrainConfig, module: nn.Module | None = None) -> bool:
    return module is not None or bool(cfg.teacher.model or cfg.teacher.checkpoint)


def check_teacher_checkpoint(cfg: TrainConfig) -> None:
    """A distilling config's ``teacher.checkpoint`` exists; else one line saying it is the teacher and how to make
    it (the preset whose run writes that file, when there is one)."""
    path = cfg.teacher.checkpoint
    if cfg.distillation.type == "none" or not path or Path(path).exists():
        return
    preset = preset_writing(path)
    make = (f"train the teacher first: `deit train --config {preset}` writes it" if preset else
            "train a teacher first (`deit train --config PRESET`, a convnet teacher preset of `deit train --list`) "
            "and set teacher.checkpoint=RUN_DIR/best.safetensors")
    raise FileNotFoundError(f"teacher.checkpoint {path} does not exist: it is the teacher checkpoint the student is "
                            f"distilled from; {make}, or set teacher.checkpoint=PATH to a teacher you have")


def teacher_identity(cfg: TrainConfig, module: nn.Module | None = None) -> dict:
    """What says which teacher computed a cache: its weights' digest (file or module) and its dtype."""
    tc = cfg.teacher
    if module is not None:
        weights = f"module:{weights_digest(module)[:16]}"
    elif tc.checkpoint:
        check_teacher_checkpoint(cfg)
        weights = f"sha256:{sha256_of(tc.checkpoint)[:16]}"
    else:
        weights = f"release:{tc.model}"
    return {"model": tc.model, "weights": weights, "dtype": tc.dtype}


def build_teacher(cfg: TrainConfig) -> nn.Module:
    """The teacher module of ``cfg.teacher``. Release weights are downloaded once (rank 0 of each node; the other
    ranks wait for it) and checked against their hash."""
    tc = cfg.teacher
    if tc.checkpoint:
        check_teacher_checkpoint(cfg)
        return load_model(tc.checkpoint, tc.model)
    return create_model(tc.model, pretrained=True)


def live_teacher(cfg: TrainConfig, module: nn.Module | None, preprocessing: Preprocessing,
                 device: torch.device) -> Teacher | None:
    """The frozen teacher (the configured one, or ``module``), converting the student's batches to its own
    preprocessing when its checkpoint records another one."""
    if module is None and not teacher_configured(cfg):
        return None
    module = (module if module is not None else build_teacher(cfg)).to(device)
    own = getattr(module, "preprocessing", None)
    adapter = InputAdapter(preprocessing, own) if isinstance(own, Preprocessing) else None
    return Teacher(module, cfg.teacher.dtype, adapter)


def _new_meta(cfg: TrainConfig, key: dict, num_classes: int, batches: int, teacher_dtype: str) -> CacheMeta:
    soft = cfg.distillation.type == "soft"
    outputs = ("topk" if num_classes > MANY_CLASSES else "logits") if soft else "argmax"
    return CacheMeta(key=key, outputs=outputs, storage=cache_storage(teacher_dtype, num_classes),
                     num_classes=num_classes, epochs=cfg.epochs, ranks=key["world_size"],
                     batch_size=cfg.data.batch_size, batches=batches, teacher_batch_size=cfg.data.batch_size,
                     filled_by="run", top_k=TOP_K if outputs == "topk" else 0)


def cache_storage(teacher_dtype: str, num_classes: int) -> str:
    """The storage of logits: the teacher's own 16-bit dtype (exact), else float32 for up to MANY_CLASSES classes
    (exact) and float16 above."""
    if teacher_dtype in ("bfloat16", "float16"):
        return teacher_dtype
    return "float32" if num_classes <= MANY_CLASSES else "float16"


def _open_cache(cfg: TrainConfig, env: DistEnv, key: dict, num_classes: int, batches: int, has_teacher: bool
                ) -> tuple[CacheMeta, list[int]]:
    """(the cache's description, the epochs it lacks), created on rank 0 when new; every rank gets the same."""
    root = Path(cfg.distillation.teacher_cache)
    meta = on_main(env, lambda: read_meta(root))
    if meta is None:
        if not has_teacher:
            raise ConfigError(f"distillation.teacher_cache={root} does not exist and no teacher is configured to fill "
                              "it: build it with `deit teacher-cache build --config ... --output DIR`, or set "
                              "teacher.checkpoint so that this run fills it on the fly")
        meta = _new_meta(cfg, key, num_classes, batches, cfg.teacher.dtype)
        if env.is_main:
            write_meta(root, meta)
        barrier(env)
        return meta, list(range(cfg.epochs))
    compare = key if has_teacher else {**key, "teacher": meta.key.get("teacher")}
    check_compatible(root, meta, compare, cfg.distillation.type)
    missing = on_main(env, lambda: missing_epochs(root, meta, cfg.epochs))
    if missing and not has_teacher:
        have = cfg.epochs - len(missing)
        raise ConfigError(f"teacher cache {root} has {have} of the {cfg.epochs} epochs this run needs (missing: "
                          f"{_ranges(missing)}): complete it with `deit teacher-cache build --config ... "
                          f"epochs={cfg.epochs} --output {root}` (it resumes), or set teacher.checkpoint so that this "
                          "run computes and adds them")
    if env.is_main and cfg.epochs > meta.epochs:
        write_meta(root, replace(meta, epochs=cfg.epochs))
    return meta, missing


def _ranges(epochs: list[int]) -> str:
    """0-based epoch indices as the 1-based ranges a person reads: [2, 3, 5] -> ``3-4, 6``."""
    epochs = [e + 1 for e in epochs]
    spans, start = [], None
    for i, e in enumerate(epochs):
        start = e if start is None else start
        if i + 1 == len(epochs) or epochs[i + 1] != e + 1:
            spans.append(f"{start}" if start == e else f"{start}-{e}")
            start = None
    return ", ".join(spans)


def build_teacher_source(cfg: TrainConfig, env: DistEnv, preprocessing: Preprocessing, data, module=None):
    """(the teacher source the trainer calls, the live Teacher or None, lines worth printing at start)."""
    if cfg.distillation.type == "none":
        return None, None, []
    if not cfg.distillation.teacher_cache:
        live = live_teacher(cfg, module, preprocessing, env.device)
        return live, live, []
    has_teacher = teacher_configured(cfg, module)
    teacher_id = teacher_identity(cfg, module) if has_teacher else None
    key = stream_key(cfg, preprocessing, env.world_size, data.train_set.fingerprint(), teacher_id)
    root = Path(cfg.distillation.teacher_cache)
    meta, missing = _open_cache(cfg, env, key, len(data.classes), len(data.train_loader), has_teacher)
    if not missing:
        note = (f"teacher outputs: read from the cache {root} ({meta.outputs}, {meta.epochs} epochs); the teacher is "
                "not loaded")
        return CachedTeacher(root, meta, env.rank), None, [note]
    live = live_teacher(cfg, module, preprocessing, env.device)
    note = (f"teacher outputs: epochs {_ranges(missing)} computed by the teacher and written to the cache {root} "
            f"({meta.outputs}); the others read from it")
    return CachedTeacher(root, meta, env.rank, live), live, [note]


__all__ = ["build_teacher", "build_teacher_source", "cache_storage", "check_teacher_checkpoint", "live_teacher",
           "teacher_configured", "teacher_identity"]
