"""3-Augment, colour jitter and the simple random crop (DeiT III) against their official definitions."""

from __future__ import annotations

import itertools
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from deit.data import DataConfig, build_loader, build_transform
from deit.data.loader import STREAM_MODULES
from deit.data.three_augment import (
    BLUR_RADIUS,
    ColorJitter,
    ThreeAugment,
    apply_three_augment,
    color_jitter,
    gaussian_blur,
    grayscale,
    solarize,
)
from deit.data.transforms import PaddedRandomCrop, SimpleRandomCrop
from deit.models import Preprocessing


def _image(seed: int = 0, size: tuple[int, int] = (20, 16)) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def _px(img: Image.Image) -> np.ndarray:
    return np.asarray(img).astype(np.int64)


def test_grayscale_is_601_luma_in_three_channels():
    img = _image()
    out = _px(grayscale(img))
    assert out.shape == (16, 20, 3) and (out == out[..., :1]).all()
    r, g, b = (_px(img)[..., i] for i in range(3))
    luma = r * 299 / 1000 + g * 587 / 1000 + b * 114 / 1000  # ITU-R 601-2, torchvision's Grayscale(3) on PIL
    assert np.abs(out[..., 0] - luma).max() <= 1


def test_solarize_inverts_from_128_up():
    a = np.arange(256, dtype=np.uint8).repeat(3).reshape(16, 16, 3)
    out = _px(solarize(Image.fromarray(a)))
    expected = np.where(a >= 128, 255 - a.astype(np.int64), a)  # PIL ImageOps.solarize, default threshold 128
    assert (out == expected).all()
    assert out[7, 15, 0] == 127 and out[8, 0, 0] == 127  # 127 stays, 128 becomes 127


@pytest.mark.parametrize("radius", [1.0, 2.0])
def test_gaussian_blur_radius_is_the_standard_deviation(radius):
    a = np.zeros((61, 61, 3), np.uint8)
    a[30, 30] = 255
    out = _px(gaussian_blur(Image.fromarray(a), radius))[..., 0].astype(float)
    w = out / out.sum()
    xs = np.arange(61)[None, :]
    assert np.sqrt((w * (xs - 30) ** 2).sum()) == pytest.approx(radius, rel=0.1)
    flat = Image.new("RGB", (9, 9), (40, 90, 200))
    assert (_px(gaussian_blur(flat, radius)) == _px(flat)).all()


def test_the_op_index_names_the_op():
    img = _image()
    assert (_px(apply_three_augment(img, 0, 1.5)) == _px(grayscale(img))).all()
    assert (_px(apply_three_augment(img, 1, 1.5)) == _px(solarize(img))).all()
    assert (_px(apply_three_augment(img, 2, 1.5)) == _px(gaussian_blur(img, 1.5))).all()
    with pytest.raises(ValueError, match="0, 1 or 2"):
        apply_three_augment(img, 3, 1.0)


def test_three_augment_chooses_uniformly_from_the_per_sample_rng():
    t = ThreeAugment()
    rng = np.random.default_rng(123)
    draws = [t.get_params(rng) for _ in range(6000)]
    counts = Counter(op for op, _ in draws)
    assert set(counts) == {0, 1, 2} and all(abs(counts[k] / 6000 - 1 / 3) < 0.025 for k in counts), counts
    radii = np.array([r for _, r in draws])
    assert BLUR_RADIUS[0] <= radii.min() < 0.15 and 1.95 < radii.max() <= BLUR_RADIUS[1]
    assert radii.mean() == pytest.approx(1.05, abs=0.03)  # uniform on [0.1, 2.0]
    assert [t.get_params(np.random.default_rng(7)) for _ in range(3)] == [t.get_params(np.random.default_rng(7))] * 3


def _jitter_by_hand(img: Image.Image, order, factors) -> np.ndarray:
    """torchvision's adjust_brightness / adjust_contrast / adjust_saturation on PIL images: blend with black, with
    the grey of the rounded mean luma, with the grayscale image; clipped to [0, 255] and truncated (PIL's blend)."""
    x = _px(img).astype(float)
    for i in order:
        f = factors[i]
        luma = _px(Image.fromarray(x.astype(np.uint8)).convert("L")).astype(float)
        base = [np.zeros_like(x), np.full_like(x, int(luma.mean() + 0.5)), np.repeat(luma[..., None], 3, -1)][i]
        x = np.floor(np.clip(base + f * (x - base), 0, 255))
    return x


def test_color_jitter_matches_the_blend_definitions():
    img = _image(3)
    for order, factors in [((0, 1, 2), (0.7, 1.3, 1.1)), ((2, 0, 1), (1.25, 0.8, 0.72)), ((1,), (1.0, 1.2, 1.0))]:
        out = _px(color_jitter(img, order, factors))
        diff = np.abs(out - _jitter_by_hand(img, order, factors))
        # PIL blends in float32: a level off here and there, two after three chained ops
        assert diff.max() <= max(1, len(order) - 1), (order, factors)
        assert (diff == 0).mean() > 0.97, (order, factors)
    assert (_px(color_jitter(img, (0, 1, 2), (1.0, 1.0, 1.0))) == _px(img)).all()


def test_color_jitter_draws_factors_in_range_and_a_uniform_order():
    cj = ColorJitter(0.3)
    rng = np.random.default_rng(5)
    draws = [cj.get_params(rng) for _ in range(6000)]
    factors = np.array([f for _, f in draws])
    assert factors.min() >= 0.7 and factors.max() <= 1.3 and factors.min() < 0.71 and factors.max() > 1.29
    orders = Counter(o for o, _ in draws)
    assert set(orders) == set(itertools.permutations(range(3)))
    assert all(abs(n / 6000 - 1 / 6) < 0.02 for n in orders.values()), orders
    assert (ColorJitter(1.5).low, ColorJitter(1.5).high) == (0.0, 2.5)  # max(0, 1 - s), as torchvision
    with pytest.raises(ValueError):
        ColorJitter(-0.1)


def test_simple_crop_resizes_the_shorter_side_then_crops_a_reflect_padded_image():
    img = _image(1, size=(300, 200))
    crop = SimpleRandomCrop(32, padding=4)
    resized = img.resize((48, 32), Image.Resampling.BICUBIC)  # shorter side 32, longer int(32 * 300 / 200)
    padded = np.pad(_px(resized), ((4, 4), (4, 4), (0, 0)), mode="reflect")
    offsets = set()
    for seed in range(400):
        top, left = crop.get_params(48, 32, np.random.default_rng(seed))
        offsets.add((top, left))
        out = crop(img, np.random.default_rng(seed))
        assert out.size == (32, 32)
        if seed < 5:
            assert (_px(out) == padded[top:top + 32, left:left + 32]).all()
    tops, lefts = {t for t, _ in offsets}, {v for _, v in offsets}
    assert tops == set(range(9)) and lefts == set(range(25))  # anywhere in the 56 x 40 padded image
    # reflect, not edge or symmetric: padded row 4 - k is image row k (the edge row is not repeated)
    assert (padded[0] == padded[8]).all() and (padded[3] == padded[5]).all()


def test_simple_crop_of_a_square_image_of_the_input_size_is_the_padded_crop():
    img = _image(2, size=(32, 32))
    for seed in range(20):
        a = SimpleRandomCrop(32, 4)(img, np.random.default_rng(seed))
        top, left = SimpleRandomCrop(32, 4).get_params(32, 32, np.random.default_rng(seed))
        padded = np.pad(_px(img), ((4, 4), (4, 4), (0, 0)), mode="reflect")
        assert (_px(a) == padded[top:top + 32, left:left + 32]).all()
    # the padded crop keeps its own draws (its stream is unchanged)
    b = PaddedRandomCrop(32, 4)(img, np.random.default_rng(0))
    top, left = np.random.default_rng(0).integers(0, 9, size=2)
    assert (_px(b) == np.pad(_px(img), ((4, 4), (4, 4), (0, 0)), mode="reflect")[top:top + 32, left:left + 32]).all()


def _recipe(**kw) -> DataConfig:
    return DataConfig(**{"three_augment": True, "color_jitter": 0.3, "auto_augment": None, "reprob": 0.0, **kw})


def test_pipeline_order_is_the_official_one():
    pp = Preprocessing(input_size=24)
    names = [type(t).__name__ for t in build_transform(_recipe(), True, pp).transforms]
    assert names == ["RandomResizedCrop", "RandomHorizontalFlip", "ThreeAugment", "ColorJitter", "ToTensorNormalize"]
    names = [type(t).__name__ for t in build_transform(_recipe(train_crop="simple", color_jitter=0.0), True,
                                                       pp).transforms]
    assert names == ["SimpleRandomCrop", "RandomHorizontalFlip", "ThreeAugment", "ToTensorNormalize"]
    # without 3-Augment, colour jitter takes RandAugment's place (timm: only when auto-augment is off)
    names = [type(t).__name__ for t in build_transform(DataConfig(auto_augment=None, color_jitter=0.4), True,
                                                       pp).transforms]
    assert names == ["RandomResizedCrop", "RandomHorizontalFlip", "ColorJitter", "ToTensorNormalize",
                     "RandomErasing"]
    # and the draws happen in that order: crop, flip, op, jitter, from the one per-sample generator
    t = build_transform(_recipe(), True, pp)
    img = _image(4, size=(50, 40))
    rng = np.random.default_rng(11)
    crop, flip, three, jitter, normalize = t.transforms
    manual = normalize(jitter(three(flip(crop(img, rng), rng), rng), rng))
    assert torch.equal(t(img, np.random.default_rng(11)), manual)


def test_config_says_what_three_augment_replaces():
    with pytest.raises(ValueError, match=r"set data.auto_augment=none and data.reprob=0"):
        DataConfig(three_augment=True)  # RandAugment and random erasing are on by default
    with pytest.raises(ValueError, match="reprob=0.25"):
        DataConfig(three_augment=True, auto_augment=None)
    with pytest.raises(ValueError, match="data.color_jitter=0"):
        DataConfig(color_jitter=0.3)  # with RandAugment on, timm would drop the jitter silently
    for bad in (-0.1, float("nan"), True):
        with pytest.raises(ValueError, match="color_jitter must be a number >= 0"):
            DataConfig(color_jitter=bad, auto_augment=None)
    with pytest.raises(ValueError, match="simple"):
        DataConfig(train_crop="src")
    assert _recipe(train_crop="simple").train_crop == "simple"


def test_three_augment_batches_depend_only_on_seed_epoch_position(pp32):
    base = dict(dataset="synthetic", img_size=40, synthetic_classes=4, synthetic_train=24, synthetic_val=8,
                batch_size=8, num_workers=0, persistent_workers=False, train_crop="simple")

    def batches(epoch, **kw):
        loader = build_loader(_recipe(**{**base, **kw}), "train", preprocessing=pp32, seed=5)
        loader.sampler.set_epoch(epoch)
        return [x for x, _ in loader]

    a, b = batches(1), batches(1, num_workers=2)
    assert len(a) == 3 and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a[0], batches(2)[0])
    assert "three_augment" in STREAM_MODULES  # a teacher-output cache is keyed by this code too
