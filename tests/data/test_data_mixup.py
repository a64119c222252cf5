import pytest
import torch
from torch.nn import functional as F

from deit.data import Mixup, smooth_one_hot
from deit.train.objectives import SoftTargetCrossEntropy


def _batch(n=8, c=3, s=16):
    # image i is the constant i + 1: mixing is readable off the pixel values
    x = torch.arange(1, n + 1, dtype=torch.float32).view(n, 1, 1, 1).expand(n, c, s, s).clone()
    return x, torch.arange(n) % 5


def test_targets_sum_to_one_and_carry_smoothing():
    m = Mixup(0.8, 1.0, label_smoothing=0.1, num_classes=5)
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        x, y = _batch()
        _, t = m(x, y, generator=g)
        assert torch.allclose(t.sum(1), torch.ones(8), atol=1e-6)
        assert t.min() >= 0.1 / 5 - 1e-7


def test_cutmix_lambda_equals_the_pasted_area():
    m = Mixup(0.0, 1.0, label_smoothing=0.0, num_classes=8)
    g = torch.Generator().manual_seed(1)
    seen = 0
    for _ in range(40):
        x, _ = _batch(n=8, s=20)
        y = torch.arange(8)
        mixed, t = m(x, y, generator=g)
        assert m.last_mode == "cutmix"
        own = (mixed[0, 0] == 1).float().mean().item()  # image 0 keeps its own pixels outside the box
        assert own == pytest.approx(m.last_lam, abs=1e-6)
        assert t[0, 0].item() == pytest.approx(m.last_lam, abs=1e-6)
        assert t[0, 7].item() == pytest.approx(1 - m.last_lam, abs=1e-6)  # paired with the flipped batch
        seen += own < 1
    assert seen > 30


def test_mixup_is_a_convex_blend_with_the_flipped_batch():
    m = Mixup(0.8, 0.0, label_smoothing=0.0, num_classes=8)
    x, _ = _batch()
    mixed, t = m(x, torch.arange(8), generator=torch.Generator().manual_seed(2))
    lam = m.last_lam
    assert m.last_mode == "mixup" and 0 < lam < 1
    assert torch.allclose(mixed[0, 0, 0, 0], torch.tensor(lam * 1 + (1 - lam) * 8))
    assert torch.allclose(t[0], torch.tensor([lam, 0, 0, 0, 0, 0, 0, 1 - lam]))


def test_switch_prob_mix_prob_and_generator_determinism():
    m = Mixup(0.8, 1.0, switch_prob=0.5, num_classes=5)
    g = torch.Generator().manual_seed(3)
    modes = [m.sample(g)[1] for _ in range(2000)]
    assert abs(sum(modes) / 2000 - 0.5) < 0.04
    off = Mixup(0.8, 1.0, prob=0.0, num_classes=5)
    x, y = _batch()
    out, t = off(x.clone(), y)
    assert off.last_mode == "none" and torch.equal(out, x) and torch.equal(t, smooth_one_hot(y, 5, 0.1))
    a = m(*_batch(), generator=torch.Generator().manual_seed(9))
    b = m(*_batch(), generator=torch.Generator().manual_seed(9))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    with pytest.raises(ValueError, match="even batch"):
        m(*_batch(n=7))


def test_smooth_one_hot_and_soft_target_ce():
    y = torch.tensor([2, 0])
    t = smooth_one_hot(y, 4, 0.1)
    assert torch.allclose(t[0], torch.tensor([0.025, 0.025, 0.925, 0.025]))
    logits = torch.randn(2, 4)
    assert torch.allclose(SoftTargetCrossEntropy()(logits, t), F.cross_entropy(logits, y, label_smoothing=0.1))
