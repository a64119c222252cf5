"""Distillation made visible (DeiT paper, section 5): how the class and distillation tokens relate, where they
attend, and how often each head agrees with the teacher and with the labels.

- token_similarity: per layer (the encoder input, then after each block) the mean cosine similarity between the
  class and distillation token embeddings over a data set (paper: ~0.06 at the input, ~0.93 after the last
  layer), and the per-class cosine similarity of the two heads' weight vectors.
- attention_maps / attention_rollout: last-layer attention of the cls and dist tokens to the patches, per head, and
  attention rollout (Abnar & Zuidema 2020: average the heads, add the identity for the residual, renormalise the
  rows, multiply through the layers).
- agreement: how often the student's cls head, dist head and their average agree with the teacher and with the
  labels (the paper's Table 4, as agreement rather than disagreement).

Plots go through matplotlib's Agg backend (files only, no display needed).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from deit.inference.evaluation import HeadTally
from deit.models.contract import has_two_heads, head_outputs

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _require_vit(model: nn.Module, what: str) -> None:
    if not all(hasattr(model, a) for a in ("embed", "blocks", "num_prefix_tokens")):
        raise ValueError(f"{what} needs a DeiT / ViT model (token embeddings and transformer blocks); "
                         f"got {type(model).__name__}")


def _require_distilled(model: nn.Module, what: str) -> None:
    _require_vit(model, what)
    if not has_two_heads(model):
        raise ValueError(f"{what} needs a distilled model (one with a distillation token, e.g. "
                         "deit_tiny_distilled_patch16_224 or the student of `deit demo`); this one has only the "
                         "class token")


def _check_max_images(max_images: int | None) -> None:
    if max_images is not None and max_images < 1:
        raise ValueError(f"max_images must be >= 1 (or None for all), got {max_images}")


def _batches(data: Iterable) -> Iterable[tuple[torch.Tensor, torch.Tensor | None]]:
    """(images, labels or None) from a loader yielding tensors or (images, labels, ...) tuples."""
    for item in data:
        if isinstance(item, torch.Tensor):
            yield item, None
        else:
            yield item[0], (item[1] if len(item) > 1 else None)


# ------------------------------------------------------------------------------------------- token similarity
@dataclass
class TokenSimilarity:
    layers: list[str]  # "input", "block 1", ..., "block L"
    cls_dist_cosine: list[float]  # mean over images, one per entry of `layers`
    final_norm_cosine: float  # after the final LayerNorm: what the two heads read
    token_parameter_cosine: float  # the learned cls_token vs dist_token vectors themselves
    head_weight_cosine_mean: float  # mean over classes of cos(head.weight[c], head_dist.weight[c])
    head_weight_cosine: list[float]  # per class
    num_images: int

    def to_dict(self) -> dict:
        return asdict(self)

    def format(self) -> str:
        lines = [f"cosine similarity of the class and distillation token embeddings ({self.num_images} images)"]
        lines += [f"  {name:<10} {cos:+.4f}" for name, cos in zip(self.layers, self.cls_dist_cosine, strict=True)]
        lines.append(f"  {'final norm':<10} {self.final_norm_cosine:+.4f}")
        lines.append(f"learned tokens (cls_token vs dist_token parameters): {self.token_parameter_cosine:+.4f}")
        lines.append(f"head vs head_dist weight vectors, mean over {len(self.head_weight_cosine)} classes: "
                     f"{self.head_weight_cosine_mean:+.4f}")
        return "\n".join(lines)


def head_weight_cosine(model: nn.Module) -> torch.Tensor:
    """Per class, the cosine similarity of the class head's and the distillation head's weight vectors."""
    _require_distilled(model, "head similarity")
    return F.cosine_similarity(model.head.weight.detach().float(), model.head_dist.weight.detach().float(), dim=-1)


@torch.inference_mode()
def token_similarity(model: nn.Module, data: Iterable, device: str | torch.device = "cpu",
                     max_images: int | None = None) -> TokenSimilarity:
    """Mean over the images of ``data`` of cos(cls token, dist token) at the encoder input and after each block."""
    _require_distilled(model, "token similarity")
    _check_max_images(max_images)
    model = model.eval().to(device)
    sums: torch.Tensor | None = None
    final_sum, n = 0.0, 0
    for images, _ in _batches(data):
        if max_images is not None:
            images = images[: max_images - n]
        states = model.forward_intermediates(images.to(device))
        per_layer = [F.cosine_similarity(x[:, 0], x[:, 1], dim=-1) for x in states]
        normed = model.norm(states[-1])
        final_sum += F.cosine_similarity(normed[:, 0], normed[:, 1], dim=-1).double().sum().item()
        batch = torch.stack(per_layer).double().sum(dim=1).cpu()  # (L + 1,)
        sums = batch if sums is None else sums + batch
        n += images.shape[0]
        if max_images is not None and n >= max_images:
            break
    if not n:
        raise ValueError("token similarity got no images: the data set or split is empty")
    heads = head_weight_cosine(model).cpu()
    tokens = F.cosine_similarity(model.cls_token.detach().flatten().float(),
                                 model.dist_token.detach().flatten().float(), dim=0)
    return TokenSimilarity(
        layers=["input"] + [f"block {i + 1}" for i in range(len(model.blocks))],
        cls_dist_cosine=(sums / n).tolist(),
        final_norm_cosine=final_sum / n,
        token_parameter_cosine=float(tokens),
        head_weight_cosine_mean=float(heads.mean()),
        head_weight_cosine=heads.tolist(),
        num_images=n,
    )


def plot_token_similarity(result: TokenSimilarity, path: str | os.PathLike, title: str | None = None) -> None:
    fig = _figure(figsize=(11, 4))
    ax, ax2 = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    xs = np.arange(len(result.layers))
    ax.plot(xs, result.cls_dist_cosine, marker="o", label="cls vs dist token")
    ax.axhline(result.final_norm_cosine, color="tab:gray", ls="--", lw=1,
               label=f"after final norm ({result.final_norm_cosine:.3f})")
    ax.set_xticks(xs, ["in"] + [str(i) for i in range(1, len(xs))])
    ax.set_xlabel("layer (encoder input, then after each block)")
    ax.set_ylabel("mean cosine similarity")
    ax.set_ylim(min(-0.05, min(result.cls_dist_cosine) - 0.05), 1.05)
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    ax.set_title(title or f"class vs distillation token ({result.num_images} images)")
    ax2.bar(np.arange(len(result.head_weight_cosine)), result.head_weight_cosine, color="tab:orange")
    ax2.axhline(result.head_weight_cosine_mean, color="k", lw=1, label=f"mean {result.head_weight_cosine_mean:.3f}")
    ax2.set_xlabel("class")
    ax2.set_ylabel("cos(head.weight[c], head_dist.weight[c])")
    ax2.set_ylim(min(-0.05, min(result.head_weight_cosine) - 0.05), 1.05)
    ax2.legend(loc="best")
    ax2.set_title("class head vs distillation head weights")
    _save(fig, path)


# ----------------------------------------------------------------------------------------------- attention
@torch.inference_mode()
def attention_probs(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """Softmax attention of every block, each (B, H, N, N); rows are queries and sum to 1."""
    _require_vit(model, "attention maps")
    states = model.forward_intermediates(x)  # the input of block i is states[i]
    return [blk.attn.attention_probs(blk.norm1(h)) for blk, h in zip(model.blocks, states, strict=False)]


def attention_rollout(probs: list[torch.Tensor]) -> torch.Tensor:
    """Abnar & Zuidema rollout (B, N, N): per layer average the heads, add the identity (the residual path),
    renormalise the rows, then multiply the layers' matrices from the first to the last."""
    rollout = None
    for p in probs:
        a = p.mean(dim=1)
        a = a + torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
        a = a / a.sum(dim=-1, keepdim=True)
        rollout = a if rollout is None else a @ rollout
    if rollout is None:
        raise ValueError("attention rollout needs at least one layer")
    return rollout


@dataclass
class AttentionMaps:
    """Attention of each prefix token (cls, then dist for a distilled model) to the patch grid."""

    tokens: list[str]  # "cls", "dist"
    last_layer: torch.Tensor  # (T, H, gh, gw): per head, last block
    rollout: torch.Tensor  # (T, gh, gw)
    grid: tuple[int, int]


def attention_maps(model: nn.Module, image: torch.Tensor) -> AttentionMaps:
    """Maps for one preprocessed image (3, S, S) or a batch of one."""
    x = image.unsqueeze(0) if image.ndim == 3 else image
    if x.shape[0] != 1:
        raise ValueError(f"attention maps are drawn for one image; got a batch of {x.shape[0]}")
    probs = attention_probs(model, x)
    prefix = model.num_prefix_tokens
    patch = model.patch_embed.patch_size
    grid = (x.shape[-2] // patch, x.shape[-1] // patch)
    last = probs[-1][0, :, :prefix, prefix:]  # (H, T, P)
    roll = attention_rollout(probs)[0, :prefix, prefix:]  # (T, P)
    names = ["cls", "dist"][:prefix]
    return AttentionMaps(
        tokens=names,
        last_layer=last.permute(1, 0, 2).reshape(prefix, last.shape[0], *grid).cpu(),
        rollout=roll.reshape(prefix, *grid).cpu(),
        grid=grid,
    )


def attention_file_name(image: str | os.PathLike, checkpoint: str | os.PathLike) -> str:
    """The default name of an attention map's PNG: the image's name and a digest of where the image and the
    checkpoint are, so that images of one name in different folders, or one image under two checkpoints, never
    share a file, and the same command always writes the same one."""
    where = "\0".join(os.path.realpath(os.fspath(p)) for p in (image, checkpoint))
    stem = os.path.splitext(os.path.basename(image))[0]
    return f"attention_{stem}_{hashlib.sha1(where.encode()).hexdigest()[:8]}.png"


def denormalize(image: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """A normalised (3, S, S) tensor back to an (S, S, 3) float image in [0, 1] for display."""
    m = torch.tensor(mean, dtype=image.dtype).view(-1, 1, 1)
    s = torch.tensor(std, dtype=image.dtype).view(-1, 1, 1)
    return (image.cpu() * s + m).clamp(0, 1).permute(1, 2, 0).numpy()


def plot_attention(maps: AttentionMaps, picture: np.ndarray, path: str | os.PathLike, title: str | None = None,
                   alpha: float = 0.6) -> None:
    """One PNG: a row per token (cls, dist); columns: the image, each last-layer head, the head mean, rollout.
    Each map is upsampled to the image and scaled to its own [0, 1] range (the colours compare places, not maps)."""
    heads = maps.last_layer.shape[1]
    cols = heads + 3
    rows = len(maps.tokens)
    fig = _figure(figsize=(1.9 * cols, 2.0 * rows + 0.4))
    axes = fig.subplots(rows, cols, squeeze=False)
    h, w = picture.shape[:2]
    for r, token in enumerate(maps.tokens):
        panels = [(None, "image")]
        panels += [(maps.last_layer[r, i], f"last layer, head {i + 1}") for i in range(heads)]
        panels += [(maps.last_layer[r].mean(dim=0), "last layer, mean"), (maps.rollout[r], "rollout")]
        for c, (m, label) in enumerate(panels):
            ax = axes[r, c]
            ax.imshow(picture, extent=(0, w, h, 0))
            if m is not None:
                m = m.float()
                m = (m - m.min()) / (m.max() - m.min() + 1e-12)
                ax.imshow(m.numpy(), cmap="jet", alpha=alpha, extent=(0, w, h, 0), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(label if r == 0 else "", fontsize=8)
            if c == 0:
                ax.set_ylabel(f"{token} token", fontsize=10)
    fig.suptitle(title or "attention of the class and distillation tokens to the patches", fontsize=10)
    _save(fig, path)


# ----------------------------------------------------------------------------------------------- agreement
AGREEMENT_ROWS: tuple[str, ...] = ("cls", "dist", "avg")


@dataclass
class Agreement:
    num_images: int
    teacher_accuracy: float | None  # None when the data has no labels
    accuracy: dict[str, float | None]  # per student head: agreement with the labels (= top-1 accuracy)
    teacher_agreement: dict[str, float]  # per student head: agreement with the teacher's top-1
    cls_dist_agreement: float  # the two student heads with each other

    def to_dict(self) -> dict:
        return asdict(self)

    def format(self) -> str:
        def pct(v: float | None) -> str:
            return "-" if v is None else f"{100 * v:6.2f}%"

        lines = [f"agreement of the student's heads on {self.num_images} images (top-1, %)",
                 f"{'':<22}{'with labels':>13}{'with teacher':>14}"]
        label = {"cls": "student cls head", "dist": "student dist head", "avg": "student cls+dist avg"}
        for row in AGREEMENT_ROWS:
            lines.append(f"{label[row]:<22}{pct(self.accuracy[row]):>13}{pct(self.teacher_agreement[row]):>14}")
        lines.append(f"{'teacher':<22}{pct(self.teacher_accuracy):>13}{pct(1.0):>14}")
        lines.append(f"student cls head vs dist head: {pct(self.cls_dist_agreement).strip()}")
        return "\n".join(lines)


@torch.inference_mode()
def agreement(student: nn.Module, teacher: nn.Module, data: Iterable, teacher_data: Iterable | None = None,
              device: str | torch.device = "cpu", max_images: int | None = None) -> Agreement:
    """Top-1 agreement of the student's heads with the teacher and the labels.

    ``data`` yields (images, labels) preprocessed for the student; ``teacher_data``, the same images in the same
    order preprocessed for the teacher, when the two models expect different inputs (default: ``data``)."""
    _require_distilled(student, "the agreement analysis")
    _check_max_images(max_images)
    student, teacher = student.eval().to(device), teacher.eval().to(device)
    tally = HeadTally(AGREEMENT_ROWS, labels=True, teacher=True)
    n, labelled = 0, True
    teacher_iter = iter(_batches(teacher_data)) if teacher_data is not None else None
    for images, labels in _batches(data):
        t_images = images if teacher_iter is None else next(teacher_iter)[0]
        if max_images is not None:
            keep = max_images - n
            images, t_images = images[:keep], t_images[:keep]
            labels = labels[:keep] if labels is not None else None
        if t_images.shape[0] != images.shape[0]:
            raise ValueError("the student's and the teacher's data streams are out of step")
        heads = head_outputs(student, images.to(device))
        t_logits = teacher(t_images.to(device))
        if t_logits.shape[-1] != heads["cls"].shape[-1]:
            raise ValueError(f"the teacher predicts {t_logits.shape[-1]} classes but the student "
                             f"{heads['cls'].shape[-1]}: they must be trained on the same label set")
        if labels is None or labels.ndim != 1:  # no labels, or soft targets: agreement with the teacher only
            labelled, labels = False, None
        tally.add(heads, labels.to(device) if labels is not None else None, t_logits.argmax(-1))
        tally.add_count("cls_dist", float((heads["cls"].argmax(-1) == heads["dist"].argmax(-1)).sum()))
        n += images.shape[0]
        if max_images is not None and n >= max_images:
            break
    if not n:
        raise ValueError("the agreement analysis got no images: the data set or split is empty")
    counts = tally.totals()
    return Agreement(
        num_images=n,
        teacher_accuracy=counts["teacher_top1"] / n if labelled else None,
        accuracy={k: (counts[f"top1/{k}"] / n if labelled else None) for k in AGREEMENT_ROWS},
        teacher_agreement={k: counts[f"agreement/{k}"] / n for k in AGREEMENT_ROWS},
        cls_dist_agreement=counts["cls_dist"] / n,
    )


# ----------------------------------------------------------------------------------------------- helpers
def _figure(figsize: tuple[float, float]) -> Figure:
    """A matplotlib Figure on the Agg canvas: no pyplot, no display, no global backend switch."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | os.PathLike) -> None:
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def write_json(obj: dict, path: str | os.PathLike) -> None:
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2)
