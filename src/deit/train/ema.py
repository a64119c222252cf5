"""Averages of a model's weights: the exponential moving average (evaluated and saved beside the model when enabled)
and airbench's Lookahead (slow weights that the trained ones return to every few steps)."""

from __future__ import annotations

import copy

import torch
from torch import nn


class ModelEma:
    """``ema = decay * ema + (1 - decay) * weights`` after every optimizer step; buffers are copied."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = float(decay)
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        src = model.state_dict()
        for name, ema_v in self.module.state_dict().items():
            v = src[name].detach()
            if ema_v.dtype.is_floating_point:
                ema_v.mul_(self.decay).add_(v.to(ema_v.dtype), alpha=1.0 - self.decay)
            else:
                ema_v.copy_(v)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "weights": self.module.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.decay = float(state["decay"])
        self.module.load_state_dict(state["weights"])


class Lookahead:
    """airbench's Lookahead (``lookahead`` in the training config): after every ``every``-th optimizer step
    ``slow += (1 - d) (weights - slow)`` and the weights are set to ``slow``, with ``d = decay (step / total)^3``;
    after the last step of the schedule the weights become the slow ones. Every floating-point entry of the state
    dict takes part (BatchNorm's running statistics too); integer ones (BatchNorm's step counter) are the model's.
    The slow weights start as the model's when this object is made (after any data-dependent initialisation)."""

    def __init__(self, model: nn.Module, every: int, decay: float) -> None:
        self.every, self.decay = int(every), float(decay)
        self.slow = {k: v.detach().clone() for k, v in model.state_dict().items() if v.dtype.is_floating_point}

    def decay_at(self, step: int, total_steps: int) -> float:
        return self.decay * (min(step, total_steps) / max(total_steps, 1)) ** 3

    @torch.no_grad()
    def after_step(self, model: nn.Module, step: int, total_steps: int) -> None:
        """Called after optimizer step ``step`` (1-based: the steps done) of a schedule of ``total_steps``."""
        weights = model.state_dict()
        if step % self.every == 0:
            d = self.decay_at(step, total_steps)
            for name, slow in self.slow.items():
                slow.lerp_(weights[name].to(slow.dtype), 1.0 - d)
        if step % self.every == 0 or step == total_steps:
            for name, slow in self.slow.items():
                weights[name].copy_(slow)

    def state_dict(self) -> dict:
        return {"every": self.every, "decay": self.decay, "slow": dict(self.slow)}

    def load_state_dict(self, state: dict) -> None:
        self.every, self.decay = int(state["every"]), float(state["decay"])
        for name, value in state["slow"].items():
            self.slow[name].copy_(value)


__all__ = ["Lookahead", "ModelEma"]
