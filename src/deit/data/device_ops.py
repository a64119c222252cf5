"""RandAugment's ops on batches of uint8 images ``(N, 3, H, W)`` with torch ops: the device twins of the PIL ops
in ``deit.data.randaugment``, on any device, one argument per image (a tensor).

Each twin computes what Pillow computes (Pillow's C code: Blend.c, Filter.c, Convert.c, Geometry.c; ImageOps and
ImageEnhance): the same formulas in the same precision (float32 for blends and the smoothing filter, float64 for the
affine resampling and autocontrast's table), the operations in the same order, the same truncations and clipping.
Elementwise torch ops round each result to its dtype as C does, so the twins equal PIL bit for bit where PIL's C
code was compiled without fused multiply-adds (x86-64 wheels); ``tests/data/test_device_ops.py`` checks every op
against PIL. A division is always by a tensor on the images' device (CUDA divides by a CPU scalar through its
reciprocal, a bit off IEEE division), so CPU and CUDA compute the same bytes. One known exception: ``nearest``
translations accumulate coordinates in PIL (``x += 1.0`` per pixel) and are computed directly here, so a coordinate
within ~1e-12 of a pixel border may round the other way (never seen in the tests).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

OpTwin = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
U8, F32, F64 = torch.uint8, torch.float32, torch.float64
# ImageFilter.SMOOTH's kernel, divided by its scale in float32 as Pillow does
_SMOOTH_SIDE = float(np.float32(1) / np.float32(13))
_SMOOTH_CENTRE = float(np.float32(5) / np.float32(13))


def _per_image(v: torch.Tensor) -> torch.Tensor:
    return v.view(-1, 1, 1, 1)


def _apply_lut(x: torch.Tensor, lut: torch.Tensor) -> torch.Tensor:
    """``lut[n, c, x[n, c, h, w]]``: a table (N, C, 256) per image and channel, as ``Image.point``."""
    n, c, h, w = x.shape
    return lut.to(U8).gather(2, x.reshape(n, c, h * w).long()).view(n, c, h, w)


def _ramp(x: torch.Tensor, dtype: torch.dtype = torch.int64) -> torch.Tensor:
    return torch.arange(256, device=x.device, dtype=dtype)


def luminance(x: torch.Tensor) -> torch.Tensor:
    """RGB -> L as Pillow converts (ITU-R 601-2 in 16-bit fixed point, rounded): (N, 1, H, W) int32."""
    r, g, b = x.to(torch.int32).unbind(1)
    return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).unsqueeze(1)


def blend(degenerate: torch.Tensor, x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """``Image.blend(degenerate, x, factor)``: ``degenerate + factor * (x - degenerate)`` in float32 (Pillow takes
    the factor as a C float), clipped to [0, 255] and truncated. ``degenerate`` broadcasts against ``x``."""
    alpha = _per_image(factor.to(F32))
    d = (x.to(torch.int16) - degenerate.to(torch.int16)).to(F32)
    return (degenerate.to(F32) + alpha * d).clamp_(0, 255).to(U8)


def invert(x: torch.Tensor, arg: torch.Tensor) -> torch.Tensor:
    return 255 - x


def posterize(x: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    keep = 256 - torch.pow(2, 8 - bits.to(torch.int64).clamp(0, 8))  # the top `bits` bits; 0 bits: black
    return x & _per_image(keep.to(U8))


def solarize(x: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    return torch.where(x.to(torch.int16) < _per_image(threshold.to(torch.int16)), x, 255 - x)


def solarize_add(x: torch.Tensor, add: torch.Tensor) -> torch.Tensor:
    added = (x.to(torch.int16) + _per_image(add.to(torch.int16))).clamp_(max=255).to(U8)
    return torch.where(x < 128, added, x)


def auto_contrast(x: torch.Tensor, arg: torch.Tensor) -> torch.Tensor:
    """``ImageOps.autocontrast(img)``: per channel, the darkest value to 0 and the lightest to 255, by PIL's table
    ``int(i * scale + offset)`` in float64; a channel of one value is left alone."""
    lo, hi = x.amin(dim=(2, 3)).to(F64), x.amax(dim=(2, 3)).to(F64)
    scale = torch.full_like(lo, 255.0) / (hi - lo)
    offset = -lo * scale
    ramp = _ramp(x, F64)
    lut = (ramp * scale.unsqueeze(-1) + offset.unsqueeze(-1)).trunc_().clamp_(0, 255)
    return _apply_lut(x, torch.where((hi > lo).unsqueeze(-1), lut, ramp))


def equalize(x: torch.Tensor, arg: torch.Tensor) -> torch.Tensor:
    """``ImageOps.equalize(img)``: per channel, PIL's table from the histogram (``step`` = the pixels below the
    lightest value over 255; ``lut[i] = (step // 2 + pixels below i) // step``, clipped to 255 as ``point``
    does); a channel of one value, or too few pixels for a step, is left alone."""
    n, c, h, w = x.shape
    flat = x.reshape(n * c, h * w).long()
    rows = torch.arange(n * c, device=x.device).unsqueeze(1)
    hist = torch.bincount((flat + rows * 256).view(-1), minlength=n * c * 256).view(n * c, 256)
    last = hist.gather(1, flat.amax(1, keepdim=True)).squeeze(1)  # pixels at the lightest value
    step = (h * w - last) // 255
    below = hist.cumsum(1) - hist
    lut = ((step // 2).unsqueeze(1) + below) // step.clamp(min=1).unsqueeze(1)
    identity = ((hist > 0).sum(1) <= 1) | (step == 0)
    lut = torch.where(identity.unsqueeze(1), _ramp(x), lut.clamp_(max=255))
    return _apply_lut(x, lut.view(n, c, 256))


def color(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """``ImageEnhance.Color``: blend with the image's grey (L) version."""
    return blend(luminance(x), x, factor)


def contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """``ImageEnhance.Contrast``: blend with a flat grey at the rounded mean luminance."""
    lum = luminance(x)
    total = lum.sum(dim=(1, 2, 3)).to(F64)
    mean = (total / torch.full_like(total, lum[0].numel()) + 0.5).trunc_()
    return blend(_per_image(mean), x, factor)


def brightness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """``ImageEnhance.Brightness``: blend with black."""
    return blend(torch.zeros((), dtype=U8, device=x.device), x, factor)


def smooth(x: torch.Tensor) -> torch.Tensor:
    """``img.filter(ImageFilter.SMOOTH)``: the 3x3 kernel (1 1 1 / 1 5 1 / 1 1 1) / 13 on the inner pixels, summed
    row below, row, row above in float32 from 0.5 and truncated (Pillow's rounding); the border pixels kept."""
    xf = x.to(F32)

    def across(t: torch.Tensor, side: float, centre: float) -> torch.Tensor:
        return (t[..., :-2] * side + t[..., 1:-1] * centre) + t[..., 2:] * side

    outer, middle = across(xf, _SMOOTH_SIDE, _SMOOTH_SIDE), across(xf, _SMOOTH_SIDE, _SMOOTH_CENTRE)
    total = ((0.5 + outer[:, :, 2:]) + middle[:, :, 1:-1]) + outer[:, :, :-2]
    out = x.clone()
    out[:, :, 1:-1, 1:-1] = total.clamp_(0, 255).to(U8)
    return out


def sharpness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """``ImageEnhance.Sharpness``: blend with the smoothed image."""
    if x.shape[-1] < 3 or x.shape[-2] < 3:  # Pillow's filter returns such an image unchanged
        return x.clone()
    return blend(smooth(x), x, factor)


# The twins of deit.data.randaugment.PIL_OPS' non-geometric kinds; the geometric ones are `affine`.
TORCH_OPS: dict[str, OpTwin] = {
    "auto_contrast": auto_contrast, "equalize": equalize, "invert": invert, "posterize": posterize,
    "solarize": solarize, "solarize_add": solarize_add, "color": color, "contrast": contrast,
    "brightness": brightness, "sharpness": sharpness,
}


# ------------------------------------------------------------------------------------------------ affine maps
def _cubic(v1: torch.Tensor, v2: torch.Tensor, v3: torch.Tensor, v4: torch.Tensor, d: torch.Tensor
           ) -> torch.Tensor:
    # Pillow's BICUBIC macro, term by term in its order
    p2 = -v1 + v3
    p3 = 2 * (v1 - v2) + v3 - v4
    p4 = -v1 + v2 - v3 + v4
    return v2 + d * (p2 + d * (p3 + d * p4))


class _Source:
    """Gathers pixels of ``x`` (N, C, H, W) at per-image integer coordinates (N, H*W), clamped to the image."""

    def __init__(self, x: torch.Tensor):
        self.n, self.c, self.h, self.w = x.shape
        self.flat = x.reshape(self.n, self.c, self.h * self.w)

    def __call__(self, row: torch.Tensor, col: torch.Tensor) -> torch.Tensor:
        idx = row.clamp(0, self.h - 1) * self.w + col.clamp(0, self.w - 1)
        return self.flat.gather(2, idx.unsqueeze(1).expand(self.n, self.c, -1)).to(F64)


def _bicubic(src: _Source, fx: torch.Tensor, fy: torch.Tensor, along: str) -> torch.Tensor:
    """Pillow's bicubic_filter32RGB at source coordinates (minus 0.5). ``along`` "x" or "y": the other fraction
    is exactly 0 for every pixel (shears and translations), where Pillow's result is the one row (column) of taps
    it would weigh by 1."""
    x0, y0 = fx.floor(), fy.floor()
    dx, dy = (fx - x0).unsqueeze(1), (fy - y0).unsqueeze(1)
    x0, y0 = x0.long(), y0.long()
    if along == "y":
        return _cubic(*(src(y0 + k, x0) for k in (-1, 0, 1, 2)), dy)
    rows = [_cubic(*(src(y0 + r, x0 + k) for k in (-1, 0, 1, 2)), dx) for r in ((0,) if along == "x" else
                                                                                  (-1, 0, 1, 2))]
    return rows[0] if along == "x" else _cubic(*rows, dy)


def _bilinear(src: _Source, fx: torch.Tensor, fy: torch.Tensor) -> torch.Tensor:
    """Pillow's bilinear_filter32RGB: ``a + (b - a) * d`` across, then down."""
    x0, y0 = fx.floor(), fy.floor()
    dx, dy = (fx - x0).unsqueeze(1), (fy - y0).unsqueeze(1)
    x0, y0 = x0.long(), y0.long()
    top, bottom = ((lambda a, b: a + (b - a) * dx)(src(y, x0), src(y, x0 + 1)) for y in (y0, y0 + 1))
    return top + (bottom - top) * dy


def _nearest(x: torch.Tensor, m: list[torch.Tensor], xs: torch.Tensor, ys: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Pillow's nearest-neighbour affine: (column, row) per output pixel. A map without rotation or shear
    (``a1 == a3 == 0``) takes ImagingScaleAffine's float path, the others affine_fixed's 16.16 fixed point."""
    a0, a1, a2, a3, a4, a5 = m
    col = (a2 + a0 * 0.5) + (xs - 0.5) * a0
    row = (a5 + a4 * 0.5) + (ys - 0.5) * a4
    col_s, row_s = col.trunc().long().where(col >= 0, -1), row.trunc().long().where(row >= 0, -1)

    def fix(v: torch.Tensor) -> torch.Tensor:
        return (v * 65536.0 + 0.5).floor().long()

    k = (xs - 0.5).long(), (ys - 0.5).long()
    col_f = (fix(a2 + a0 * 0.5 + a1 * 0.5) + k[1] * fix(a1) + k[0] * fix(a0)) >> 16
    row_f = (fix(a5 + a3 * 0.5 + a4 * 0.5) + k[1] * fix(a4) + k[0] * fix(a3)) >> 16
    scale = (a1 == 0) & (a3 == 0)
    return torch.where(scale, col_s, col_f), torch.where(scale, row_s, row_f)


def affine(x: torch.Tensor, matrix: torch.Tensor, fill: torch.Tensor, resample: str, along: str = "xy"
           ) -> torch.Tensor:
    """``img.transform(size, AFFINE, matrix, resample, fillcolor=fill)`` per image: output pixel (x, y) samples
    the input at ``(a0 (x+.5) + a1 (y+.5) + a2, a3 (x+.5) + a4 (y+.5) + a5)`` (float64), or takes ``fill``
    (uint8, (C,)) outside it. ``matrix``: (N, 6) float64. ``along`` "x" / "y": a bicubic map that moves pixels
    only along that axis (see ``_bicubic``)."""
    n, c, h, w = x.shape
    m = [matrix[:, i].view(n, 1, 1) for i in range(6)]
    xs = torch.arange(w, device=x.device, dtype=F64).view(1, 1, w) + 0.5
    ys = torch.arange(h, device=x.device, dtype=F64).view(1, h, 1) + 0.5
    src = _Source(x)
    if resample == "nearest":
        col, row = _nearest(x, m, xs, ys)
        inside = (col >= 0) & (col < w) & (row >= 0) & (row < h)
        out = src(row.reshape(n, -1), col.reshape(n, -1)).to(U8)
    else:
        sx = (m[0] * xs + m[1] * ys + m[2]).expand(n, h, w)
        sy = (m[3] * xs + m[4] * ys + m[5]).expand(n, h, w)
        inside = (sx >= 0) & (sx < w) & (sy >= 0) & (sy < h)
        fx, fy = (sx - 0.5).reshape(n, -1), (sy - 0.5).reshape(n, -1)
        v = _bicubic(src, fx, fy, along) if resample == "bicubic" else _bilinear(src, fx, fy)
        out = v.clamp_(0, 255).to(U8)
    return torch.where(inside.view(n, 1, h, w), out.view(n, c, h, w), fill.view(1, c, 1, 1).to(x.device))


__all__ = ["TORCH_OPS", "affine", "blend", "luminance", "smooth"]
