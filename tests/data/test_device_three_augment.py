"""3-Augment and the colour jitter on the device (``data.device_augment``) against the worker path's PIL ops, op by
op with the same parameters, and the whole DeiT III recipe through both paths.

Tolerance: as tests/data/test_device_ops.py: none on x86-64 (the blur is integer arithmetic once its weights are
computed, in the worker; the jitter's blends are Pillow's float32 ones), 1 LSB elsewhere.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from deit.data import DataConfig
from deit.data.device_augment import DeviceAugmentWorker
from deit.data.device_three_augment import ColorJitterStep, ThreeAugmentStep, box_weights, gaussian_blur
from deit.data.three_augment import (
    BLUR_RADIUS,
    JITTER_OPS,
    ColorJitter,
    ThreeAugment,
    apply_three_augment,
    color_jitter,
)
from deit.models import Preprocessing

sys.path.insert(0, str(Path(__file__).parent))
from test_device_augment import _device_path, _photos, _worker_path  # noqa: E402
from test_device_ops import _batch, _check, _images  # noqa: E402


def _blur_reference(images: list[np.ndarray], radii: list[float]) -> list[np.ndarray]:
    return [np.asarray(apply_three_augment(Image.fromarray(a), 2, r)) for a, r in zip(images, radii, strict=True)]


def _blur(images: list[np.ndarray], radii: list[float]) -> torch.Tensor:
    r, ww, fw = torch.tensor([box_weights(v) for v in radii]).unbind(1)
    return gaussian_blur(_batch(images), r, ww, fw, reach=int(r.max()))


@pytest.mark.parametrize("size", [(24, 24), (31, 17), (3, 40), (2, 2)])
def test_the_gaussian_blur_equals_pil_for_every_radius_3_augment_draws(size):
    rng = np.random.default_rng(sum(size))
    images = _images(rng, *size) * 3
    radii = [*BLUR_RADIUS, *map(float, rng.uniform(*BLUR_RADIUS, len(images) - 2))]  # one batch, a radius per image
    _check(_blur(images, radii), _blur_reference(images, radii))


def test_the_gaussian_blur_equals_pil_beyond_3_augment_s_radii():
    # wider boxes than 3-Augment draws (integer radius up to 7), some wider than the image itself
    rng = np.random.default_rng(1)
    images = _images(rng, 9, 13) * 2
    radii = [0.01, 2.5, 3.0, 4.7, 6.0, 9.0, 12.0, 0.5, 1.0, 1.9]
    assert max(box_weights(r)[0] for r in radii) > 6
    _check(_blur(images, radii), _blur_reference(images, radii))


@pytest.mark.parametrize("op", [0, 1, 2])
def test_each_3_augment_op_equals_pil(op):
    rng = np.random.default_rng(op)
    images = _images(rng, 21, 26) * 2
    radii = [float(r) for r in rng.uniform(*BLUR_RADIUS, len(images))]
    step = ThreeAugmentStep(ThreeAugment())
    params = step.collate([{"op": op, "box": box_weights(r)} for r in radii])
    ref = [np.asarray(apply_three_augment(Image.fromarray(a), op, r)) for a, r in zip(images, radii, strict=True)]
    _check(step.apply(_batch(images), params), ref)


def test_the_colour_jitter_equals_pil_in_every_order():
    rng = np.random.default_rng(5)
    images = _images(rng, 19, 23) * 6
    orders = [tuple(int(i) for i in rng.permutation(len(JITTER_OPS))) for _ in images]
    factors = [tuple(float(f) for f in rng.uniform(0.0, 2.0, 3)) for _ in images]
    assert len(set(orders)) == 6
    step = ColorJitterStep(ColorJitter(0.4))
    params = step.collate([{"order": o, "factors": f} for o, f in zip(orders, factors, strict=True)])
    ref = [np.asarray(color_jitter(Image.fromarray(a), o, f)) for a, o, f in zip(images, orders, factors,
                                                                                  strict=True)]
    _check(step.apply(_batch(images), params), ref)


RECIPES = {
    "DeiT III: 3-Augment, jitter": dict(three_augment=True, color_jitter=0.3, auto_augment=None, reprob=0.0),
    "DeiT III, simple crop": dict(three_augment=True, color_jitter=0.3, auto_augment=None, reprob=0.0,
                                  train_crop="simple"),
    "3-Augment alone": dict(three_augment=True, auto_augment=None, reprob=0.0, train_crop="padded"),
    "jitter without RandAugment, erasing": dict(color_jitter=0.4, auto_augment=None, reprob=1.0),
}


@pytest.mark.parametrize("recipe", RECIPES)
def test_the_deit3_recipes_on_the_device_make_what_the_worker_path_makes(recipe):
    cfg, pre, photos = DataConfig(device_augment=True, **RECIPES[recipe]), Preprocessing(input_size=32), _photos()
    if cfg.three_augment:  # every op of 3-Augment is drawn in these batches
        worker = DeviceAugmentWorker.build(cfg, pre)
        ops = {worker(img, np.random.default_rng([0, 1, i])).params["three_augment"]["op"]
               for i, img in enumerate(photos)}
        assert ops == {0, 1, 2}
    for seed in range(3):
        expected = _worker_path(cfg, pre, photos, seed)
        got = _device_path(cfg, pre, photos, seed)
        assert got.shape == expected.shape == (20, 3, 32, 32)
        assert torch.equal(got, expected), f"seed {seed}: {(got != expected).sum()} values differ"
