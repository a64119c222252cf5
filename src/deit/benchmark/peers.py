"""The peer: HF transformers' DeiT / ViT carrying the *same weights*, converted by ``deit.checkpoints.export_hf``.

transformers is an optional, test-time dependency of this package: without it the benchmark still measures our
model and leaves the peer columns empty. Each twin is checked against our model's logits before it is timed, so a
conversion slip cannot pass for a speed difference.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

ATTN_IMPLEMENTATIONS: tuple[str, ...] = ("eager", "sdpa")


@dataclass
class Twin:
    """One HF model: its attention implementation, the module, and the max |logit difference| from ours."""

    attn_implementation: str
    module: nn.Module
    max_abs_diff: float

    @property
    def label(self) -> str:
        return f"hf-{self.attn_implementation}"

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(pixel_values=x).logits

    def heads(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """What our ``forward_heads`` returns: (cls, dist) logits of a distilled model, else the logits."""
        out = self.module(pixel_values=x)
        if hasattr(out, "distillation_logits"):
            return out.cls_logits, out.distillation_logits
        return out.logits


def transformers_version() -> str | None:
    try:
        import transformers
    except ImportError:
        return None
    return transformers.__version__


def load_twins(model: nn.Module, device: torch.device, check_input: torch.Tensor) -> list[Twin]:
    """HF twins of ``model`` (one per attention implementation), in ``model``'s mode, on ``device``."""
    import transformers

    from deit.checkpoints import export_hf

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    twins = []
    with tempfile.TemporaryDirectory(prefix="deit-bench-hf-") as tmp:
        export_hf(model, tmp)
        architecture = json.loads((Path(tmp) / "config.json").read_text())["architectures"][0]
        hf_class = getattr(transformers, architecture)
        for impl in ATTN_IMPLEMENTATIONS:
            module = hf_class.from_pretrained(tmp, attn_implementation=impl).to(device).train(model.training)
            twins.append(Twin(impl, module, _max_abs_diff(model, module, check_input)))
    return twins


@torch.no_grad()
def _max_abs_diff(ours: nn.Module, theirs: nn.Module, x: torch.Tensor) -> float:
    was_training = ours.training
    ours.eval()
    theirs.eval()
    try:
        return (ours(x).float() - theirs(pixel_values=x).logits.float()).abs().max().item()
    finally:
        ours.train(was_training)
        theirs.train(was_training)



__all__ = ["ATTN_IMPLEMENTATIONS", "Twin", "load_twins", "transformers_version"]
