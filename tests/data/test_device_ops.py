"""The device twins of the PIL ops (RandAugment's ops, the crop's resize) against PIL, with the same arguments.

Tolerance: none. The twins repeat Pillow's arithmetic operation by operation, so they equal PIL bit for bit where
Pillow's C code has no fused multiply-adds (x86-64 builds); elsewhere (e.g. aarch64 builds, where the compiler may
fuse them) an interpolated or blended value may land 1 below or above: 1 LSB there.
"""

from __future__ import annotations

import platform

import numpy as np
import pytest
import torch
from PIL import Image

from deit.data.device_ops import TORCH_OPS, affine
from deit.data.device_resize import coefficients, kernel_taps, resize, source_span, two_pass, vertical_first
from deit.data.randaugment import AFFINE_KINDS, PIL_INTERPOLATION, PIL_OPS, _affine, affine_matrix, rotate_matrix

LSB = 0 if platform.machine().lower() in ("x86_64", "amd64") else 1
FILL = (124, 116, 104)
ARGS = {  # argument ranges of each kind as RandAugment draws them (and beyond, for the enhancers)
    "posterize": lambda rng, n: rng.integers(0, 9, n).astype(float),
    "solarize": lambda rng, n: rng.integers(0, 257, n).astype(float),
    "solarize_add": lambda rng, n: rng.integers(0, 111, n).astype(float),
    "rotate": lambda rng, n: rng.uniform(-30, 30, n),
    "shear_x": lambda rng, n: rng.uniform(-0.3, 0.3, n), "shear_y": lambda rng, n: rng.uniform(-0.3, 0.3, n),
    "translate_x": lambda rng, n: rng.uniform(-0.45, 0.45, n),
    "translate_y": lambda rng, n: rng.uniform(-0.45, 0.45, n),
    **{k: (lambda rng, n: rng.uniform(0.0, 2.2, n)) for k in ("color", "contrast", "brightness", "sharpness")},
}
ALONG = {"shear_x": "x", "translate_x": "x", "shear_y": "y", "translate_y": "y", "rotate": "xy"}


def _images(rng: np.random.Generator, h: int, w: int) -> list[np.ndarray]:
    """Noise, a smooth photo-like image, a narrow value range, two flat regions, one flat colour."""
    smooth = Image.fromarray(rng.uniform(0, 255, (4, 4, 3)).astype(np.uint8)).resize((w, h), Image.Resampling.BICUBIC)
    two = np.full((h, w, 3), rng.integers(0, 256), np.uint8)
    two[: h // 3] = rng.integers(0, 256)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8), np.asarray(smooth),
            rng.integers(60, 71, (h, w, 3), dtype=np.uint8), two, np.full((h, w, 3), 37, np.uint8)]


def _batch(images: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()


def _check(out: torch.Tensor, ref: list[np.ndarray]) -> None:
    diff = np.abs(out.permute(0, 2, 3, 1).numpy().astype(int) - np.stack(ref).astype(int))
    assert diff.max() <= LSB, f"{(diff > 0).sum()} of {diff.size} values differ, by up to {diff.max()}"


@pytest.mark.parametrize("kind", sorted(set(PIL_OPS) - set(AFFINE_KINDS)))
@pytest.mark.parametrize("size", [(24, 24), (31, 17)])
def test_each_colour_op_equals_pil(kind, size):
    rng = np.random.default_rng(len(kind))
    images = _images(rng, *size) * 2
    args = ARGS.get(kind, lambda rng, n: np.zeros(n))(rng, len(images))  # one argument per image, in one batch
    ref = [np.asarray(PIL_OPS[kind](Image.fromarray(a), float(v), FILL, Image.Resampling.BICUBIC))
           for a, v in zip(images, args, strict=True)]
    _check(TORCH_OPS[kind](_batch(images), torch.tensor(args)), ref)


@pytest.mark.parametrize("kind", AFFINE_KINDS)
@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear", "nearest"])
def test_each_geometric_op_equals_pil_with_its_fill(kind, interpolation):
    rng = np.random.default_rng(7)
    images = _images(rng, 23, 29)[:4] * 2
    args = ARGS[kind](rng, len(images))
    args[0] = 0.0  # no move
    resample = PIL_INTERPOLATION[interpolation]
    ref = [np.asarray(PIL_OPS[kind](Image.fromarray(a), float(v), FILL, resample))
           for a, v in zip(images, args, strict=True)]
    matrices = torch.tensor([affine_matrix(kind, float(v), 29, 23) for v in args], dtype=torch.float64)
    out = affine(_batch(images), matrices, torch.tensor(FILL, dtype=torch.uint8), interpolation,
                 ALONG[kind] if interpolation == "bicubic" else "xy")
    _check(out, ref)
    assert (out.permute(0, 2, 3, 1).reshape(-1, 3) == torch.tensor(FILL)).all(1).any()  # the fill shows


@pytest.mark.parametrize("degrees", [0.0, 90.0, 180.0, 270.0, -17.5, 359.0])
def test_the_rotation_matrix_is_the_one_pil_rotates_with(degrees):
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (20, 20, 3), dtype=np.uint8))
    for resample in PIL_INTERPOLATION.values():
        rotated = img.rotate(degrees, resample=resample, fillcolor=FILL)
        assert np.array_equal(np.asarray(rotated), np.asarray(_affine(img, rotate_matrix(degrees, 20, 20), FILL,
                                                                       resample)))


@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear"])
def test_resize_equals_pil_for_any_size_and_either_pass_order(interpolation):
    rng = np.random.default_rng(3)
    resample = PIL_INTERPOLATION[interpolation]
    for out in (16, 37):
        sizes = [(int(h), int(w)) for h, w in rng.integers(3, 120, (10, 2))] + [(out, 50), (50, out), (out, out),
                                                                               (119, 20), (20, 119)]
        assert {vertical_first(h, w, out, out) for h, w in sizes} == {True, False}  # both of Pillow's pass orders
        top, wide = max(h for h, _ in sizes), max(w for _, w in sizes)
        padded = np.full((len(sizes), top, wide, 3), 99, np.uint8)  # what lies past an image is ignored
        ref = []
        for i, (h, w) in enumerate(sizes):
            padded[i, :h, :w] = _images(rng, h, w)[i % 3]
            ref.append(np.asarray(Image.fromarray(padded[i, :h, :w]).resize((out, out), resample)))
        heights, widths = torch.tensor([s[0] for s in sizes]), torch.tensor([s[1] for s in sizes])
        for vertical in (False, True):
            pick = [i for i, (h, w) in enumerate(sizes) if vertical_first(h, w, out, out) == vertical]
            got = resize(_batch([padded[i] for i in pick]), heights[pick], widths[pick], out, interpolation, vertical)
            _check(got, [ref[i] for i in pick])


def _resized(a: np.ndarray, oh: int, ow: int, interpolation: str, vertical: bool) -> np.ndarray:
    h, w, _ = a.shape
    rows, cols = (coefficients(torch.tensor([n]), torch.tensor([out]), torch.arange(out)[None], n,
                               kernel_taps(n, out, interpolation), interpolation) for n, out in ((h, oh), (w, ow)))
    return two_pass(_batch([a]), rows, cols, vertical)[0].permute(1, 2, 0).numpy()


@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear"])
def test_any_resize_equals_pil_in_the_pass_order_pillow_takes(interpolation):
    """Pillow (>= 13) takes the vertical pass first when the height loses more than twice the pixels the width
    does; the order changes the result (each pass is cut to 8 bits), so the rule is checked where it does."""
    rng = np.random.default_rng(5)
    resample = PIL_INTERPOLATION[interpolation]
    shapes = [(int(h), int(w), int(oh), int(ow)) for h, w, oh, ow in rng.integers(3, 90, (40, 4))]
    shapes += [(300, 40, 30, 44), (300, 40, 30, 40), (40, 300, 44, 30), (81, 155, 69, 149), (178, 119, 44, 52),
               (139, 36, 114, 46), (375, 500, 224, 298), (500, 375, 298, 224)]  # tall, wide, edges of the rule
    decided = set()
    for h, w, oh, ow in shapes:
        a = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        ref = np.asarray(Image.fromarray(a).resize((ow, oh), resample))
        first = vertical_first(h, w, oh, ow)
        _check(torch.from_numpy(_resized(a, oh, ow, interpolation, first)).permute(2, 0, 1)[None], [ref])
        if LSB == 0 and not np.array_equal(_resized(a, oh, ow, interpolation, not first), ref):
            decided.add(first)
    assert decided == ({True, False} if LSB == 0 else set())  # cases of both orders where the other one is wrong


@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear"])
def test_the_rows_of_a_strip_are_those_of_the_whole_resize(interpolation):
    """Output rows picked by position, computed from only the input rows they read (``source_span``), are the
    whole resize's rows."""
    rng = np.random.default_rng(6)
    for h, out in ((200, 37), (37, 37), (20, 37), (375, 224)):
        a = rng.integers(0, 256, (h, 5, 3), dtype=np.uint8)
        whole = np.asarray(Image.fromarray(a).resize((5, out), PIL_INTERPOLATION[interpolation]))
        for first, last in ((0, 0), (0, out - 1), (out // 3, out // 2), (out - 1, out - 1)):
            lo, hi = source_span(first, last, h, out, interpolation)
            picked = torch.arange(first, last + 1)[None]
            rows = coefficients(torch.tensor([h]), torch.tensor([out]), picked, hi - lo,
                                kernel_taps(h, out, interpolation), interpolation, torch.tensor([lo]))
            cols = coefficients(torch.tensor([5]), torch.tensor([5]), torch.arange(5)[None], 5, 5, interpolation)
            got = two_pass(_batch([a[lo:hi]]), rows, cols, False)
            _check(got, [whole[first:last + 1]])
