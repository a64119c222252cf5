"""The convnets made for 32 px inputs: ResNet-9 (a family of its own) and the CIFAR ResNet-18."""

import pytest
import torch

from deit.checkpoints import load_checkpoint, read_checkpoint, save_checkpoint
from deit.models import build_architecture, count_params, get_entry, measure


@pytest.mark.parametrize("name, params", [("resnet9", 6_573_120), ("resnet9_small", 1_646_112),
                                          ("resnet18_cifar", 11_173_962)])
def test_exact_parameter_counts(name, params):
    with torch.device("meta"):
        assert count_params(build_architecture(name)) == params
    assert get_entry(name).preprocessing.input_size == 32


def test_resnet9_shapes_at_32_px():
    model = build_architecture("resnet9_small").eval()
    x = torch.randn(2, 3, 32, 32)
    shapes = []
    for stage in (model.prep, model.layer1, model.layer2, model.layer3):
        x = stage(x)
        shapes.append(tuple(x.shape[1:]))
    assert shapes == [(32, 32, 32), (64, 16, 16), (128, 8, 8), (256, 4, 4)]  # no pooling before layer1
    assert model.forward_head(x).shape == (2, 10)
    assert model.preprocessing.mean[0] == pytest.approx(0.4914) and model.preprocessing.crop_pct == 1.0


def test_cifar_resnet18_has_a_3x3_stem_and_no_max_pool():
    model = build_architecture("resnet18_cifar")
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert isinstance(model.maxpool, torch.nn.Identity)
    assert model.forward_features(torch.randn(1, 3, 32, 32)).shape == (1, 512, 4, 4)


def test_macs_at_32_px():
    # 3x3 convolutions on 32/16/8/4 px maps: ~95M MACs at half width, 4x that at full width.
    small = measure(build_architecture("resnet9_small"), 32).gmacs_linear
    assert small == pytest.approx(0.0963, abs=0.002)
    assert measure(build_architecture("resnet9"), 32).gmacs_linear == pytest.approx(4 * small, rel=0.02)


def test_resnet9_checkpoints_load_as_teachers(tmp_path):
    model = build_architecture("resnet9_small", num_classes=7).eval()
    model.class_names = [f"c{i}" for i in range(7)]
    save_checkpoint(model, tmp_path / "t.safetensors")
    torch.save({"model": model.state_dict()}, tmp_path / "t.pth")  # a foreign file: found from its keys
    assert read_checkpoint(tmp_path / "t.pth").family == "resnet9"
    x = torch.randn(2, 3, 32, 32)
    for path in (tmp_path / "t.safetensors", tmp_path / "t.pth"):
        loaded = load_checkpoint(path)
        with torch.no_grad():
            torch.testing.assert_close(loaded(x), model(x))
