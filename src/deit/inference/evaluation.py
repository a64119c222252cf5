"""Evaluation of every head of a model: the one loop behind training's validation, ``deit eval``, the study's
per-head rows and the agreement analysis.

For each batch the model's predictions come from ``deit.models.contract.head_outputs`` (a two-head model: its
class head, distillation head and their average; any other model: its one output) and are counted by a
:class:`HeadTally`: top-1 and top-5 hits against the labels, and top-1 agreement with a teacher's prediction.
Under ``torch.distributed`` the counts are summed over ranks, and with ``deit.data``'s eval sampler every sample is
counted exactly once, so the figures equal a single-process run's.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from deit.checkpoints.factory import load_model
from deit.data import ImageDataset, Loader, build_dataset, build_loader
from deit.data.formats import data_config_for
from deit.inference.teacher import Teacher
from deit.models.contract import SINGLE_HEAD, head_names, head_outputs, prediction_key
from deit.models.fusion import cpu_inference_model
from deit.models.preprocessing import Preprocessing
from deit.models.vit_blocks import set_attn_impl
from deit.runtime.distributed import DistEnv, all_reduce_sum, cleanup, init_distributed
from deit.runtime.precision import autocast, precision_line

TeacherFn = Callable[[torch.Tensor], torch.Tensor]
# Test-time augmentation: "flip" averages each head's logits over the image and its mirror image (as airbench
# evaluates its CIFAR-10 nets); the teacher's prediction, for the agreement, is taken on the image as given.
TTA_MODES: tuple[str, ...] = ("none", "flip")


def tta_head_outputs(model: nn.Module, x: torch.Tensor, tta: str = "none") -> dict[str, torch.Tensor]:
    """``head_outputs`` of ``x``, with ``tta="flip"`` averaged with those of ``x`` flipped left-right."""
    if tta not in TTA_MODES:
        raise ValueError(f"tta {tta!r}: use one of {', '.join(TTA_MODES)}")
    heads = head_outputs(model, x)
    if tta == "flip":
        mirrored = head_outputs(model, x.flip(-1))
        heads = {name: (logits + mirrored[name]) / 2 for name, logits in heads.items()}
    return heads


def topk_hits(logits: torch.Tensor, target: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> list[float]:
    """How many rows have their label among the top-k logits, for each k (k capped at the class count)."""
    maxk = min(max(ks), logits.shape[1])
    pred = logits.topk(maxk, dim=1).indices
    hit = pred.eq(target[:, None])
    return [float(hit[:, : min(k, maxk)].any(dim=1).sum()) for k in ks]


class HeadTally:
    """Running counts per head over batches: ``top1``/``top5`` hits, ``agreement`` with a teacher, samples."""

    def __init__(self, heads: tuple[str, ...] = (), labels: bool = True, teacher: bool = False) -> None:
        # Every key a rank may count, declared up front: ranks then reduce the same list even if one saw no batch.
        self.sums: dict[str, float] = defaultdict(float, n=0.0)
        for head in heads:
            for metric in ("top1", "top5") if labels else ():
                self.sums[f"{metric}/{head}"] = 0.0
            if teacher:
                self.sums[f"agreement/{head}"] = 0.0
        if teacher and labels:
            self.sums["teacher_top1"] = 0.0

    def add(self, heads: dict[str, torch.Tensor], labels: torch.Tensor | None,
            teacher_pred: torch.Tensor | None = None) -> None:
        n = next(iter(heads.values())).shape[0]
        self.sums["n"] += n
        for name, logits in heads.items():
            if labels is not None:
                top1, top5 = topk_hits(logits, labels)
                self.sums[f"top1/{name}"] += top1
                self.sums[f"top5/{name}"] += top5
            if teacher_pred is not None:
                self.sums[f"agreement/{name}"] += float((logits.argmax(dim=1) == teacher_pred).sum())
        if teacher_pred is not None and labels is not None:
            self.sums["teacher_top1"] += float((teacher_pred == labels).sum())

    def add_count(self, key: str, value: float) -> None:
        self.sums[key] += value

    def totals(self, env: DistEnv | None = None) -> dict[str, float]:
        """The counts summed over ranks (every rank must have seen the same heads)."""
        keys = sorted(self.sums)  # the same order on every rank
        return dict(zip(keys, all_reduce_sum([self.sums[k] for k in keys], env or DistEnv()), strict=True))


def head_metrics(totals: dict[str, float], main: str) -> dict[str, float]:
    """Fractions from :meth:`HeadTally.totals`: ``top1``/``top5``/``agreement`` of the ``main`` head (what the
    model predicts), and ``top1_cls``, ``agreement_dist``, ... of each head of a two-head model."""
    n = totals["n"]
    heads = list(dict.fromkeys(key.partition("/")[2] for key in totals if "/" in key))
    out: dict[str, float] = {}
    for metric in ("top1", "top5"):
        if f"{metric}/{main}" in totals:
            out[metric] = totals[f"{metric}/{main}"] / n
    for head in heads:
        for metric in ("top1", "top5"):
            if head != SINGLE_HEAD and f"{metric}/{head}" in totals:
                out[f"{metric}_{head}"] = totals[f"{metric}/{head}"] / n
    if "teacher_top1" in totals:
        out["teacher_top1"] = totals["teacher_top1"] / n
    if f"agreement/{main}" in totals:
        out["agreement"] = totals[f"agreement/{main}"] / n
    for head in heads:
        if head != SINGLE_HEAD and f"agreement/{head}" in totals:
            out[f"agreement_{head}"] = totals[f"agreement/{head}"] / n
    return out


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable,
    env: DistEnv | None = None,
    teacher: TeacherFn | None = None,
    amp: str = "none",
    tta: str = "none",
) -> dict:
    """Loss and top-1/top-5 of every head over the whole loader, summed over ranks (each sample counted once).

    Keys: ``loss``, ``top1``, ``top5`` (the model's prediction: for a two-head model the head its ``head_mode``
    names, the average by default); a two-head model adds ``top1_cls``, ``top5_cls``, ``top1_dist``, ``top5_dist``,
    ``top1_avg``, ``top5_avg``; with a teacher (images -> logits, e.g. a ``deit.inference.teacher.Teacher``),
    ``teacher_top1`` and ``agreement`` (the prediction's top-1 equals the teacher's), and per head
    ``agreement_cls`` ... for a two-head model. All accuracies are fractions in [0, 1]; ``num_samples`` the count.
    ``tta`` (one of ``TTA_MODES``): test-time augmentation of the model's predictions.

    On the CPU without autocast a ViT runs as ``deit.models.fusion.cpu_inference_model`` makes it (oneDNN's fused
    linear: the same logits, faster), built anew from the current weights for each call.
    """
    env = env or DistEnv()
    was_training = model.training
    model.eval()
    runner = cpu_inference_model(model) if env.device.type == "cpu" and amp == "none" else model
    main = prediction_key(model)
    tally = HeadTally(head_names(model), labels=True, teacher=teacher is not None)
    tally.add_count("loss", 0.0)
    for x, y in loader:
        x = x.to(env.device, non_blocking=True)
        y = y.to(env.device, non_blocking=True)
        with autocast(env.device, amp):
            heads = tta_head_outputs(runner, x, tta)
        tally.add_count("loss", float(F.cross_entropy(heads[main], y, reduction="sum")))
        tally.add(heads, y, teacher(x).argmax(dim=1) if teacher is not None else None)
    model.train(was_training)
    totals = tally.totals(env)
    if not totals.get("n"):
        raise ValueError("the evaluation loader is empty: the validation split has no images")
    metrics = {"loss": totals["loss"] / totals["n"], **head_metrics(totals, main)}
    metrics["num_samples"] = int(totals["n"])
    return metrics


def eval_loader(data: str, model: nn.Module, *, split: str = "val", batch_size: int = 64, workers: int = 0,
                overrides: Sequence[str] = (), dataset: ImageDataset | None = None,
                distributed: tuple[int, int] | bool = False) -> tuple[Loader, ImageDataset]:
    """The eval-transform loader of ``--data`` (a built-in name or a path) for ``model``'s own preprocessing, in
    data set order; ``dataset`` reuses an already built one (the same images for a second model)."""
    pre = getattr(model, "preprocessing", None) or Preprocessing()
    cfg = data_config_for(data, list(overrides), batch_size=batch_size, num_workers=workers, img_size=pre.input_size)
    if dataset is None:
        dataset = build_dataset(cfg, split)
    n_model = getattr(model, "num_classes", None)
    if n_model is not None and n_model != len(dataset.classes):
        raise ValueError(f"the checkpoint predicts {n_model} classes but {data} has {len(dataset.classes)}")
    loader = build_loader(cfg, split, preprocessing=pre, dataset=dataset, augment=False, distributed=distributed)
    return loader, dataset


def evaluate_checkpoint(checkpoint: str, data: str, *, architecture: str | None = None, split: str = "val",
                        batch_size: int = 64, workers: int = 2, teacher: str | None = None,
                        teacher_architecture: str | None = None, device: str = "auto", amp: str = "auto",
                        overrides: Sequence[str] = (), tta: str = "none", attn_impl: str = "auto",
                        log: Callable[[str], None] | None = None) -> dict:
    """:func:`evaluate` of a checkpoint file on ``data`` (``deit eval``); under torchrun every rank calls it and
    the metrics count every sample once. A ``teacher`` checkpoint adds its top-1 and the agreement. ``amp``:
    "auto" resolves as training resolves it (so a run's checkpoint scores what the run measured); ``log`` is told
    the precision line on rank 0. ``attn_impl``: the student's attention kernel (``deit.models.attention``)."""
    env = init_distributed(device)
    loader = None
    try:
        amp, line = precision_line(amp, env.device)
        model = load_model(checkpoint, architecture).to(env.device)
        set_attn_impl(model, attn_impl)
        loader, _ = eval_loader(data, model, split=split, batch_size=batch_size, workers=workers,
                                overrides=overrides, distributed=(env.world_size, env.rank))
        frozen = Teacher(load_model(teacher, teacher_architecture).to(env.device)) if teacher else None
        if log is not None and env.is_main:  # once the inputs are known good: a bad one gets its error alone
            log(line)
        return evaluate(model, loader, env, frozen, amp, tta)
    finally:
        if loader is not None:
            loader.close()
        cleanup(env)


__all__ = ["TTA_MODES", "HeadTally", "TeacherFn", "eval_loader", "evaluate", "evaluate_checkpoint", "head_metrics",
           "topk_hits", "tta_head_outputs"]
