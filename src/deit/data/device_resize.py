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


def source_span(first: int, last: int, size: int, out: int, resample: str) -> tuple[int, int]:
    """The input pixels ``[start, stop)`` that outputs ``first`` to ``last`` (inclusive) of a ``size`` -> ``out``
    resize read: the bounds of Pillow's ``precompute_coeffs`` (those ``coefficients`` computes on the device)."""
    scale = size / out
    support = max(scale, 1.0) * FILTER_SUPPORT[resample]
    start = max(math.trunc((first + 0.5) * scale - support + 0.5), 0)
    return start, min(math.trunc((last + 0.5) * scale + support + 0.5), size)


def coefficients(sizes: torch.Tensor, outs: torch.Tensor, positions: torch.Tensor, length: int, taps: int,
                 resample: str, offsets: torch.Tensor | None = None) -> torch.Tensor:
    """Pillow's fixed-point coefficients for resizing ``sizes`` (N,) input pixels to ``outs`` (N,), the rows of
    output ``positions`` (N, M) only, as dense matrices (N, M, length) in float64 whose columns are input pixels
    less ``offsets`` (N,) (the first pixel the caller kept; columns past what it kept are zero)."""
    size = sizes.to(F64).unsqueeze(1)
    scale = size / outs.to(F64).unsqueeze(1)
    filterscale = scale.clamp(min=1.0)
    support = filterscale * FILTER_SUPPORT[resample]
    inverse = torch.ones_like(filterscale) / filterscale
    center = (positions.to(F64) + 0.5) * scale  # (N, M)
    first = (center - support + 0.5).trunc().clamp(min=0)  # clamped to the whole input, not to what was kept
    count = (center + support + 0.5).trunc().clamp(max=size) - first
    t = torch.arange(taps, device=sizes.device, dtype=F64)
    pos = first.unsqueeze(-1) + t  # (N, M, taps)
    used = t < count.unsqueeze(-1)
    w = torch.where(used, _FILTERS[resample]((pos - center.unsqueeze(-1) + 0.5) * inverse.unsqueeze(-1)), 0.0)
    total = torch.zeros_like(center)
    for k in range(taps):  # Pillow's running sum, term by term (adding the unused taps' zeros changes nothing)
        total = total + w[..., k]
    total = total.unsqueeze(-1)
    w = torch.where(total != 0.0, w / torch.where(total != 0.0, total, 1.0), w)
    fixed = w * float(1 << PRECISION_BITS)
    fixed = torch.where(w < 0, -0.5 + fixed, 0.5 + fixed).trunc()
    if offsets is not None:
        pos = pos - offsets.to(F64).view(-1, 1, 1)
    matrix = torch.zeros(*positions.shape, length, device=sizes.device, dtype=F64)
    return matrix.scatter_add_(2, pos.long().clamp(0, length - 1), torch.where(used, fixed, 0.0))


def _to_8bit(sums: torch.Tensor) -> torch.Tensor:
    """Pillow's ``clip8(ss)``: (sum + half a unit) >> 22, clipped to [0, 255] (as float64)."""
    return ((sums + float(1 << (PRECISION_BITS - 1))) * 2.0 ** -PRECISION_BITS).floor_().clamp_(0, 255)


def vertical_first(height: int, width: int, out_height: int, out_width: int) -> bool:
    """Whether Pillow (>= 13) resizes a ``height`` x ``width`` image to ``out_height`` x ``out_width`` vertical pass
    first: when the height loses pixels, more than twice as many as the width does."""
    return height - out_height > 0 and height - out_height > (width - out_width) * 2


def two_pass(images: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, vertical: bool) -> torch.Tensor:
    """Pillow's two passes: ``images`` uint8 (N, 3, H, W), ``rows`` (N, out_h, H) and ``cols`` (N, out_w, W)
    coefficient matrices (``coefficients``), each pass cut to 8 bits; returns uint8 (N, 3, out_h, out_w)."""
    rows, cols, x = rows.unsqueeze(1), cols.transpose(1, 2).unsqueeze(1), images.to(F64)
    if vertical:
        return _to_8bit(torch.matmul(_to_8bit(torch.matmul(rows, x)), cols)).to(torch.uint8)
    return _to_8bit(torch.matmul(rows, _to_8bit(torch.matmul(x, cols)))).to(torch.uint8)


def resize(images: torch.Tensor, heights: torch.Tensor, widths: torch.Tensor, out: int, resample: str,
           vertical: bool = False) -> torch.Tensor:
    """``Image.resize((out, out), resample)`` of each image: ``images`` uint8 (N, 3, H, W), image i in its
    top-left ``heights[i]`` x ``widths[i]`` (the rest ignored); returns uint8 (N, 3, out, out). ``vertical``: the
    images are ones Pillow resizes vertical pass first (``vertical_first``)."""
    n, _, h, w = images.shape
    outs = torch.full((n,), out, device=images.device)
    every = torch.arange(out, device=images.device).expand(n, out)
    rows = coefficients(heights, outs, every, h, kernel_taps(h, out, resample), resample)
    cols = coefficients(widths, outs, every, w, kernel_taps(w, out, resample), resample)
    return two_pass(images, rows, cols, vertical)


__all__ = ["FILTER_SUPPORT", "coefficients", "kernel_taps", "resize", "source_span", "two_pass", "vertical_first"]
