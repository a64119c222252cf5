"""PIL's ``Image.resize`` (bicubic or bilinear, 8-bit RGB) on a batch of images of different sizes, with torch ops:
the device half of RandomResizedCrop under ``data.device_augment`` (the workers cut the crop box, the device
resamples it).

Pillow resamples in two passes, horizontal then vertical (vertical first when the height shrinks by more than
twice the pixels the width does: ``vertical_first``), each a weighted sum of input pixels with per-output
coefficients (``precompute_coeffs`` in Resample.c: filter support scaled by the downscale factor, weights
normalised in float64, then rounded to 22-bit fixed point), the sum started at half a unit and cut to 8 bits
between the passes. Here the coefficients are computed with the same float64 operations in the same order, and
each pass is a float64 matrix product: every product and partial sum is an integer below 2**53, so the sums are
exact in any order and the result equals PIL's bit for bit. Images are padded to the largest of their chunk
(zeros, with zero coefficients); the caller chunks a batch by size so that the padding stays small.
"""

from __future__ import annotations

import math

import torch

F64 = torch.float64
PRECISION_BITS = 22  # Pillow's for 8-bit images: 32 - 8 - 2
FILTER_SUPPORT = {"bicubic": 2.0, "bilinear": 1.0}


def _bicubic(x: torch.Tensor) -> torch.Tensor:
    x = x.abs()
    near = ((1.5 * x - 2.5) * x) * x + 1  # ((a + 2) x - (a + 3)) x x + 1, a = -0.5
    far = (((x - 5) * x + 8) * x - 4) * -0.5
    return torch.where(x < 1.0, near, torch.where(x < 2.0, far, torch.zeros_like(x)))


def _bilinear(x: torch.Tensor) -> torch.Tensor:
    x = x.abs()
    return torch.where(x < 1.0, 1.0 - x, torch.zeros_like(x))


_FILTERS = {"bicubic": _bicubic, "bilinear": _bilinear}


def kernel_taps(size: int, out: int, resample: str) -> int:
    """At least as many taps as Pillow's coefficients for ``size`` -> ``out`` have (its ``ksize``)."""
    return math.ceil(FILTER_SUPPORT[resample] * max(size / out, 1.0)) * 2 + 1


def coefficients(sizes: torch.Tensor, out: int, length: int, taps: int, resample: str) -> torch.Tensor:
    """Pillow's fixed-point resampling coefficients from ``sizes`` (N,) input pixels to ``out`` as dense
    matrices (N, out, length) in float64 (columns past an image's size are zero)."""
    size = sizes.to(F64).unsqueeze(1)
    scale = size / torch.full_like(size, out)
    filterscale = scale.clamp(min=1.0)
    support = filterscale * FILTER_SUPPORT[resample]
    inverse = torch.ones_like(filterscale) / filterscale
    center = (torch.arange(out, device=sizes.device, dtype=F64) + 0.5) * scale  # (N, out)
    first = (center - support + 0.5).trunc().clamp(min=0)
    count = (center + support + 0.5).trunc().clamp(max=size) - first
    t = torch.arange(taps, device=sizes.device, dtype=F64)
    pos = first.unsqueeze(-1) + t  # (N, out, taps)
    used = t < count.unsqueeze(-1)
    w = torch.where(used, _FILTERS[resample]((pos - center.unsqueeze(-1) + 0.5) * inverse.unsqueeze(-1)), 0.0)
    total = torch.zeros_like(center)
    for k in range(taps):  # Pillow's running sum, term by term (adding the unused taps' zeros changes nothing)
        total = total + w[..., k]
    total = total.unsqueeze(-1)
    w = torch.where(total != 0.0, w / torch.where(total != 0.0, total, 1.0), w)
    fixed = w * float(1 << PRECISION_BITS)
    fixed = torch.where(w < 0, -0.5 + fixed, 0.5 + fixed).trunc()
    matrix = torch.zeros(sizes.shape[0], out, length, device=sizes.device, dtype=F64)
    return matrix.scatter_add_(2, pos.long().clamp(max=length - 1), torch.where(used, fixed, 0.0))


def _to_8bit(sums: torch.Tensor) -> torch.Tensor:
    """Pillow's ``clip8(ss)``: (sum + half a unit) >> 22, clipped to [0, 255] (as float64)."""
    return ((sums + float(1 << (PRECISION_BITS - 1))) * 2.0 ** -PRECISION_BITS).floor_().clamp_(0, 255)


def vertical_first(height: int, width: int, out: int) -> bool:
    """Whether Pillow (>= 13) resizes a ``height`` x ``width`` image to ``out`` x ``out`` vertical pass first."""
    return height - out > 0 and height - out > (width - out) * 2


def resize(images: torch.Tensor, heights: torch.Tensor, widths: torch.Tensor, out: int, resample: str,
           vertical: bool = False) -> torch.Tensor:
    """``Image.resize((out, out), resample)`` of each image: ``images`` uint8 (N, 3, H, W), image i in its top-left
    ``heights[i]`` x ``widths[i]`` (the rest ignored); returns uint8 (N, 3, out, out). ``vertical``: the images
    are ones Pillow resizes vertical pass first (``vertical_first``)."""
    n, _, h, w = images.shape
    rows = coefficients(heights, out, h, kernel_taps(h, out, resample), resample).unsqueeze(1)  # (N, 1, out, H)
    cols = coefficients(widths, out, w, kernel_taps(w, out, resample), resample).transpose(1, 2).unsqueeze(1)
    x = images.to(F64)
    if vertical:
        return _to_8bit(torch.matmul(_to_8bit(torch.matmul(rows, x)), cols)).to(torch.uint8)
    return _to_8bit(torch.matmul(rows, _to_8bit(torch.matmul(x, cols)))).to(torch.uint8)


__all__ = ["FILTER_SUPPORT", "coefficients", "kernel_taps", "resize", "vertical_first"]
