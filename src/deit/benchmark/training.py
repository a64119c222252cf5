"""Training step: forward + distillation loss + backward + AdamW, ours against HF's twin with the same weights.

Both models get the same step: the project's ``DistillationObjective`` (hard distillation, label smoothing 0.1 on the
class head) and ``build_optimizer``'s AdamW with the recipe's parameter groups. Where the teacher's outputs come
from is the task: ``train`` feeds precomputed teacher logits (the teacher's cost excluded, an upper bound);
``train+teacher`` runs the frozen RegNetY teacher inside every step (``deit.inference.teacher.Teacher``:
channels-last, inference mode, its dtype); ``train+cache`` reads them from a teacher-output cache on disk every
step (``deit.train.teacher_cache.CachedTeacher``: memory-mapped part, decoded), as a run with
``distillation.teacher_cache`` does.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from deit.benchmark.common import (
    BenchmarkConfig,
    autocast,
    build,
    compile_note,
    fill_figures,
    forward_gflop,
    input_size,
    maybe_compile,
    model_overrides,
)
from deit.benchmark.gemm import default_size, gemm
from deit.benchmark.memory import peak_memory_mb
from deit.benchmark.peers import load_twins
from deit.benchmark.report import Row
from deit.benchmark.timing import race
from deit.inference.teacher import Teacher
from deit.models import build_architecture
from deit.train.config import OptimConfig
from deit.train.loss import DistillationObjective
from deit.train.optim import build_optimizer
from deit.train.teacher_cache import CachedTeacher, CacheMeta, encode, write_meta, write_part

OURS, OURS_EAGER, GEMM = "ours", "ours-eager", "gemm"


TEACHER_TASKS = {"train": "precomputed", "train+teacher": "live", "train+cache": "cache"}


def make_step(
    model: nn.Module,
    forward: Callable[[torch.Tensor], object],
    criterion: DistillationObjective,
    x: torch.Tensor,
    target: torch.Tensor,
    teacher_logits: Callable[[], torch.Tensor],
    dtype: str,
    wrap: Callable[[Callable], Callable] | None = None,
) -> Callable[[], None]:
    """One optimisation step on a fixed batch; ``teacher_logits()`` gives the teacher's outputs for it (computed,
    read from a cache, or precomputed). ``wrap`` (e.g. ``Compiled``) wraps forward + loss, what a training run
    compiles: the same part of every contender's step."""
    optimizer = build_optimizer(OptimConfig(), model, lr=5e-4)

    def loss_of(images: torch.Tensor, labels: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        with autocast(images.device, dtype):
            return criterion(forward(images), labels, logits)

    loss_fn = wrap(loss_of) if wrap is not None else loss_of

    def step() -> None:
        loss = loss_fn(x, target, teacher_logits())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def build_teacher(name: str, num_classes: int, device: torch.device, dtype: str = "fp32") -> Teacher:
    """The frozen RegNetY teacher for ``num_classes``, as training runs it (channels-last, its convolutions run
    faster so: docs/results/benchmark-cpu.md; bf16 weights when the benchmark runs in bf16)."""
    module = build_architecture(name, num_classes=num_classes).to(device)
    return Teacher(module, "bfloat16" if dtype == "bf16" else "float32")


def cached_outputs(teacher: Teacher, x: torch.Tensor, root: Path) -> Callable[[], torch.Tensor]:
    """A one-part teacher-output cache (hard distillation: argmax records) of ``teacher`` on ``x`` under ``root``,
    and a function reading the batch back from it the way a training run does."""
    logits = teacher(x)
    meta = CacheMeta(key={}, outputs="argmax", storage="float32", num_classes=logits.shape[1], epochs=1, ranks=1,
                     batch_size=x.shape[0], batches=1, teacher_batch_size=x.shape[0], filled_by="build")
    write_meta(root, meta)
    write_part(root, meta, 0, 0, encode(meta, logits))
    source = CachedTeacher(root, meta, rank=0)
    return lambda: source.logits(x, 0, 0)  # a slice of the memory-mapped part, decoded on x's device


def bench_training(name: str, config: BenchmarkConfig, device: torch.device, peer: bool, task: str = "train") -> Row:
    batch = config.train_batch_size
    model = build(name, config, device).train()
    if not getattr(model, "distilled", False):
        raise ValueError(
            f"the training benchmark distils, so it needs a model with a distillation token; {name} has none "
            "(use e.g. deit_tiny_distilled_patch16_224)"
        )
    size = input_size(model)
    generator = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(batch, 3, size, size, device=device, generator=generator)
    target = torch.randint(0, model.num_classes, (batch,), device=device, generator=generator)
    mode = TEACHER_TASKS[task]
    teacher = build_teacher(config.teacher_name, model.num_classes, device, config.dtype)
    criterion = DistillationObjective(nn.CrossEntropyLoss(label_smoothing=0.1), "hard")
    scratch = tempfile.TemporaryDirectory(prefix="deit-bench-cache-")
    if mode == "live":
        teacher_logits: Callable[[], torch.Tensor] = lambda: teacher(x)  # noqa: E731
    elif mode == "cache":
        teacher_logits = cached_outputs(teacher, x, Path(scratch.name))
    else:
        fixed = teacher(x)
        teacher_logits = lambda: fixed  # noqa: E731

    wrapped: dict[str, Callable] = {}

    def step_of(label: str, module: nn.Module, forward: Callable[[torch.Tensor], object]) -> Callable[[], None]:
        def wrap(fn: Callable) -> Callable:
            wrapped[label] = maybe_compile(fn, config)
            return wrapped[label]

        return make_step(module, forward, criterion, x, target, teacher_logits, config.dtype, wrap)

    contenders = {OURS: step_of(OURS, model, model.forward_heads)}
    if config.compile:  # the compiled step against the eager one, in the same rounds
        contenders[OURS_EAGER] = make_step(model, model.forward_heads, criterion, x, target, teacher_logits,
                                           config.dtype)
    twins = load_twins(model, device, x[:2]) if peer else []
    for twin in twins:
        contenders[twin.label] = step_of(twin.label, twin.module, twin.heads)
    modules = {OURS: model, OURS_EAGER: model, **{t.label: t.module for t in twins}}
    # Warm-up (with --compile: the eager call, then the compiling one), then one more untimed step each for its
    # peak memory: optimizer state allocated before, gradients (dropped first, so that the step allocates them
    # anew) counted in.
    for _ in range(max(config.warmup, 2) if config.compile else config.warmup):
        for step in contenders.values():
            step()
    memory = {}
    for label, step in contenders.items():
        if label == OURS_EAGER:
            continue
        for p in modules[label].parameters():
            p.grad = None
        memory[label] = peak_memory_mb(step, device)
    gemm_fn, gemm_flop = gemm(device, config.dtype, config.gemm_size or default_size(device))
    contenders[GEMM] = gemm_fn
    samples = race(contenders, device, config.train_repeats, 0, min_sample_s=0.2 if device.type == "cuda" else 0)

    scratch.cleanup()
    gflop = 3 * forward_gflop(name, size, model_overrides(config))
    if mode == "live":
        gflop += forward_gflop(config.teacher_name, size, {"num_classes": model.num_classes})
    how = {"live": "run in every step", "cache": "outputs read from a teacher-output cache every step",
           "precomputed": "logits precomputed"}[mode]
    row = Row(
        task=task, model=name, batch=batch, dtype=config.dtype, device=device.type, compile=config.compile,
        gflop_per_image=gflop, ours_peak_mem_mb=memory[OURS][0], memory=memory[OURS][1],
        note="; ".join(filter(None, [f"teacher {config.teacher_name}: {how}", compile_note(wrapped)])),
    )
    fill_figures(row, samples, OURS, [t.label for t in twins], (GEMM, gemm_flop), device)
    if config.compile:
        row.ours_eager_img_s = batch / samples[OURS_EAGER].median
    if twins:
        row.peer_peak_mem_mb = memory[row.peer][0]
        row.peer_max_abs_diff = max(t.max_abs_diff for t in twins)
    return row


__all__ = ["TEACHER_TASKS", "bench_training", "build_teacher", "cached_outputs", "make_step"]
