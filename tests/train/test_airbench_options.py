"""The airbench training options, each alone: Lookahead, alternating flips, multicrop test-time augmentation, the lr
multiple of the no-decay parameters, and the whitening computed once from training images before step 0."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from deit.data import build_dataset, build_loader
from deit.data.config import DataConfig
from deit.data.datasets import ImageDataset
from deit.data.transforms import AlternatingHorizontalFlip, SampleKey
from deit.inference.evaluation import translated, tta_head_outputs
from deit.models import Preprocessing
from deit.models.airbench import Airbench, AirbenchConfig, whitening_weights
from deit.models.contract import SINGLE_HEAD
from deit.train import load_config, train
from deit.train.components import data_init_sample
from deit.train.config import ConfigError
from deit.train.ema import Lookahead
from deit.train.optim import LRSchedule, build_optimizer


def test_lookahead_pulls_the_weights_back_every_k_steps_and_ends_on_the_slow_weights():
    model = nn.Linear(2, 1, bias=False)
    nn.init.zeros_(model.weight)
    la = Lookahead(model, every=2, decay=0.5)
    total, slow = 4, torch.zeros(1, 2)
    for step in range(1, total + 1):
        with torch.no_grad():
            model.weight.add_(1.0)  # an "optimizer step"
        fast = model.weight.detach().clone()
        la.after_step(model, step, total)
        if step % 2 == 0:
            d = 0.5 * (step / total) ** 3
            slow = slow + (1 - d) * (fast - slow)
            torch.testing.assert_close(model.weight.detach(), slow)
        else:
            torch.testing.assert_close(model.weight.detach(), fast)
    other = Lookahead(nn.Linear(2, 1, bias=False), every=9, decay=0.1)
    other.load_state_dict(la.state_dict())
    assert other.every == 2 and torch.equal(other.slow["weight"], la.slow["weight"])
    # The last step of the schedule sets the weights to the slow ones even between pulls.
    la3 = Lookahead(model, every=5, decay=0.5)
    with torch.no_grad():
        model.weight.add_(3.0)
    la3.after_step(model, 3, 3)
    torch.testing.assert_close(model.weight.detach(), la3.slow["weight"])


def test_alternating_flip_flips_each_image_the_other_way_every_odd_epoch():
    flip = AlternatingHorizontalFlip(0.5)
    first = [flip.flipped(SampleKey(7, 0, i)) for i in range(400)]
    assert 150 < sum(first) < 250  # a fair first choice per image
    for epoch in range(1, 5):
        assert [flip.flipped(SampleKey(7, epoch, i)) for i in range(400)] == [f != (epoch % 2 == 1) for f in first]
    assert first != [flip.flipped(SampleKey(8, 0, i)) for i in range(400)]  # the seed draws the first choice


class _Arrows(ImageDataset):
    """Images that are not their own mirror image: a bright left column, a label per image."""

    def __init__(self, n: int = 16) -> None:
        self.classes, self.targets, self.n = ["a", "b"], [i % 2 for i in range(n)], n

    def __len__(self) -> int:
        return self.n

    def load(self, index: int) -> tuple[Image.Image, int]:
        a = np.zeros((8, 8, 3), np.uint8)
        a[:, 0] = 255
        a[index % 8, 1] = 128
        return Image.fromarray(a), self.targets[index]

    def fingerprint(self) -> str:
        return "arrows"


def test_the_loader_shows_each_image_both_ways_over_two_epochs():
    cfg = DataConfig(dataset="synthetic", img_size=8, batch_size=4, num_workers=0, train_crop="padded", crop_padding=0,
                     hflip=0.5, hflip_mode="alternating", auto_augment=None, reprob=0.0, mixup=0.0, cutmix=0.0,
                     repeated_aug=False)
    ds = _Arrows()
    loader = build_loader(cfg, "train", preprocessing=Preprocessing(input_size=8, crop_pct=1.0), dataset=ds, seed=3,
                          distributed=False)

    def flipped_by_index(epoch: int) -> dict[int, bool]:
        loader.sampler.set_epoch(epoch)
        order = [i for i, _ in loader.sampler]
        images = torch.cat([x for x, _ in loader])
        return {i: bool(img[0, :, -1].mean() > img[0, :, 0].mean()) for i, img in zip(order, images, strict=True)}

    e0, e1, e2 = flipped_by_index(0), flipped_by_index(1), flipped_by_index(2)
    assert 0 < sum(e0.values()) < len(e0)
    assert all(e1[i] != e0[i] for i in e0) and e2 == e0


def test_multicrop_averages_six_views_with_airbench_weights():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.LazyLinear(5)).eval()
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(translated(x, 1)[..., 1:, 1:], x[..., :-1, :-1])  # moved down-right by one pixel
    assert torch.equal(translated(x, -1)[..., :-1, :-1], x[..., 1:, 1:])
    with torch.no_grad():
        pair = lambda v: (model(v) + model(v.flip(-1))) / 2  # noqa: E731
        expected = pair(x) / 2 + (pair(translated(x, -1)) + pair(translated(x, 1))) / 4
        got = tta_head_outputs(model, x, "multicrop")[SINGLE_HEAD]
        torch.testing.assert_close(got, expected)
        assert not torch.allclose(got, tta_head_outputs(model, x, "flip")[SINGLE_HEAD])


def test_no_decay_lr_scale_multiplies_the_exempt_groups_lr():
    cfg = load_config("cifar10-airbench-teacher", ["optim.no_decay_lr_scale=64"])
    model = Airbench(AirbenchConfig(widths=(8, 8, 16)))
    opt = build_optimizer(cfg.optim, model, 0.1)
    LRSchedule("constant", 0.1, 10).apply(opt, 3)
    decayed, exempt = opt.param_groups
    assert decayed["lr"] == pytest.approx(0.1) and exempt["lr"] == pytest.approx(6.4)
    assert any(p is model.block1.norm1.bias for p in exempt["params"])


@pytest.mark.parametrize("override, message", [("eval.tta=crops", "eval.tta"),
                                                ("lookahead.every=0", "lookahead.every"),
                                                ("lookahead.decay=1", "lookahead.decay"),
                                                ("data.hflip_mode=sometimes", "hflip_mode")])
def test_bad_option_values_are_refused(override, message):
    with pytest.raises((ConfigError, ValueError), match=message):
        load_config("cifar10-airbench-teacher", [override])


def test_the_preset_whitens_once_before_step_0_and_a_continued_run_keeps_it(cifar_folder, tmp_path, monkeypatch,
                                                                              capsys):
    out = tmp_path / "run"
    overrides = ["data.dataset=imagefolder", f"data.root={cifar_folder}", "data.batch_size=8", "data.num_workers=0",
                 "progress=false", "amp=none", "budget_minutes=null", "epochs=1", f"output_dir={out}",
                 "model.args={whiten: true, widths: [8, 8, 16]}"]
    cfg = load_config("cifar10-airbench-teacher", overrides)
    result = train(cfg)
    assert "data-dependent initialisation (Airbench.init_from_data) from 24 training images" in capsys.readouterr().out
    assert result.summary["steps"] == 3 and "top1" in result.summary["final"]  # validated with the preset's TTA
    train_set = build_dataset(cfg.data, "train")
    images = data_init_sample(cfg, train_set, result.model.preprocessing, 5000)
    expected = whitening_weights(images, 2)
    assert torch.equal(result.model.whiten.weight, expected)  # Lookahead kept it: it is never trained
    assert torch.equal(images, data_init_sample(cfg, train_set, result.model.preprocessing, 5000))

    def recompute(self, images):
        raise AssertionError("a continued run recomputed the whitening")

    monkeypatch.setattr(Airbench, "init_from_data", recompute)
    longer = train(load_config("cifar10-airbench-teacher", [*overrides, "epochs=2"]), resume=True)
    assert longer.summary["steps"] == 6 and torch.equal(longer.model.whiten.weight, expected)
