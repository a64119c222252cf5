"""``deit teacher-cache build``: run a config's data stream through its teacher once and store the outputs.

The stream is replayed exactly as training draws it (the same loader per student rank, viewed and passed to the
teacher by the same task object as training, ``deit.train.task.TrainTask``), so a run reading the cache sees what
the live teacher would have computed. The teacher runs at
its own batch size (whole micro-batches) and dtype; with the run's per-device batch and dtype the outputs are
identical to the live teacher's. Under torchrun the builder's ranks split the epochs; a stopped build resumes at
the first missing part.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from deit.data import build_dataset, build_device_augment, build_loader, build_mixup
from deit.models import Preprocessing, get_entry
from deit.runtime.distributed import DistEnv, barrier, cleanup, init_distributed, on_main
from deit.train.components import follow_data_root, resolve_precision
from deit.train.config import ConfigError, TrainConfig
from deit.train.loss import DistillationObjective
from deit.train.task import TrainTask
from deit.train.teacher_cache import (
    OUTPUTS,
    CacheMeta,
    encode,
    format_bytes,
    part_state,
    read_meta,
    stream_key,
    write_meta,
    write_part,
)
from deit.train.teacher_source import (
    MANY_CLASSES,
    TOP_K,
    cache_storage,
    check_teacher_checkpoint,
    live_teacher,
    teacher_identity,
)


@dataclass(frozen=True)
class BuildOptions:
    outputs: str = "auto"  # auto (argmax for hard distillation; logits, or topk above MANY_CLASSES, for soft)
    top_k: int = TOP_K
    storage: str = "auto"  # auto | bfloat16 | float16 | float32
    batch_size: int | None = None  # the teacher's batch; None: the run's per-device batch (identical outputs)
    world_size: int = 1  # the student run's world size (its stream depends on it)
    progress: bool = True
    on_part: Callable[[int, int], None] | None = None  # called with (epoch, rank) after each part is written


def student_preprocessing(cfg: TrainConfig) -> Preprocessing:
    """The preprocessing the student of ``cfg`` gets (as ``build_student`` builds it), without building it."""
    entry = get_entry(cfg.model.name)
    size = cfg.model.img_size or entry.preprocessing.input_size
    return replace(replace(entry.preprocessing, input_size=size), **cfg.model.preprocessing)


def _meta(cfg: TrainConfig, opts: BuildOptions, key: dict, num_classes: int, batches: int) -> CacheMeta:
    outputs = opts.outputs
    if outputs == "auto":
        soft = cfg.distillation.type == "soft"
        outputs = ("topk" if num_classes > MANY_CLASSES else "logits") if soft else "argmax"
    if outputs not in OUTPUTS:
        raise ConfigError(f"--outputs {outputs!r} is not one of auto, {', '.join(OUTPUTS)}")
    top_k = min(opts.top_k, num_classes) if outputs == "topk" else 0
    storage = cache_storage(cfg.teacher.dtype, num_classes) if opts.storage == "auto" else opts.storage
    teacher_batch = opts.batch_size or cfg.data.batch_size
    if teacher_batch % cfg.data.batch_size:
        raise ConfigError(f"--batch-size {teacher_batch} must be a multiple of the run's per-device batch "
                          f"{cfg.data.batch_size} (the teacher sees whole micro-batches)")
    return CacheMeta(key=key, outputs=outputs, storage=storage, num_classes=num_classes, epochs=cfg.epochs,
                     ranks=opts.world_size, batch_size=cfg.data.batch_size, batches=batches,
                     teacher_batch_size=teacher_batch, filled_by="build", top_k=top_k)


def _reconcile(root: Path, have: CacheMeta | None, want: CacheMeta) -> CacheMeta:
    """The description to build under: a new cache's, or the existing one's (same stream and outputs)."""
    if have is None:
        return want
    from deit.train.teacher_cache import check_compatible

    check_compatible(root, have, want.key, "none")
    if (have.outputs, have.storage, have.top_k) != (want.outputs, want.storage, want.top_k):
        raise ConfigError(f"{root} holds a {have.outputs} cache ({have.storage}, top-k {have.top_k}); asked for "
                          f"{want.outputs} ({want.storage}, top-k {want.top_k}): choose another --output")
    return replace(have, epochs=max(have.epochs, want.epochs))


def _fill_part(root: Path, meta: CacheMeta, loader, task: TrainTask, epoch: int, rank: int,
               advance: Callable[[int], None]) -> None:
    """Replay (epoch, rank) of the stream through the teacher, whole micro-batches at a time; write the part."""
    loader.sampler.set_epoch(epoch)
    per_call = meta.teacher_batch_size // meta.batch_size
    records, pending = [], []

    def flush() -> None:
        logits = task.teacher_outputs(torch.cat(pending), epoch, b)
        records.extend(encode(meta, chunk) for chunk in logits.split(meta.batch_size))
        advance(len(pending))
        pending.clear()

    for b, (x, y) in enumerate(loader):
        x, _ = task.view(x, y, epoch, b, rank=rank)
        pending.append(x)
        if len(pending) == per_call:
            flush()
    if pending:
        flush()
    write_part(root, meta, epoch, rank, np.concatenate(records))


def _plan(root: Path, meta: CacheMeta, epochs: int, env: DistEnv) -> list[tuple[int, int]]:
    """This builder rank's missing parts: its share of the epochs (e % builders == rank), every student rank."""
    return [(e, r) for e in range(env.rank, epochs, env.world_size) for r in range(meta.ranks)
            if part_state(root, meta, e, r) != "ok"]


def build_cache(cfg: TrainConfig, output: str | Path, opts: BuildOptions = BuildOptions(),
                log: Callable[[str], None] = print) -> CacheMeta:
    """Build (or complete) the teacher-output cache of ``cfg``'s stream in ``output``; returns its description."""
    if cfg.distillation.type == "none":
        raise ConfigError("the config has distillation.type=none: a teacher cache needs a distillation config "
                          "(e.g. distillation.type=hard) and its teacher")
    env = init_distributed(cfg.device)
    try:
        return _build(cfg, Path(output), opts, env, log)
    finally:
        cleanup(env)


def _build(cfg: TrainConfig, root: Path, opts: BuildOptions, env: DistEnv, log: Callable[[str], None]) -> CacheMeta:
    started = time.perf_counter()
    cfg, precision = resolve_precision(cfg, env.device)
    check_teacher_checkpoint(cfg)
    cfg, data_line = follow_data_root(cfg)
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    say = log if env.is_main else (lambda message: None)
    preprocessing = student_preprocessing(cfg)
    train_set = build_dataset(cfg.data, "train")
    teacher = live_teacher(cfg, None, preprocessing, env.device)
    if teacher is None:
        raise ConfigError("no teacher is configured: set teacher.checkpoint=PATH (and teacher.model for a foreign "
                          "layout) or teacher.model=NAME for its release weights")
    loaders = [build_loader(cfg.data, "train", preprocessing=preprocessing, dataset=train_set, seed=cfg.seed,
                            distributed=(opts.world_size, r)) for r in range(opts.world_size)]
    key = stream_key(cfg, preprocessing, opts.world_size, train_set.fingerprint(), teacher_identity(cfg))
    want = _meta(cfg, opts, key, len(train_set.classes), len(loaders[0]))
    meta = on_main(env, lambda: _reconcile(root, read_meta(root), want))
    if env.is_main:
        write_meta(root, meta)
    barrier(env)
    parts = _plan(root, meta, cfg.epochs, env)
    total = on_main(env, lambda: sum(part_state(root, meta, e, r) != "ok" for e in range(cfg.epochs)
                                     for r in range(meta.ranks)))
    # An argmax has no storage dtype worth naming; logits and top-k values do.
    kind = meta.outputs if meta.outputs == "argmax" else (
        f"{meta.outputs} ({meta.storage}{f', top-{meta.top_k}' if meta.top_k else ''})")
    say(f"teacher cache {root}: {kind} of {meta.num_classes} classes, {meta.bytes_per_sample} B per image-view, "
        f"{format_bytes(meta.bytes_per_epoch)} per epoch, {format_bytes(meta.bytes_per_epoch * cfg.epochs)} for "
        f"{cfg.epochs} epochs; {total} of {cfg.epochs * meta.ranks} parts to compute on {env.world_size} "
        f"builder(s); {precision}")
    if data_line:
        say(data_line)
    if teacher.adapter is not None:
        say(teacher.adapter.describe())
    bar = _progress_bar(env, opts, len(parts) * meta.batches)
    # A task without a student: the stream as training views it, and the teacher it is passed to.
    task = TrainTask(None, DistillationObjective(nn.Identity(), cfg.distillation.type), teacher,
                     mixup=build_mixup(cfg.data, len(train_set.classes)),
                     augment=build_device_augment(cfg.data, preprocessing), seed=cfg.seed, env=env)
    for epoch, rank in parts:
        _fill_part(root, meta, loaders[rank], task, epoch, rank, bar.update)
        if opts.on_part is not None:
            opts.on_part(epoch, rank)
    bar.close()
    barrier(env)
    size = format_bytes(meta.bytes_per_epoch * cfg.epochs)
    done = f"computed {total} part(s)" if total else "nothing to compute, every part was there"
    say(f"teacher cache {root}: {kind}, {cfg.epochs} epochs x {meta.ranks} rank(s) ({size}) complete: {done} in "
        f"{time.perf_counter() - started:.1f} s; train with distillation.teacher_cache={root}")
    return meta


def _progress_bar(env: DistEnv, opts: BuildOptions, total: int):
    from tqdm import tqdm

    return tqdm(total=total, desc="teacher cache", unit="batch", file=sys.stderr, dynamic_ncols=True,
                disable=not (env.is_main and opts.progress) or None)


__all__ = ["BuildOptions", "build_cache", "student_preprocessing"]
