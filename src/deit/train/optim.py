"""Optimizer with the recipe's no-decay groups, lr scaling by batch, and the per-iteration warmup + cosine schedule;
LAMB (DeiT III's optimizer) in plain PyTorch."""

from __future__ import annotations

import math
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn

from deit.train.config import OptimConfig, OptimizerName, ScheduleConfig


def param_groups(model: nn.Module, weight_decay: float, no_decay_lr_scale: float = 1.0) -> list[dict]:
    """Two groups: decayed weights, and everything the recipe exempts — biases, norm weights (any 1-d
    parameter), and what ``model.no_weight_decay()`` names (pos_embed, cls_token, dist_token for DeiT). Each has an
    ``lr_scale``, its lr's multiple of the schedule's (the exempt group's: ``no_decay_lr_scale``)."""
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
        {"params": decay, "weight_decay": weight_decay, "param_names": decay_names, "lr_scale": 1.0},
        {"params": no_decay, "weight_decay": 0.0, "param_names": no_decay_names, "lr_scale": no_decay_lr_scale},
    ]


def scaled_lr(cfg: OptimConfig, batch_size: int, world_size: int) -> tuple[float, int]:
    """(lr, total batch): lr x total batch / lr_base_batch unless scale_lr is off."""
    total = batch_size * world_size * cfg.accum_steps
    lr = cfg.lr * total / cfg.lr_base_batch if cfg.scale_lr else cfg.lr
    return lr, total


class Lamb(torch.optim.Optimizer):
    """LAMB (You et al. 2020, "Large Batch Optimization for Deep Learning", Algorithm 2) with the conventions of
    apex's ``FusedLAMB``, which the official DeiT III recipe trains with (``--opt fusedlamb`` through timm's
    optimizer factory: apex's defaults, decoupled decay, bias correction, gradient averaging, ``max_grad_norm=1.0``,
    ``use_nvlamb=False``; timm passes lr, eps and the per-group weight decay). One step, ``t`` the group's step
    count from 1, ``lam`` its ``weight_decay``:

    1. The global gradient norm ``G`` over every gradient of every group; when ``G > max_grad_norm`` each gradient
       is divided by ``G / max_grad_norm`` (``max_grad_norm`` None or 0: no clipping).
    2. ``m = b1 m + (1 - b1) g``, ``v = b2 v + (1 - b2) g^2`` with the clipped ``g``.
    3. ``u = (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps) + lam w``: the decay is added to the update.
    4. Per tensor, the trust ratio ``r = ||w|| / ||u||`` (L2 norms of the whole tensor, ``w`` before the step, ``u``
       with its decay), or ``r = 1`` when either norm is 0. Only where ``lam != 0`` (apex's ``use_nvlamb=False``):
       a tensor without decay — biases, norms, pos_embed and tokens in :func:`param_groups` — takes the plain Adam
       step; ``trust_all=True`` (apex's ``use_nvlamb``) gives every tensor its ratio. The paper's ``phi`` is the
       identity (no clamping).
    5. ``w = w - lr r u``.

    The moments are kept in the parameter's dtype; the step count is per group and advances at every ``step()``
    (as apex's), so it lives in ``param_groups`` and hence in the state dict.
    """

    def __init__(self, params: Iterable, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-6, weight_decay: float = 0.01, max_grad_norm: float | None = 1.0,
                 trust_all: bool = False):
        if lr < 0 or eps < 0 or weight_decay < 0:
            raise ValueError(f"Lamb needs lr, eps and weight_decay >= 0, got {lr}, {eps}, {weight_decay}")
        if not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"Lamb betas must be in [0, 1), got {betas}")
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, trust_all=trust_all)
        super().__init__(params, defaults)
        self.max_grad_norm = max_grad_norm

    def _clip_divisor(self) -> torch.Tensor | None:
        """What every gradient is divided by (step 1), or None when clipping is off or there is no gradient."""
        grads = [p.grad for g in self.param_groups for p in g["params"] if p.grad is not None]
        if not grads or not self.max_grad_norm:
            return None
        norm = torch.linalg.vector_norm(torch.stack([n.float() for n in torch._foreach_norm(grads)]))
        return torch.where(norm > self.max_grad_norm, norm / self.max_grad_norm, torch.ones_like(norm))

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        divisor = self._clip_divisor()
        for group in self.param_groups:
            group["step"] = group.get("step", 0) + 1
            params = [p for p in group["params"] if p.grad is not None]
            if params:
                self._update(group, params, divisor)
        return loss

    def _update(self, group: dict, params: list[torch.Tensor], divisor: torch.Tensor | None) -> None:
        if any(p.grad.is_sparse for p in params):
            raise RuntimeError("Lamb does not support sparse gradients")
        for p in params:
            if not self.state[p]:
                self.state[p]["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                self.state[p]["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        grads = [p.grad for p in params]
        if divisor is not None:
            grads = torch._foreach_div(grads, divisor.to(grads[0].device))
        (b1, b2), t, decay = group["betas"], group["step"], group["weight_decay"]
        m = [self.state[p]["exp_avg"] for p in params]
        v = [self.state[p]["exp_avg_sq"] for p in params]
        torch._foreach_mul_(m, b1)
        torch._foreach_add_(m, grads, alpha=1.0 - b1)
        torch._foreach_mul_(v, b2)
        torch._foreach_addcmul_(v, grads, grads, value=1.0 - b2)
        denom = torch._foreach_div(v, 1.0 - b2**t)
        torch._foreach_sqrt_(denom)
        torch._foreach_add_(denom, group["eps"])
        update = torch._foreach_div(m, 1.0 - b1**t)
        torch._foreach_div_(update, denom)
        if decay != 0:
            torch._foreach_add_(update, params, alpha=decay)
        if decay != 0 or group["trust_all"]:
            w_norm = torch.stack(torch._foreach_norm(params))
            u_norm = torch.stack(torch._foreach_norm(update))
            ratio = torch.where((w_norm > 0) & (u_norm > 0), w_norm / u_norm, torch.ones_like(w_norm))
            torch._foreach_mul_(update, list(ratio.unbind()))
        torch._foreach_add_(params, update, alpha=-group["lr"])


OPTIMIZERS: tuple[str, ...] = typing.get_args(OptimizerName)


def build_optimizer(cfg: OptimConfig, model: nn.Module, lr: float) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg.weight_decay, cfg.no_decay_lr_scale)
    groups = [{k: v for k, v in g.items() if k != "param_names"} for g in groups]
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(cfg.betas), eps=cfg.eps)
    if cfg.name == "lamb":
        return Lamb(groups, lr=lr, betas=tuple(cfg.betas), eps=cfg.eps)
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    raise ValueError(f"unknown optimizer {cfg.name!r}; use one of {', '.join(OPTIMIZERS)}")


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
        """Set every group's lr to the schedule's times the group's ``lr_scale``; returns the schedule's."""
        lr = self(step)
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        return lr


def build_schedule(cfg: ScheduleConfig, lr: float, steps_per_epoch: int, total_steps: int) -> LRSchedule:
    """The schedule of a run of ``total_steps`` optimizer steps (``TrainConfig.total_steps``); warm-up in epochs."""
    return LRSchedule(
        name=cfg.name,
        lr=lr,
        total_steps=total_steps,
        warmup_steps=round(cfg.warmup_epochs * steps_per_epoch),
        warmup_lr=cfg.warmup_lr,
        min_lr=cfg.min_lr,
    )


__all__ = ["OPTIMIZERS", "LRSchedule", "Lamb", "build_optimizer", "build_schedule", "param_groups", "scaled_lr"]
