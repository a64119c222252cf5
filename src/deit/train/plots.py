"""``deit plot RUN_DIR``: PNG curves of a run's metrics.jsonl (loss, lr, top-1 per head)."""

from __future__ import annotations

from pathlib import Path

from deit.train.checkpointing import RunDir

HEADS = (("top1", "average / model"), ("top1_cls", "class head"), ("top1_dist", "distillation head"),
         ("teacher_top1", "teacher"), ("agreement", "student-teacher agreement"), ("ema_top1", "EMA"))


def plot_run(run_dir: str | Path) -> list[Path]:
    """Write ``RUN_DIR/plots/{loss,lr,top1}.png``; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run = RunDir(run_dir)
    if not run.metrics.exists():
        raise FileNotFoundError(f"{run.root} has no metrics.jsonl: not a run directory")
    records = run.read_metrics()
    steps = [r for r in records if r.get("kind") == "step"]
    epochs = [r for r in records if r.get("kind") == "epoch"]
    if not steps and not epochs:
        raise ValueError(f"{run.metrics} holds no step or epoch metrics yet")
    run.plots.mkdir(parents=True, exist_ok=True)
    written = []

    def finish(fig, ax, name: str, xlabel: str, ylabel: str) -> None:
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
        fig.tight_layout()
        path = run.plots / f"{name}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)

    fig, ax = plt.subplots(figsize=(6, 4))
    if steps:
        ax.plot([r["step"] for r in steps], [r["loss"] for r in steps], label="train (per log window)", alpha=0.7)
    train_ep = [r for r in epochs if r.get("train_loss") is not None]
    if train_ep:
        ax.plot([r["step"] for r in train_ep], [r["train_loss"] for r in train_ep], "o-", label="train (epoch)")
    val_ep = [r for r in epochs if "loss" in r]  # epochs without validation (eval_every) have no val loss
    if val_ep:
        ax.plot([r["step"] for r in val_ep], [r["loss"] for r in val_ep], "s-", label="val")
    ax.set_title(f"loss — {run.root.name}")
    finish(fig, ax, "loss", "optimizer step", "loss")

    fig, ax = plt.subplots(figsize=(6, 4))
    lr_points = sorted({(r["step"], r["lr"]) for r in steps + epochs if "lr" in r})
    ax.plot([s for s, _ in lr_points], [v for _, v in lr_points])
    ax.set_title(f"learning rate — {run.root.name}")
    finish(fig, ax, "lr", "optimizer step", "lr")

    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label in HEADS:
        pts = [(r["epoch"], r[key]) for r in epochs if key in r]
        if pts:
            ax.plot([e for e, _ in pts], [v for _, v in pts], "o-", label=label)
    ax.set_ylim(0, 1.0)
    ax.set_title(f"validation top-1 — {run.root.name}")
    finish(fig, ax, "top1", "epoch", "top-1 (fraction)")
    return written


__all__ = ["plot_run"]
