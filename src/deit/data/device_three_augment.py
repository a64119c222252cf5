"""DeiT III's 3-Augment and the colour jitter (``deit.data.three_augment``) as device steps of
``data.device_augment``: the worker draws what the worker path's transform draws, from the same generator in the
same order (``ThreeAugment.get_params``, ``ColorJitter.get_params``); the device applies it to the batch, op by op,
the images of each op gathered at collate time (no host synchronisation).

The ops are Pillow's arithmetic, so the device stage equals the worker path bit for bit (tests/data/
test_device_three_augment.py): grayscale is Convert.c's fixed-point luma, solarize a comparison, the jitter's
enhancers the blends of ``deit.data.device_ops``. The Gaussian blur is Pillow's (BoxBlur.c): three passes of an
"extended" box filter along the rows, then three down the columns, each pass rounded to 8 bits; the box's integer
radius and 8.24 fixed-point weights come from Pillow's float32 formula, computed in the worker (numpy float32,
as C float), so the device only adds and shifts integers.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from deit.data.device_ops import TORCH_OPS, luminance
from deit.data.device_steps import DeviceStep, Params, Pending
from deit.data.three_augment import JITTER_OPS, SOLARIZE_THRESHOLD, ColorJitter, ThreeAugment

BLUR_PASSES = 3  # Pillow's gaussian_blur default
_F32 = np.float32
_ONE = 1 << 24  # the box weights' fixed point


def box_radius(radius: float, passes: int = BLUR_PASSES) -> np.float32:
    """Pillow's ``_gaussian_blur_radius``: the extended box radius whose ``passes`` passes have the Gaussian's
    variance, in C's precisions (float32, but sqrt and floor in double)."""
    r = _F32(radius)  # the radius crosses to C as a float
    sigma2 = r * r / _F32(passes)
    length = _F32(math.sqrt(12.0 * float(sigma2) + 1.0))
    whole = _F32(math.floor((float(length) - 1.0) / 2.0))
    frac = (_F32(2) * whole + _F32(1)) * (whole * (whole + _F32(1)) - _F32(3) * sigma2)
    frac /= _F32(6) * (sigma2 - (whole + _F32(1)) * (whole + _F32(1)))
    return whole + frac


def box_weights(radius: float) -> tuple[int, int, int]:
    """(integer radius, weight of the 2r+1 inner taps, weight of the two far taps) of one box pass, in 8.24
    fixed point, as ImagingHorizontalBoxBlur computes them (UINT32 arithmetic)."""
    f = box_radius(radius)
    r = int(f)
    ww = int(_F32(_ONE) / (f * _F32(2) + _F32(1)))
    return r, ww, ((_ONE - (2 * r + 1) * ww) % (1 << 32)) // 2


def _box_pass(x: torch.Tensor, r: torch.Tensor, ww: torch.Tensor, fw: torch.Tensor, reach: int) -> torch.Tensor:
    """One box pass along the last axis of ``x`` (int64, N, C, H, W), the edges repeated outwards; per image the
    radius ``r`` (<= ``reach``) and weights. Each value: the 2r+1 taps around it times ``ww``, plus the two next
    ones times ``fw``, rounded to 8 bits."""
    pad, length = reach + 1, x.shape[-1]
    p = torch.cat([x[..., :1].expand(*x.shape[:-1], pad), x, x[..., -1:].expand(*x.shape[:-1], pad)], dim=-1)

    def tap(offset: int) -> torch.Tensor:
        return p[..., pad + offset: pad + offset + length]

    out, acc, r, ww, fw = x, tap(0), r.view(-1, 1, 1, 1), ww.view(-1, 1, 1, 1), fw.view(-1, 1, 1, 1)
    for radius in range(reach + 1):
        if radius:
            acc = acc + tap(-radius) + tap(radius)
        rounded = (acc * ww + (tap(-radius - 1) + tap(radius + 1)) * fw + (1 << 23)) >> 24
        out = torch.where(r == radius, rounded, out)
    return out


def gaussian_blur(x: torch.Tensor, r: torch.Tensor, ww: torch.Tensor, fw: torch.Tensor, reach: int,
                  passes: int = BLUR_PASSES) -> torch.Tensor:
    """``img.filter(ImageFilter.GaussianBlur(radius))`` per image of ``x`` (uint8, N, C, H, W), given each image's
    ``box_weights(radius)`` as tensors (``reach``: the largest r of the batch, a host int)."""
    y = x.to(torch.int64)
    for _ in range(passes):
        y = _box_pass(y, r, ww, fw, reach)
    y = y.transpose(-1, -2)
    for _ in range(passes):
        y = _box_pass(y, r, ww, fw, reach)
    return y.transpose(-1, -2).to(torch.uint8).contiguous()


def _groups(keys: list[list[int]]) -> list[tuple[int, int, torch.Tensor]]:
    """(slot, key, the images with that key in that slot) for ``keys[image][slot]``."""
    members: dict[tuple[int, int], list[int]] = {}
    for i, row in enumerate(keys):
        for slot, key in enumerate(row):
            members.setdefault((slot, key), []).append(i)
    return [(slot, key, torch.tensor(idx)) for (slot, key), idx in sorted(members.items())]


class ThreeAugmentStep(DeviceStep):
    """One of grayscale, solarize, Gaussian blur per image: the worker draws (op, radius) as ``ThreeAugment``
    does and, for a blur, the box weights; the device runs each op on its images."""

    name = "three_augment"

    def __init__(self, three: ThreeAugment):
        self.three = three

    def draw(self, pending: Pending, rng: np.random.Generator) -> Params:
        op, radius = self.three.get_params(rng)
        return {"op": op, "box": box_weights(radius)}

    def collate(self, draws: list[Params]) -> Params:
        blurred = [d["box"] for d in draws if d["op"] == 2]
        return {"groups": _groups([[d["op"]] for d in draws]), "box": torch.tensor([d["box"] for d in draws]),
                "reach": max((r for r, _, _ in blurred), default=0)}

    def apply(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        for _, op, idx in params["groups"]:
            images = x.index_select(0, idx)
            if op == 0:
                out = luminance(images).to(torch.uint8).expand_as(images)
            elif op == 1:
                out = torch.where(images < SOLARIZE_THRESHOLD, images, 255 - images)
            else:
                r, ww, fw = params["box"].index_select(0, idx).unbind(1)
                out = gaussian_blur(images, r, ww, fw, params["reach"])
            x = x.index_copy(0, idx, out)
        return x


# ColorJitter's op index -> the device twin of its PIL enhancer (deit.data.three_augment._ENHANCERS)
_JITTER_TWINS = tuple(TORCH_OPS[{"saturation": "color"}.get(name, name)] for name in JITTER_OPS)


class ColorJitterStep(DeviceStep):
    """The colour jitter: the worker draws (order, factors) as ``ColorJitter`` does; the device runs the three
    enhancers slot by slot, each image's op of a slot with its factor."""

    name = "color_jitter"

    def __init__(self, jitter: ColorJitter):
        self.jitter = jitter

    def draw(self, pending: Pending, rng: np.random.Generator) -> Params:
        order, factors = self.jitter.get_params(rng)
        return {"order": order, "factors": factors}

    def collate(self, draws: list[Params]) -> Params:
        return {"groups": _groups([list(d["order"]) for d in draws]),
                "factors": torch.tensor([d["factors"] for d in draws], dtype=torch.float64)}

    def apply(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        for _, op, idx in params["groups"]:
            x = x.index_copy(0, idx, _JITTER_TWINS[op](x.index_select(0, idx), params["factors"][idx, op]))
        return x

__all__ = ["BLUR_PASSES", "ColorJitterStep", "ThreeAugmentStep", "box_radius", "box_weights", "gaussian_blur"]
