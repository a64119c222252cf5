"""Batch-level Mixup / CutMix with label smoothing folded into soft targets (the matching loss is the
``cross_entropy`` objective, ``deit.train.objectives``).

Semantics of timm's ``Mixup`` in batch mode (what DeiT trains with): with probability ``prob`` a batch is mixed;
then CutMix is chosen with probability ``switch_prob`` (when both alphas are > 0), λ ~ Beta(α, α) of the chosen
method, and every image is mixed with its mirror in the batch (``x.flip(0)``). CutMix pastes one box of side
``sqrt(1 - λ)`` times the image's, centred uniformly and clipped at the borders; λ is then corrected to the area
actually kept, so the targets weigh each label by its share of pixels. Targets are
``λ·smooth(y) + (1 - λ)·smooth(y.flip(0))`` with ``smooth`` putting ``1 - s + s/C`` on the label and ``s/C``
elsewhere. All randomness comes from the ``torch.Generator`` passed in (or torch's global one).
"""

from __future__ import annotations

import numpy as np
import torch


def smooth_one_hot(y: torch.Tensor, num_classes: int, smoothing: float = 0.0) -> torch.Tensor:
    """Integer labels -> float targets: ``1 - smoothing + smoothing/C`` on the label, ``smoothing/C`` elsewhere."""
    off = smoothing / num_classes
    out = torch.full((y.shape[0], num_classes), off, device=y.device, dtype=torch.float32)
    return out.scatter_(1, y.long().view(-1, 1), 1.0 - smoothing + off)


def _beta(alpha: float, generator: torch.Generator | None) -> float:
    # torch.distributions takes no generator: seed numpy's Beta sampler from the given torch generator.
    seed = int(torch.randint(0, 2**62, (), generator=generator))
    return float(np.random.default_rng(seed).beta(alpha, alpha))


def _uniform(generator: torch.Generator | None) -> float:
    return float(torch.rand((), generator=generator, dtype=torch.float64))


def cutmix_box(height: int, width: int, lam: float, generator: torch.Generator | None = None
               ) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1) of a box of side sqrt(1 - lam) of the image's, centre uniform, clipped to the image."""
    ratio = (1.0 - lam) ** 0.5
    cut_h, cut_w = int(height * ratio), int(width * ratio)
    cy = int(torch.randint(0, height, (), generator=generator))
    cx = int(torch.randint(0, width, (), generator=generator))
    y0, y1 = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, height)
    x0, x1 = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, width)
    return y0, y1, x0, x1


class Mixup:
    """``mixed_x, soft_targets = Mixup(...)(x, y, generator=None)``; ``x`` is mixed in place and returned.

    ``last_lam`` and ``last_mode`` ("mixup", "cutmix" or "none") describe the most recent call.
    """

    def __init__(self, mixup_alpha: float = 0.8, cutmix_alpha: float = 1.0, prob: float = 1.0,
                 switch_prob: float = 0.5, label_smoothing: float = 0.1, num_classes: int = 1000):
        if mixup_alpha < 0 or cutmix_alpha < 0:
            raise ValueError("mixup_alpha and cutmix_alpha must be >= 0")
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.mixup_alpha, self.cutmix_alpha = float(mixup_alpha), float(cutmix_alpha)
        self.prob, self.switch_prob = float(prob), float(switch_prob)
        self.label_smoothing = float(label_smoothing)
        self.num_classes = int(num_classes)
        self.last_lam, self.last_mode = 1.0, "none"

    def sample(self, generator: torch.Generator | None = None) -> tuple[float, bool]:
        """(λ, use_cutmix) for one batch."""
        if _uniform(generator) >= self.prob or (self.mixup_alpha <= 0 and self.cutmix_alpha <= 0):
            return 1.0, False
        if self.mixup_alpha > 0 and self.cutmix_alpha > 0:
            use_cutmix = _uniform(generator) < self.switch_prob
        else:
            use_cutmix = self.cutmix_alpha > 0
        return _beta(self.cutmix_alpha if use_cutmix else self.mixup_alpha, generator), use_cutmix

    def __call__(self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        if x.shape[0] % 2:
            raise ValueError(f"Mixup needs an even batch size (images are paired with the flipped batch), "
                             f"got {x.shape[0]}; use drop_last=True")
        lam, use_cutmix = self.sample(generator)
        mode = "none"
        if lam < 1.0:
            if use_cutmix:
                h, w = x.shape[-2:]
                y0, y1, x0, x1 = cutmix_box(h, w, lam, generator)
                x[..., y0:y1, x0:x1] = x.flip(0)[..., y0:y1, x0:x1]
                lam = 1.0 - (y1 - y0) * (x1 - x0) / float(h * w)
                mode = "cutmix"
            else:
                flipped = x.flip(0).mul_(1.0 - lam)  # a copy, taken before x changes
                x.mul_(lam).add_(flipped)
                mode = "mixup"
        self.last_lam, self.last_mode = lam, mode
        t = smooth_one_hot(y, self.num_classes, self.label_smoothing).to(x.device)
        return x, t * lam + t.flip(0) * (1.0 - lam)


def build_mixup(cfg, num_classes: int) -> Mixup | None:
    """The batch mixer a DataConfig asks for, or None when mixup and cutmix are both off."""
    if not cfg.mixup_active:
        return None
    return Mixup(cfg.mixup, cfg.cutmix, cfg.mixup_prob, cfg.mixup_switch_prob, cfg.smoothing, num_classes)
