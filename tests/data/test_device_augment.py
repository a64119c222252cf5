"""``data.device_augment``: the workers' half and the device stage together make what the worker path makes, from
the same per-sample draws; the loader's batches are reproducible with any number of workers and on resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import deit.data.device_steps as device_steps
from deit.data import DataConfig, DeviceBatch, build_device_augment, build_loader
from deit.data.device_augment import DeviceAugmentWorker, split_transform
from deit.data.device_simple_crop import SimpleCropStep
from deit.data.device_steps import DenseLayout
from deit.data.loader import STREAM_MODULES
from deit.data.transforms import Compose, RandomResizedCrop, SimpleRandomCrop, ToTensorNormalize, build_transform
from deit.models import Preprocessing
from deit.runtime.distributed import DistEnv
from deit.train.loss import DistillationObjective
from deit.train.task import TrainTask

RECIPES = {
    "deit": {},
    "every op, three boxes": dict(auto_augment="rand-m9-mstd0.5-inc1-p1.0-n3", reprob=1.0, recount=3),
    "bilinear, colour boxes": dict(train_interpolation="bilinear", remode="rand", reprob=1.0, recount=2),
    "nearest, zero boxes, uniform magnitude": dict(train_interpolation="nearest", remode="const",
                                                   auto_augment="rand-m7-mstd101", reprob=0.5),
    "padded crop": dict(train_crop="padded", auto_augment="rand-m9-mstd0.5", reprob=0.5),
    "no flip, no erasing": dict(hflip=0.0, reprob=0.0, auto_augment="rand-m5-n1"),
    "simple crop, 3-Augment": dict(train_crop="simple", three_augment=True, color_jitter=0.3, auto_augment=None,
                                   reprob=0.0),
    "simple crop, bilinear, RandAugment, erasing": dict(train_crop="simple", train_interpolation="bilinear",
                                                        reprob=0.5),
}
SIMPLE = RECIPES["simple crop, 3-Augment"]


def _photos(count: int = 20) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    out = []
    for _ in range(count):
        w, h = (int(v) for v in rng.integers(36, 90, 2))
        smooth = Image.fromarray(rng.uniform(0, 255, (5, 5, 3)).astype(np.uint8)).resize((w, h), Image.BICUBIC)
        out.append(Image.fromarray(np.clip(np.asarray(smooth) + rng.normal(0, 12, (h, w, 3)), 0, 255)
                                   .astype(np.uint8)))
    return out


def _worker_path(cfg: DataConfig, pre: Preprocessing, photos: list[Image.Image], seed: int) -> torch.Tensor:
    t = build_transform(cfg, True, pre)
    return torch.stack([t(img, np.random.default_rng([seed, 1, i])) for i, img in enumerate(photos)])


def _device_path(cfg: DataConfig, pre: Preprocessing, photos: list[Image.Image], seed: int) -> torch.Tensor:
    worker = DeviceAugmentWorker.build(cfg, pre)
    batch = worker.collate([worker(img, np.random.default_rng([seed, 1, i])) for i, img in enumerate(photos)])
    return build_device_augment(cfg, pre)(batch)


@pytest.mark.parametrize("recipe", RECIPES)
def test_the_device_stage_makes_what_the_worker_path_makes(recipe):
    cfg, pre, photos = DataConfig(device_augment=True, **RECIPES[recipe]), Preprocessing(input_size=32), _photos()
    for seed in range(4):
        expected = _worker_path(cfg, pre, photos, seed)
        got = _device_path(cfg, pre, photos, seed)
        assert got.dtype == torch.float32 and got.shape == expected.shape == (20, 3, 32, 32)
        assert torch.equal(got, expected), f"seed {seed}: {(got != expected).sum()} values differ"


def test_a_batch_resized_in_many_chunks_is_the_same(monkeypatch):
    cfg, pre, photos = DataConfig(device_augment=True), Preprocessing(input_size=32), _photos()
    monkeypatch.setattr(device_steps, "CHUNK_PIXELS", 6000)  # a chunk of one to three boxes
    worker = DeviceAugmentWorker.build(cfg, pre)
    batch = worker.collate([worker(img, np.random.default_rng([0, 1, i])) for i, img in enumerate(photos)])
    assert len(batch.params["layout"]["chunks"]) >= 6
    assert torch.equal(build_device_augment(cfg, pre)(batch), _worker_path(cfg, pre, photos, 0))


# (width, height): wide, tall, very tall (Pillow's vertical pass first), square, exactly 32 on the shorter side (no
# resize; one side only), smaller than 32 (upscale), odd sizes, a long panorama
SHAPES = [(90, 41), (41, 90), (35, 300), (300, 35), (64, 64), (32, 32), (32, 71), (71, 32), (20, 27), (13, 45),
          (31, 33), (47, 39), (400, 61)]


def _at(corner: str, monkeypatch) -> None:
    """The simple crop's window forced into a corner of the padded image, its generator used as before."""
    draw = SimpleRandomCrop.get_params

    def get_params(self, width: int, height: int, rng: np.random.Generator) -> tuple[int, int]:
        top, left = draw(self, width, height, rng)
        last = (height + 2 * self.padding - self.size, width + 2 * self.padding - self.size)
        return (0 if corner[0] == "t" else last[0] if corner[0] == "b" else top,
                0 if corner[1] == "l" else last[1] if corner[1] == "r" else left)

    monkeypatch.setattr(SimpleRandomCrop, "get_params", get_params)


@pytest.mark.parametrize("padding", [4, 0, 40])
def test_the_device_resizes_the_simple_crop_as_the_worker_path_does_on_every_shape(padding, monkeypatch):
    cfg, pre = DataConfig(device_augment=True, crop_padding=padding, **SIMPLE), Preprocessing(input_size=32)
    rng = np.random.default_rng(padding)
    photos = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in SHAPES]
    assert isinstance(DeviceAugmentWorker.build(cfg, pre).steps[0], SimpleCropStep)
    for corner in ("random", "tl", "br", "tr", "bl"):  # the windows that reach into each side's padding
        with monkeypatch.context() as m:
            _at(corner, m)
            expected = _worker_path(cfg, pre, photos, 0)
            m.setattr(Image.Image, "resize", None)  # the workers no longer resize the photo
            worker = DeviceAugmentWorker.build(cfg, pre)
            batch = worker.collate([worker(img, np.random.default_rng([0, 1, i])) for i, img in enumerate(photos)])
        assert {vertical for *_, vertical in batch.params["layout"]["chunks"]} == {True, False}  # both pass orders
        for chunk_pixels in (device_steps.CHUNK_PIXELS, 3000):
            monkeypatch.setattr(device_steps, "CHUNK_PIXELS", chunk_pixels)
            got = build_device_augment(cfg, pre)(batch.to("cpu"))
            wrong = sorted(set((got != expected).nonzero()[:, 0].tolist()))
            assert not wrong, f"window {corner}, chunks of {chunk_pixels} pixels: the photos {wrong} differ"


def test_the_worker_sends_the_strip_the_simple_crop_reads_and_draws_the_rest_as_before():
    cfg, pre = DataConfig(device_augment=True, **SIMPLE), Preprocessing(input_size=32)
    panorama = np.random.default_rng(1).integers(0, 256, (250, 1000, 3), dtype=np.uint8)  # resized to 128 x 32
    worker = DeviceAugmentWorker.build(cfg, pre)
    sample = worker(Image.fromarray(panorama), np.random.default_rng(7))
    (y0, x0), (h, w) = sample.params["layout"]["offset"], sample.params["layout"]["hw"]
    assert np.array_equal(sample.image, panorama[y0:y0 + h, x0:x0 + w])
    assert h <= 250 and w < 300 and sample.image.nbytes < panorama.nbytes / 3
    # every later draw (flip, 3-Augment, jitter) is the one the workers made when they cropped themselves
    _, steps = split_transform(build_transform(cfg, True, pre))
    cropping = DeviceAugmentWorker(Compose([SimpleRandomCrop(32, cfg.crop_padding)]), [DenseLayout(), *steps[1:]])
    for seed in range(20):
        a, b = (np.random.default_rng(seed), np.random.default_rng(seed))
        ours, theirs = worker(Image.fromarray(panorama), a).params, cropping(Image.fromarray(panorama), b).params
        assert {k: v for k, v in ours.items() if k != "layout"} == {k: v for k, v in theirs.items() if k != "layout"}
        assert a.random() == b.random()


def _cfg(**kw) -> DataConfig:
    base = dict(dataset="synthetic", img_size=40, synthetic_classes=4, synthetic_train=48, synthetic_val=10,
                batch_size=8, num_workers=0, persistent_workers=False, device_augment=True)
    return DataConfig(**{**base, **kw})


def _batches(loader, epoch: int, start_batch: int = 0) -> list:
    loader.sampler.set_epoch(epoch, start_batch=start_batch)
    return list(loader)


def test_the_loader_sends_uint8_boxes_and_the_same_batches_with_any_workers_and_on_resume(pp32):
    stage = build_device_augment(_cfg(), pp32)
    plain = _batches(build_loader(_cfg(device_augment=False), "train", preprocessing=pp32, seed=5), epoch=2)
    inline = _batches(build_loader(_cfg(), "train", preprocessing=pp32, seed=5), epoch=2)
    workers = _batches(build_loader(_cfg(num_workers=2), "train", preprocessing=pp32, seed=5), epoch=2)
    resumed = _batches(build_loader(_cfg(), "train", preprocessing=pp32, seed=5), epoch=2, start_batch=4)
    assert len(plain) == len(inline) == len(workers) == len(resumed) + 4 == 6
    assert isinstance(inline[0][0], DeviceBatch) and inline[0][0].images.dtype == torch.uint8
    for i, ((x, y), (a, ya), (b, yb)) in enumerate(zip(plain, inline, workers, strict=True)):
        assert torch.equal(ya, y) and torch.equal(yb, y)
        assert torch.equal(stage(a), x) and torch.equal(stage(b), x)  # the float loader's batch, bit for bit
        if i >= 4:
            assert torch.equal(stage(resumed[i - 4][0]), x)
    # the val loader is the float one
    x, _ = next(iter(build_loader(_cfg(), "val", preprocessing=pp32)))
    assert x.dtype == torch.float32


def test_the_loader_with_the_simple_crop_gives_the_float_loaders_batches(pp32):
    stage = build_device_augment(_cfg(**SIMPLE), pp32)
    plain = _batches(build_loader(_cfg(device_augment=False, **SIMPLE), "train", preprocessing=pp32, seed=3), epoch=1)
    ours = _batches(build_loader(_cfg(**SIMPLE), "train", preprocessing=pp32, seed=3), epoch=1)
    assert len(plain) == len(ours) == 6
    for (x, y), (batch, labels) in zip(plain, ours, strict=True):
        assert torch.equal(labels, y) and torch.equal(stage(batch.to("cpu")), x)


def test_the_setting_is_checked_and_keyed_with_the_stream():
    with pytest.raises(ValueError, match="device_augment must be true or false"):
        DataConfig(device_augment="yes")
    assert {"device_augment", "device_steps", "device_ops", "device_resize", "device_simple_crop",
            "device_three_augment"} <= set(STREAM_MODULES)
    assert build_device_augment(DataConfig(), Preprocessing(input_size=32)) is None


def test_a_transform_without_a_device_version_is_refused_with_the_fix():
    class Posterise:  # a user's (or a future recipe's) transform
        def __call__(self, img, rng):
            return img

    with pytest.raises(ValueError, match="Posterise has no device version.*data.device_augment=false"):
        split_transform(Compose([RandomResizedCrop(32), Posterise(), ToTensorNormalize((0.5,) * 3, (0.5,) * 3)]))


def test_the_task_and_the_loader_must_agree(pp32):
    task = TrainTask(None, DistillationObjective(torch.nn.Identity()), env=DistEnv())
    (batch, labels), = _batches(build_loader(_cfg(batch_size=48), "train", preprocessing=pp32), epoch=0)
    with pytest.raises(ValueError, match="disagree on data.device_augment"):
        task.view(batch, labels, 0, 0)
    task.augment = build_device_augment(_cfg(), pp32)
    x, _ = task.view(batch, labels, 0, 0)
    assert x.shape == (48, 3, 32, 32) and x.dtype == torch.float32
