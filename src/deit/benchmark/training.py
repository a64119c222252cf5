"""Training step: forward + distillation loss + backward + AdamW, ours against HF's twin with the same weights.

Both models get the same step: the project's ``DistillationLoss`` (hard distillation, label smoothing 0.1 on the
class head) and ``build_optimizer``'s AdamW with the recipe's parameter groups. ``train`` feeds precomputed teacher
logits (the teacher's cost excluded); ``train+teacher`` runs the frozen RegNetY teacher inside every step, in
channels-last memory format.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from deit.benchmark.common import (
    BenchmarkConfig,
    autocast,
    build,
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
from deit.models import create_model
from deit.train.config import OptimConfig
from deit.train.loss import DistillationLoss
from deit.train.optim import build_optimizer

OURS, GEMM = "ours", "gemm"


def make_step(
    model: nn.Module,
    forward: Callable[[torch.Tensor], object],
    criterion: DistillationLoss,
    x: torch.Tensor,
    target: torch.Tensor,
    teacher_logits: torch.Tensor | None,
    dtype: str,
) -> Callable[[], None]:
    """One optimisation step on a fixed batch (``teacher_logits=None``: the loss runs the teacher)."""
    optimizer = build_optimizer(OptimConfig(), model, lr=5e-4)

    def step() -> None:
        with autocast(x.device, dtype):
            loss = criterion(x, forward(x), target, teacher_logits=teacher_logits)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def build_teacher(name: str, num_classes: int, device: torch.device) -> nn.Module:
    """The RegNetY teacher for ``num_classes``, channels-last (its convolutions run faster so; RESULTS.md)."""
    return create_model(name, num_classes=num_classes).to(device).to(memory_format=torch.channels_last)


def bench_training(name: str, config: BenchmarkConfig, device: torch.device, peer: bool, with_teacher: bool) -> Row:
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
    teacher = build_teacher(config.teacher_name, model.num_classes, device)
    criterion = DistillationLoss(nn.CrossEntropyLoss(label_smoothing=0.1), teacher, "hard")
    teacher_logits = None if with_teacher else criterion.teacher_logits(x)

    def step_of(module: nn.Module, forward: Callable[[torch.Tensor], object]) -> Callable[[], None]:
        return make_step(module, maybe_compile(forward, config), criterion, x, target, teacher_logits, config.dtype)

    contenders = {OURS: step_of(model, model.forward_heads)}
    twins = load_twins(model, device, x[:2]) if peer else []
    for twin in twins:
        contenders[twin.label] = step_of(twin.module, twin.heads)
    modules = {OURS: model, **{t.label: t.module for t in twins}}
    # Warm-up, then one more untimed step each for its peak memory: optimizer state allocated before, gradients
    # (dropped first, so that the step allocates them anew) counted in.
    for _ in range(max(config.warmup, 2) if config.compile else config.warmup):
        for step in contenders.values():
            step()
    memory = {}
    for label, step in contenders.items():
        for p in modules[label].parameters():
            p.grad = None
        memory[label] = peak_memory_mb(step, device)
    gemm_fn, gemm_flop = gemm(device, config.dtype, config.gemm_size or default_size(device))
    contenders[GEMM] = gemm_fn
    samples = race(contenders, device, config.train_repeats, 0, min_sample_s=0.2 if device.type == "cuda" else 0)

    gflop = 3 * forward_gflop(name, size, model_overrides(config))
    if with_teacher:
        gflop += forward_gflop(config.teacher_name, size, {"num_classes": model.num_classes})
    row = Row(
        task="train+teacher" if with_teacher else "train", model=name, batch=batch, dtype=config.dtype,
        device=device.type, compile=config.compile, gflop_per_image=gflop, ours_peak_mem_mb=memory[OURS][0],
        memory=memory[OURS][1],
        note=f"teacher {config.teacher_name}: {'run in every step' if with_teacher else 'logits precomputed'}",
    )
    fill_figures(row, samples, OURS, [t.label for t in twins], (GEMM, gemm_flop), device)
    if twins:
        row.peer_peak_mem_mb = memory[row.peer][0]
        row.peer_max_abs_diff = max(t.max_abs_diff for t in twins)
    return row


__all__ = ["bench_training", "build_teacher", "make_step"]
