import numpy as np
import torch
from PIL import Image

from deit.data import DataConfig, RandomErasing, RandomResizedCrop, build_transform
from deit.models import Preprocessing


def test_random_resized_crop_areas_cover_the_scale_range():
    rrc = RandomResizedCrop(32, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3))
    rng = np.random.default_rng(0)
    W, H = 400, 300
    fracs, ratios = [], []
    for _ in range(3000):
        top, left, h, w = rrc.get_params(W, H, rng)
        assert 0 <= top <= H - h and 0 <= left <= W - w
        fracs.append(h * w / (W * H))
        ratios.append(w / h)
    fracs = np.array(fracs)
    assert fracs.min() < 0.1 and fracs.max() > 0.95  # both ends of [0.08, 1] reached
    assert np.all(fracs >= 0.075) and np.all(fracs <= 1.0)
    # uniform in area: each quarter of the range gets its share (large areas sometimes fall back to the centre)
    hist = np.histogram(fracs, bins=4, range=(0.08, 1.0))[0] / len(fracs)
    assert np.all(hist[:3] > 0.18), hist
    assert min(ratios) > 0.7 and max(ratios) < 1.4
    out = rrc(Image.new("RGB", (W, H)), rng)
    assert out.size == (32, 32)


def test_eval_transform_resizes_shorter_side_then_centre_crops():
    pp = Preprocessing(input_size=224, crop_pct=0.875)
    t = build_transform(DataConfig(), False, pp)
    img = np.zeros((300, 600, 3), np.uint8)
    img[:, 300:] = 255  # right half white: the crop of the 256x512 resize is centred on the edge
    x = t(Image.fromarray(img))
    assert x.shape == (3, 224, 224)
    white = (1 - 0.485) / 0.229
    assert x[0, 100, 0] < 0 and abs(float(x[0, 100, 223]) - white) < 1e-4
    assert abs(float(x[0, 100, 100]) - (-0.485 / 0.229)) < 1e-4


def test_train_transform_output_and_normalisation():
    pp = Preprocessing(input_size=24, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    cfg = DataConfig(auto_augment=None, reprob=0.0, hflip=0.0)
    x = build_transform(cfg, True, pp)(Image.new("RGB", (50, 40), (255, 128, 0)), np.random.default_rng(0))
    assert x.shape == (3, 24, 24) and x.dtype == torch.float32
    assert torch.allclose(x[:, 5, 5], torch.tensor([2.0, (128 / 255 - 0.5) / 0.25, -2.0]), atol=1e-5)


def test_erasing_touches_about_p_of_the_images():
    erase = RandomErasing(p=0.25, mode="pixel")
    rng = np.random.default_rng(1)
    n, touched, areas = 2000, 0, []
    for _ in range(n):
        x = erase(torch.zeros(3, 32, 32), rng)
        changed = (x != 0).any(0)
        if changed.any():
            touched += 1
            areas.append(float(changed.float().mean()))
            assert x[:, changed].std() > 0.5  # per-pixel normal noise, not a constant
    assert abs(touched / n - 0.25) < 0.035
    assert min(areas) > 0.015 and max(areas) < 0.36  # one box of 2%..1/3 of the image


def test_flip_probability_and_defaults_build():
    pp = Preprocessing(input_size=16)
    cfg = DataConfig(auto_augment=None, reprob=0.0, scale=(1.0, 1.0), ratio=(1.0, 1.0))
    t = build_transform(cfg, True, pp)
    img = np.zeros((16, 16, 3), np.uint8)
    img[:, :8] = 255
    flips = sum(float(t(Image.fromarray(img), np.random.default_rng(s))[0, 0, 0]) < 0 for s in range(400))
    assert 150 < flips < 250
    names = [type(s).__name__ for s in build_transform(DataConfig(), True, pp).transforms]
    assert names == ["RandomResizedCrop", "RandomHorizontalFlip", "RandAugment", "ToTensorNormalize",
                     "RandomErasing"]
