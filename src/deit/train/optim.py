"""Optimizer with the recipe's no-decay groups, lr scaling by batch, and the per-iteration warmup + cosine schedule."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from deit.train.config import OptimConfig, ScheduleConfig


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: decayed weights, and everything the recipe exempts — biases, norm weights (any 1-d
    parameter), and what ``model.no_weight_decay()`` names (pos_embed, cls_token, dist_token for DeiT)."""
    skip = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    decay, no_decay, decay_names, no_decay_names = [], [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim <= 1 or name.endswith(".bias") or name in skip or name.split(".")[-1] in skip:
            no_decay.append(p)
            no_decay_names.append(name)
        else:
            decay.append(p)
            decay_names.append(name)
    return [
        {"params": decay, "weight_decay": weight_decay, "param_names": decay_names},
        {"params": no_decay, "weight_decay": 0.0, "param_names": no_decay_names},
    ]


def scaled_lr(cfg: OptimConfig, batch_size: int, world_size: int) -> tuple[float, int]:
    """(lr, total batch): lr x total batch / lr_base_batch unless scale_lr is off."""
    total = batch_size * world_size * cfg.accum_steps
    lr = cfg.lr * total / cfg.lr_base_batch if cfg.scale_lr else cfg.lr
    return lr, total


def build_optimizer(cfg: OptimConfig, model: nn.Module, lr: float) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg.weight_decay)
    groups = [{k: v for k, v in g.items() if k != "param_names"} for g in groups]
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(cfg.betas), eps=cfg.eps)
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    raise ValueError(f"unknown optimizer {cfg.name!r}; use adamw or sgd")


@dataclass
class LRSchedule:
    """lr as a function of the optimizer step (0-based), stepped per iteration.

    Steps ``[0, warmup_steps)``: linear from ``warmup_lr`` towards ``lr`` (step t gets
    ``warmup_lr + (lr - warmup_lr) * t / warmup_steps``). Then ``cosine``:
    ``min_lr + (lr - min_lr) * (1 + cos(pi * (t - warmup_steps) / (total_steps - warmup_steps))) / 2``,
    reaching ``min_lr`` at ``total_steps``; or ``constant``: ``lr``.
    """

    name: str
    lr: float
    total_steps: int
    warmup_steps: int = 0
    warmup_lr: float = 1e-6
    min_lr: float = 0.0

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.warmup_lr + (self.lr - self.warmup_lr) * step / self.warmup_steps
        if self.name == "constant":
            return self.lr
        span = max(self.total_steps - self.warmup_steps, 1)
        t = min(step - self.warmup_steps, span)
        return self.min_lr + 0.5 * (self.lr - self.min_lr) * (1.0 + math.cos(math.pi * t / span))

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> float:
        lr = self(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        return lr


def build_schedule(cfg: ScheduleConfig, lr: float, steps_per_epoch: int, epochs: int) -> LRSchedule:
    return LRSchedule(
        name=cfg.name,
        lr=lr,
        total_steps=steps_per_epoch * epochs,
        warmup_steps=round(cfg.warmup_epochs * steps_per_epoch),
        warmup_lr=cfg.warmup_lr,
        min_lr=cfg.min_lr,
    )


__all__ = ["LRSchedule", "build_optimizer", "build_schedule", "param_groups", "scaled_lr"]
