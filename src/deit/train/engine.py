"""One training epoch and one evaluation pass.

Reproducibility: before every micro-batch the global torch RNG (dropout, stochastic depth) is re-seeded from
(seed, rank, epoch, batch index), and mixup draws from a generator seeded the same way, so a run resumed at any
optimizer step replays exactly what the uninterrupted run would have done.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from deit.train.checkpointing import rng_states, set_rng_states
from deit.train.distributed import DistEnv, all_reduce_sum
from deit.train.ema import ModelEma
from deit.train.loss import DistillationLoss
from deit.train.optim import LRSchedule


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; training stops without writing the bad weights."""

    def __init__(self, step: int, epoch: int, lr: float, loss: float, loss_scale: float | None) -> None:
        self.step, self.epoch, self.lr, self.loss, self.loss_scale = step, epoch, lr, loss, loss_scale
        scale = f", loss scale {loss_scale:g}" if loss_scale is not None else ", no loss scaling"
        fix = "lower optim.lr or set optim.clip_grad (e.g. 1.0)"
        if loss_scale is not None:
            fix += ", or use amp=bf16 (no loss scaling, fp16's range problems gone)"
        super().__init__(
            f"non-finite loss ({loss}) at optimizer step {step} (epoch {epoch}), lr {lr:.6g}{scale}; {fix}"
        )


def derive_seed(*parts: int | str) -> int:
    """A 63-bit seed from any tuple of ints/strings (stable across processes and Python versions)."""
    digest = hashlib.blake2b("/".join(str(p) for p in parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def autocast_context(device: torch.device, amp: str):
    if amp == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if amp == "fp16":
        return torch.autocast(device.type, dtype=torch.float16)
    return contextlib.nullcontext()


def student_outputs(model: nn.Module, x: torch.Tensor):
    """(cls, dist) logits of a distilled model, else its logits tensor."""
    if getattr(model, "distilled", False) and hasattr(model, "forward_heads"):
        return model.forward_heads(x)
    return model(x)


class TrainView(nn.Module):
    """Routes forward to ``forward_heads`` for distilled models, so DDP wraps the pass that training uses."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor):
        return student_outputs(self.model, x)


@dataclass
class Meter:
    """Running loss sums: since the last metrics line (window) and over the epoch. Saved with the training state,
    so the metrics a resumed run writes equal the uninterrupted run's."""

    loss_sum: float = 0.0
    count: int = 0
    epoch_loss_sum: float = 0.0
    epoch_count: int = 0
    images: int = 0
    started: float = field(default_factory=time.perf_counter)

    def add(self, loss: float, images: int) -> None:
        self.loss_sum += loss
        self.count += 1
        self.epoch_loss_sum += loss
        self.epoch_count += 1
        self.images += images

    def reset(self) -> None:
        self.loss_sum, self.count, self.images, self.started = 0.0, 0, 0, time.perf_counter()

    def reset_epoch(self) -> None:
        self.epoch_loss_sum, self.epoch_count = 0.0, 0

    @property
    def epoch_loss(self) -> float | None:
        return self.epoch_loss_sum / self.epoch_count if self.epoch_count else None

    def state_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("loss_sum", "count", "epoch_loss_sum", "epoch_count")}

    def load_state_dict(self, state: dict) -> None:
        for k, v in state.items():
            setattr(self, k, v)
        self.images, self.started = 0, time.perf_counter()


@dataclass
class Progress:
    """Where training stands: what a resume needs besides weights and optimizer."""

    epoch: int = 0  # current epoch, 0-based
    batch: int = 0  # micro-batches of this epoch already consumed
    step: int = 0  # optimizer steps done in total
    best_top1: float = -1.0
    best_epoch: int = -1

    def state_dict(self) -> dict:
        return dict(self.__dict__)

    def load_state_dict(self, state: dict) -> None:
        self.__dict__.update(state)


@dataclass
class Trainer:
    """Everything one optimizer step needs."""

    model: nn.Module  # the raw student (weights, evaluation, checkpoints)
    forward_model: nn.Module  # what the forward pass runs: TrainView(model), maybe wrapped in DDP
    criterion: DistillationLoss
    optimizer: torch.optim.Optimizer
    schedule: LRSchedule
    env: DistEnv
    seed: int = 0
    amp: str = "none"
    accum_steps: int = 1
    clip_grad: float | None = None
    mixup: Callable | None = None
    ema: ModelEma | None = None
    scaler: torch.amp.GradScaler | None = None
    progress: Progress = field(default_factory=Progress)
    meter: Meter = field(default_factory=Meter)

    def state_dict(self) -> dict:
        """Everything a resume needs: weights, optimizer, EMA, grad scaler, position, meters, RNG states."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "progress": self.progress.state_dict(),
            "meter": self.meter.state_dict(),
            "rng": rng_states(),
            "world_size": self.env.world_size,
        }

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.ema is not None:
            if state.get("ema") is None:
                raise ValueError("the saved state has no EMA weights but ema.enabled is on; resume with "
                                 "ema.enabled=false")
            self.ema.load_state_dict(state["ema"])
        if self.scaler is not None and state.get("scaler") is not None:
            self.scaler.load_state_dict(state["scaler"])
        self.progress.load_state_dict(state["progress"])
        self.meter.load_state_dict(state["meter"])
        set_rng_states(state["rng"])

    @property
    def loss_scale(self) -> float | None:
        return float(self.scaler.get_scale()) if self.scaler is not None and self.scaler.is_enabled() else None

    def train_one_epoch(
        self,
        loader: Iterable,
        num_batches: int,
        on_step: Callable[[Trainer, float], None] | None = None,
        bar=None,
    ) -> None:
        """Train from ``progress.batch`` to the end of ``progress.epoch``; ``loader`` yields those batches.

        ``on_step(trainer, loss)`` runs after each optimizer step (logging, saving the state).
        """
        p, env = self.progress, self.env
        self.model.train()
        self.forward_model.train()
        device = env.device
        for x, y in loader:
            b = p.batch
            group_start = b - b % self.accum_steps
            group_size = min(self.accum_steps, num_batches - group_start)
            last_of_group = b - group_start == group_size - 1
            if b == group_start:
                lr = self.schedule.apply(self.optimizer, p.step)
                self.optimizer.zero_grad(set_to_none=True)
            x = x.to(device, non_blocking=True)
            y = y.to(device, non_blocking=True)
            torch.manual_seed(derive_seed(self.seed, "step", env.rank, p.epoch, b))
            if self.mixup is not None:
                gen = torch.Generator().manual_seed(derive_seed(self.seed, "mixup", env.rank, p.epoch, b))
                x, y = self.mixup(x, y, gen)
            sync = last_of_group or not env.distributed
            ctx = contextlib.nullcontext() if sync else self.forward_model.no_sync()
            with ctx:
                teacher_logits = None
                if self.criterion.distillation_type != "none":
                    teacher_logits = self.criterion.teacher_logits(x)
                with autocast_context(device, self.amp):
                    outputs = self.forward_model(x)
                    loss = self.criterion(x, outputs, y, teacher_logits=teacher_logits)
                loss_value = loss.detach().float().item()
                ok, total = all_reduce_sum([float(math.isfinite(loss_value)), loss_value], env)
                if ok < env.world_size:
                    raise NonFiniteLossError(p.step, p.epoch, self.schedule(p.step), loss_value, self.loss_scale)
                scaled = loss / group_size
                if self.scaler is not None:
                    scaled = self.scaler.scale(scaled)
                scaled.backward()
            self.meter.add(total / env.world_size, x.shape[0] * env.world_size)
            p.batch += 1
            if bar is not None:
                elapsed = max(time.perf_counter() - self.meter.started, 1e-9)
                bar.set_postfix(loss=f"{loss_value:.4f}", lr=f"{self.schedule(p.step):.3g}",
                                img_s=f"{self.meter.images / elapsed:.0f}", refresh=False)
                bar.update(1)
            if not last_of_group:
                continue
            if self.scaler is not None:
                self.scaler.unscale_(self.optimizer)
            if self.clip_grad is not None:
                nn.utils.clip_grad_norm_(self.model.parameters(), self.clip_grad)
            if self.scaler is not None:
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                self.optimizer.step()
            if self.ema is not None:
                self.ema.update(self.model)
            p.step += 1
            if on_step is not None:
                on_step(self, lr)


# ---------------------------------------------------------------------------------------------------- evaluate
def _topk_correct(logits: torch.Tensor, target: torch.Tensor, ks=(1, 5)) -> list[float]:
    maxk = min(max(ks), logits.shape[1])
    pred = logits.topk(maxk, dim=1).indices
    hit = pred.eq(target[:, None])
    return [float(hit[:, : min(k, maxk)].any(dim=1).sum()) for k in ks]


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable,
    env: DistEnv,
    teacher_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
    amp: str = "none",
) -> dict:
    """Loss and top-1/top-5 of every head over the whole loader, summed over ranks (each sample counted once).

    Keys: ``loss``, ``top1``, ``top5`` (the model's prediction: the average of both heads for a distilled model),
    ``top1_cls``/``top5_cls``/``top1_dist``/``top5_dist`` (distilled models), and with a teacher
    ``teacher_top1`` and ``agreement`` (fraction of samples where the student's and teacher's top-1 agree).
    All accuracies are fractions in [0, 1].
    """
    was_training = model.training
    model.eval()
    device = env.device
    names = ["n", "loss", "top1", "top5", "top1_cls", "top5_cls", "top1_dist", "top5_dist", "teacher_top1",
             "agreement"]
    sums = dict.fromkeys(names, 0.0)
    distilled = getattr(model, "distilled", False) and hasattr(model, "forward_heads")
    for x, y in loader:
        x = x.to(device, non_blocking=True)
        y = y.to(device, non_blocking=True)
        with autocast_context(device, amp):
            out = model.forward_heads(x) if distilled else model(x)
        if distilled:
            cls_logits, dist_logits = (o.float() for o in out)
            logits = (cls_logits + dist_logits) / 2
            c1, c5 = _topk_correct(cls_logits, y)
            d1, d5 = _topk_correct(dist_logits, y)
            sums["top1_cls"] += c1
            sums["top5_cls"] += c5
            sums["top1_dist"] += d1
            sums["top5_dist"] += d5
        else:
            logits = out.float()
        a1, a5 = _topk_correct(logits, y)
        sums["top1"] += a1
        sums["top5"] += a5
        sums["loss"] += float(F.cross_entropy(logits, y, reduction="sum"))
        sums["n"] += x.shape[0]
        if teacher_fn is not None:
            t = teacher_fn(x)
            t_pred = t.argmax(dim=1)
            sums["teacher_top1"] += float((t_pred == y).sum())
            sums["agreement"] += float((t_pred == logits.argmax(dim=1)).sum())
    totals = dict(zip(names, all_reduce_sum([sums[k] for k in names], env), strict=True))
    model.train(was_training)
    n = totals.pop("n")
    if n == 0:
        raise ValueError("the evaluation loader is empty: the validation split has no images")
    keep = ["loss", "top1", "top5"]
    if distilled:
        keep += ["top1_cls", "top5_cls", "top1_dist", "top5_dist"]
    if teacher_fn is not None:
        keep += ["teacher_top1", "agreement"]
    out = {k: totals[k] / n for k in keep}
    out["num_samples"] = int(n)
    return out


__all__ = ["Meter", "NonFiniteLossError", "Progress", "TrainView", "Trainer", "derive_seed", "evaluate"]
