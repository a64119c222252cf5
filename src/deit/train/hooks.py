"""What runs around the training loop, as ``Trainer.fit`` hooks: the progress bar, the metrics log (with its
console lines, TensorBoard and the unreadable-image summary), and checkpoints (by epoch, by steps, by minutes).

Every hook writes on rank 0 only (``env.is_main``); the other ranks compute and stay silent. Epochs are 1-based
wherever a person reads them (console, ``metrics.jsonl``); ``trainer.progress.epoch`` counts from 0.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence

from torch import nn

from deit.checkpoints import save_checkpoint
from deit.runtime.distributed import DistEnv, gather_lists
from deit.runtime.files import atomic_path
from deit.train.checkpointing import RunDir
from deit.train.engine import Clock, Trainer
from deit.train.tensorboard import TensorBoardSink

HEAD_METRICS = ("top1_cls", "top1_dist", "teacher_top1", "agreement")
LISTED_BAD_IMAGES = 3


class Hook:
    """What runs around the loop; every method is optional. ``trainer.progress`` says where training stands, and
    ``trainer.meter`` holds the losses (on the device until a hook asks for them)."""

    def on_epoch_start(self, trainer: Trainer, num_batches: int) -> None: ...

    def on_batch(self, trainer: Trainer) -> None: ...

    def on_step(self, trainer: Trainer, lr: float) -> None: ...

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict) -> None: ...


class ProgressBar(Hook):
    """A tqdm bar per epoch on rank 0: shown on a terminal, silent when stderr is a file or a pipe."""

    def __init__(self, env: DistEnv, epochs: int) -> None:
        self.env, self.epochs, self.bar = env, epochs, None

    def on_epoch_start(self, trainer: Trainer, num_batches: int) -> None:
        if not self.env.is_main:
            return
        from tqdm import tqdm

        p = trainer.progress
        self.bar = tqdm(total=num_batches, initial=p.batch, desc=f"epoch {p.epoch + 1}/{self.epochs}", leave=False,
                        file=sys.stderr, dynamic_ncols=True, disable=None)

    def on_batch(self, trainer: Trainer) -> None:
        if self.bar is not None:
            # The loss of the last metrics line: reading the current one would stop the device every micro-batch.
            loss = trainer.meter.last.get("loss")
            lr = trainer.schedule(trainer.progress.step)
            shown = {"loss": f"{loss:.4f}"} if loss is not None else {}
            self.bar.set_postfix(**shown, lr=f"{lr:.3g}", img_s=f"{trainer.meter.images_per_s:.0f}", refresh=False)
            self.bar.update(1)

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def say(line: str) -> None:
    """A console line on stdout that does not tear a progress bar drawn on the same terminal."""
    from tqdm import tqdm

    tqdm.write(line, file=sys.stdout)
    sys.stdout.flush()


def clock_time(seconds: float) -> str:
    """``H:MM:SS``."""
    s = max(0, round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def bad_image_summary(epoch: int, errors: list[str], data_root: str | None) -> str:
    """One line for the unreadable images of an epoch: how many, the first few, and how to list them all."""
    shown = "; ".join(errors[:LISTED_BAD_IMAGES])
    more = f"; and {len(errors) - LISTED_BAD_IMAGES} more" if len(errors) > LISTED_BAD_IMAGES else ""
    where = f"deit data check {data_root}" if data_root else "deit data check"
    return (f"warning: epoch {epoch}: {len(errors)} unreadable image(s) were replaced by other samples ({shown}"
            f"{more}); `{where}` lists them all, data.on_bad_image=fail stops at the first")


class MetricsLog(Hook):
    """``metrics.jsonl`` (and TensorBoard, when its sink is given): a ``step`` record every ``log_every``
    optimizer steps and an ``epoch`` record per epoch. On the console, the same step line (loss, lr, images/s and
    the ETA of the whole run), one line per epoch (train loss, time, images/s, validation), and one for the epoch's
    unreadable images (all ranks and loader workers together)."""

    def __init__(self, run: RunDir, env: DistEnv, epochs: int, log_every: int, eval_every: int, clock: Clock,
                 loaders: Sequence = (), data_root: str | None = None,
                 tensorboard: TensorBoardSink | None = None) -> None:
        self.run, self.env, self.epochs, self.clock = run, env, epochs, clock
        self.log_every, self.eval_every = log_every, eval_every
        self.loaders, self.data_root, self.tensorboard = loaders, data_root, tensorboard
        self.started: tuple[float, int] | None = None  # (time, step) of this process's first epoch start
        self.epoch_started: tuple[float, int] | None = None  # (time, images) at this epoch's start
        self.trained: float | None = None  # when this epoch's last step ended (before validation)
        self.num_batches = 0

    def _write(self, record: dict) -> None:
        self.run.log(record)
        if self.tensorboard is not None:
            self.tensorboard.write(record)

    def on_epoch_start(self, trainer: Trainer, num_batches: int) -> None:
        now = time.perf_counter()
        self.started = self.started or (now, trainer.progress.step)
        self.epoch_started, self.trained, self.num_batches = (now, trainer.meter.epoch_images), None, num_batches

    def on_step(self, trainer: Trainer, lr: float) -> None:
        p, m = trainer.progress, trainer.meter
        if self.num_batches and p.batch >= self.num_batches:
            self.trained = time.perf_counter()
        if not self.log_every or p.step % self.log_every:
            return
        images_per_s = m.images_per_s
        means = m.window()  # the losses leave the device here, once per line
        if self.env.is_main and means:
            parts = {f"loss_{k}": v for k, v in means.items() if k != "loss"}
            record = {"kind": "step", "epoch": p.epoch + 1, "step": p.step, "lr": lr, "loss": means["loss"], **parts,
                      "img_per_s": images_per_s}
            self._write(record)
            say(self._step_line(trainer, record))

    def _step_line(self, trainer: Trainer, record: dict) -> str:
        total, step = trainer.schedule.total_steps, record["step"]
        line = (f"step {step}/{total} (epoch {record['epoch']}/{self.epochs}): loss {record['loss']:.4f}, "
                f"lr {record['lr']:.3g}, {record['img_per_s']:.0f} img/s")
        if self.started is not None and step > self.started[1]:
            per_step = (time.perf_counter() - self.started[0]) / (step - self.started[1])
            line += f", ETA {clock_time(per_step * (total - step))}"
        return line

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict) -> None:
        p = trainer.progress
        # Every rank takes part in the gather; only rank 0 writes.
        bad = gather_lists([e for loader in self.loaders for e in getattr(loader, "bad_images", [])], self.env)
        record = {"kind": "epoch", "epoch": epoch, "step": p.step, "lr": trainer.schedule(p.step),
                  "train_loss": trainer.meter.epoch_loss, "seconds": round(self.clock.elapsed(), 2),
                  **metrics, **({"bad_images": len(bad)} if bad else {})}
        if not self.env.is_main:
            return
        self._write(record)
        say(self._epoch_line(trainer, epoch, record, metrics))
        if bad:
            print(bad_image_summary(epoch, bad, self.data_root), file=sys.stderr, flush=True)

    def _epoch_line(self, trainer: Trainer, epoch: int, record: dict, metrics: dict) -> str:
        parts = []
        if record["train_loss"] is not None:
            parts.append(f"train loss {record['train_loss']:.4f}")
        if self.epoch_started is not None:  # this process trained (part of) the epoch
            start, images = self.epoch_started
            seconds = (self.trained or time.perf_counter()) - start
            rate = (trainer.meter.epoch_images - images) / max(seconds, 1e-9)
            parts.append(f"{seconds:.1f} s, {rate:.0f} img/s")
        self.epoch_started = None
        line = f"epoch {epoch}/{self.epochs}: " + ", ".join(parts)
        if metrics:
            heads = "".join(f" {k} {metrics[k]:.4f}" for k in HEAD_METRICS if k in metrics)
            return (f"{line}{'; ' if parts else ''}val loss {metrics['loss']:.4f} top1 {metrics['top1']:.4f} "
                    f"top5 {metrics['top5']:.4f}{heads}")
        every = self.eval_every or self.epochs
        return f"{line} ({'no validation' if self.eval_every < 0 else f'validation every {every} epochs'})"


def save_weights(module: nn.Module, path) -> None:
    """Our checkpoint layout (architecture, preprocessing, class names in the header), written atomically; a
    module that is not a deit model (Python API) gets a plain safetensors state dict."""
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        try:
            save_checkpoint(module, tmp)
        except ValueError:
            save_file({k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}, str(tmp))


class Checkpointer(Hook):
    """The run directory's weights and training state: at every epoch end (``best`` when validation improved),
    every ``save_every`` optimizer steps inside an epoch, and at the first step boundary ``save_every_minutes``
    after the last save."""

    def __init__(self, run: RunDir, env: DistEnv, config: dict, clock: Clock, num_batches: int,
                 save_every: int = 0, save_every_minutes: float = 0.0) -> None:
        self.run, self.env, self.config, self.clock = run, env, config, clock
        self.num_batches, self.save_every, self.save_every_minutes = num_batches, save_every, save_every_minutes
        self.last_save = time.monotonic()

    def save(self, trainer: Trainer, metrics: dict | None = None) -> None:
        """Weights (last, best when ``metrics`` improved it, EMA) and the full training state; rank 0 only."""
        self.last_save = time.monotonic()
        if not self.env.is_main:
            return
        p = trainer.progress
        p.seconds = self.clock.elapsed()
        if metrics and metrics["top1"] > p.best_top1:
            p.best_top1, p.best_epoch = metrics["top1"], p.epoch
            save_weights(trainer.model, self.run.best)
        save_weights(trainer.model, self.run.last)
        if trainer.ema is not None:
            save_weights(trainer.ema.module, self.run.ema)
        self.run.save_state({**trainer.state_dict(), "config": self.config})

    def on_step(self, trainer: Trainer, lr: float) -> None:
        p = trainer.progress
        if p.batch >= self.num_batches:
            return  # the epoch's end saves anyway
        due_by_steps = self.save_every and p.step % self.save_every == 0
        due_by_time = self.save_every_minutes and time.monotonic() - self.last_save >= 60 * self.save_every_minutes
        if due_by_steps or due_by_time:
            self.save(trainer)

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict) -> None:
        self.save(trainer, metrics or None)


__all__ = ["Checkpointer", "Hook", "MetricsLog", "ProgressBar", "bad_image_summary", "clock_time", "save_weights",
           "say"]
