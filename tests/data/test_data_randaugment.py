import numpy as np
import pytest
from PIL import Image

from deit.data import RandAugment
from deit.data.randaugment import RAND_INCREASING_TRANSFORMS


def _img():
    a = np.random.default_rng(0).integers(0, 256, (24, 24, 3), dtype=np.uint8)
    return Image.fromarray(a)


def test_two_ops_with_the_asked_magnitude_distribution():
    ra = RandAugment("rand-m9-mstd0.5-inc1-p1.0")
    ra.record = []
    rng, img = np.random.default_rng(0), _img()
    n = 600
    for _ in range(n):
        before = len(ra.record)
        ra(img, rng)
        assert len(ra.record) - before == 2  # n=2 ops per image (p=1 here: every chosen op applies)
    mags = np.array([m for _, m in ra.record])
    assert abs(mags.mean() - 9.0) < 0.06 and abs(mags.std() - 0.5) < 0.05 and mags.max() <= 10.0
    names = {name for name, _ in ra.record}
    assert names == set(RAND_INCREASING_TRANSFORMS)  # the increasing set, drawn uniformly
    assert len(RAND_INCREASING_TRANSFORMS) == 15


def test_default_ops_apply_with_probability_half_and_clip():
    ra = RandAugment("rand-m9-mstd0.5-inc1")  # timm: each chosen op applies with p 0.5
    ra.record = []
    rng, img = np.random.default_rng(1), _img()
    for _ in range(1000):
        ra(img, rng)
    assert abs(len(ra.record) / 2000 - 0.5) < 0.04
    ra = RandAugment("rand-m10-mstd3")
    assert max(ra.sample_magnitude(np.random.default_rng(s)) for s in range(200)) == 10.0


@pytest.mark.parametrize("name", RAND_INCREASING_TRANSFORMS)
def test_every_op_runs_and_keeps_size(name):
    ra = RandAugment("rand-inc1", fill=(124, 116, 104))
    out = ra.apply_op(_img(), name, 9.0, np.random.default_rng(0))
    assert out.size == (24, 24) and out.mode == "RGB"


def test_level_mappings_and_fill():
    ra = RandAugment("rand-inc1", fill=(124, 116, 104))
    g = Image.new("RGB", (20, 20), (200, 200, 200))
    assert ra.apply_op(g, "Rotate", 10.0).getpixel((0, 0)) == (124, 116, 104)  # 30 degrees, mean fill in corner
    assert ra.apply_op(g, "TranslateXRel", 10.0).getpixel((19, 10)) == (124, 116, 104)  # 45% shift
    ramp = Image.fromarray(np.repeat(np.arange(256, dtype=np.uint8)[None, :, None], 3, axis=2))  # 256x1 grey ramp
    # PosterizeIncreasing m9: keep 4 - int(3.6) = 1 bit; m10: 0 bits (black)
    assert set(np.asarray(ra.apply_op(ramp, "PosterizeIncreasing", 9.0)).ravel()) == {0, 128}
    assert set(np.asarray(ra.apply_op(ramp, "PosterizeIncreasing", 10.0)).ravel()) == {0}
    # SolarizeIncreasing m9: threshold 256 - int(230.4) = 26
    sol = np.asarray(ra.apply_op(ramp, "SolarizeIncreasing", 9.0))[0, :, 0]
    assert sol[25] == 25 and sol[26] == 255 - 26
    # SolarizeAdd m9: + int(99) below 128
    sa = np.asarray(ra.apply_op(ramp, "SolarizeAdd", 9.0))[0, :, 0]
    assert sa[10] == 109 and sa[127] == 226 and sa[128] == 128
    # BrightnessIncreasing m9: factor 1 +- 0.81
    b = np.asarray(ra.apply_op(g, "BrightnessIncreasing", 9.0))[0, 0, 0]
    assert b in (round(200 * 1.81) if 200 * 1.81 < 255 else 255, round(200 * 0.19))
