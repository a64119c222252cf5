"""airbench's CIFAR-10 net: its size, the patch-whitening first convolution computed from data, its checkpoints."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from deit.checkpoints import load_checkpoint, read_checkpoint, save_checkpoint
from deit.models import build_architecture, count_params
from deit.models.airbench import patch_covariance, whitening_weights
from deit.models.contract import data_init_images


def smooth_images(n: int = 64, size: int = 16, seed: int = 0) -> torch.Tensor:
    """Images whose neighbouring pixels and channels are correlated (as photographs are): the case whitening is
    for. Blurred noise plus a shared component across channels."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, size, size, generator=g)
    x = x + 0.7 * x.mean(dim=1, keepdim=True)
    return F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), 3, stride=1) * 3


@pytest.mark.parametrize("name, params", [("airbench94_cifar", 1_972_792), ("airbench93_cifar", 569_656)])
def test_exact_parameter_counts(name, params):
    with torch.device("meta"):
        assert count_params(build_architecture(name)) == params


def test_whitening_decorrelates_the_estimation_patches():
    images = smooth_images()
    cov = patch_covariance(images, 2)
    assert (cov - torch.diag(cov.diag())).abs().max() > 0.3  # the patches are strongly correlated to begin with
    weight = whitening_weights(images, 2, eps=0.0)
    assert weight.shape == (24, 3, 2, 2)
    out = F.conv2d(images, weight[:12]).permute(0, 2, 3, 1).reshape(-1, 12).double()
    torch.testing.assert_close((out.T @ out / out.shape[0]).float(), torch.eye(12), atol=2e-3, rtol=0)
    torch.testing.assert_close(weight[12:], -weight[:12])  # each component in both signs (a GELU follows)


def test_the_model_whitens_from_data_and_never_trains_that_weight():
    model = build_architecture("airbench94_cifar", widths=(8, 8, 16), whiten=True)
    assert data_init_images(model) == 5000 and not model.whiten.weight.requires_grad
    assert data_init_images(build_architecture("airbench94_cifar", widths=(8, 8, 16))) == 0  # whiten off: none
    images = smooth_images(size=32)
    model.init_from_data(images)
    torch.testing.assert_close(model.whiten.weight, whitening_weights(images, 2))
    before = model.whiten.weight.clone()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    F.cross_entropy(model(images[:8]), torch.arange(8) % 10).backward()
    opt.step()
    assert torch.equal(model.whiten.weight, before) and model.whiten.bias.grad is not None


def test_checkpoints_keep_the_whitening_and_load_as_teachers(tmp_path):
    model = build_architecture("airbench93_cifar", num_classes=7, widths=(8, 16, 16), whiten=True)
    model.init_from_data(smooth_images(size=32))
    model.eval()
    save_checkpoint(model, tmp_path / "t.safetensors")
    torch.save({"model": model.state_dict()}, tmp_path / "t.pth")  # a foreign file: found from its keys
    assert read_checkpoint(tmp_path / "t.pth").family == "airbench"
    x = torch.randn(2, 3, 32, 32)
    for path in (tmp_path / "t.safetensors", tmp_path / "t.pth"):
        loaded = load_checkpoint(path).eval()
        torch.testing.assert_close(loaded.whiten.weight, model.whiten.weight)
        with torch.no_grad():
            torch.testing.assert_close(loaded(x), model(x))
