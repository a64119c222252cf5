import pytest
import torch
import torch.nn.functional as F

from deit.models import build_architecture, get_entry
from deit.models.resnet import ResNetConfig, infer_config


def randomize_bn(model: torch.nn.Module) -> torch.nn.Module:
    """Random BN affine and statistics: the zero-init residual BN would otherwise hide every residual branch."""
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            for t in (m.weight, m.bias, m.running_mean):
                t.data.normal_(0, 0.5)
            m.running_var.data.uniform_(0.5, 2.0)
    return model


def basic_resnet_params(cin: int, widths: list[int], blocks: list[int], stem_k: int, classes: int) -> int:
    """Hand count: convs (no bias) + 2 per BN channel + 1x1 projections where the shape changes + fc."""
    n = cin * widths[0] * stem_k**2 + 2 * widths[0]
    prev = widths[0]
    for i, (w, d) in enumerate(zip(widths, blocks, strict=True)):
        for j in range(d):
            n += prev * w * 9 + w * w * 9 + 4 * w
            if j == 0 and (i > 0 or prev != w):
                n += prev * w + 2 * w
            prev = w
    return n + prev * classes + classes


def test_resnet_digits_is_the_pilots_174k_teacher():
    # 3x3 stem 3->24, one basic block per stage 24 -> 48 -> 96, 10 classes.
    assert basic_resnet_params(3, [24, 48, 96], [1, 1, 1], 3, 10) == 174_274
    with torch.device("meta"):
        model = build_architecture("resnet_digits")
    assert sum(p.numel() for p in model.parameters()) == 174_274
    pre = get_entry("resnet_digits").preprocessing
    assert (pre.input_size, pre.crop_pct) == (32, 1.0)


@pytest.mark.parametrize(("name", "blocks", "params"), [("resnet18", [2, 2, 2, 2], 11_689_512),
                                                        ("resnet34", [3, 4, 6, 3], 21_797_672)])
def test_torchvision_sizes(name, blocks, params):
    assert basic_resnet_params(3, [64, 128, 256, 512], blocks, 7, 1000) == params  # torchvision's published counts
    with torch.device("meta"):
        model = build_architecture(name)
    assert sum(p.numel() for p in model.parameters()) == params


def torchvision_layout(widths: list[int], blocks: list[int], stem_k: int, classes: int) -> dict:
    """Key -> shape of a torchvision basic-block ResNet, written from its layout rules (not from our modules)."""
    shapes = {}

    def bn(prefix: str, c: int) -> None:
        shapes.update({f"{prefix}.{n}": (c,) for n in ("weight", "bias", "running_mean", "running_var")})
        shapes[f"{prefix}.num_batches_tracked"] = ()

    shapes["conv1.weight"] = (widths[0], 3, stem_k, stem_k)
    bn("bn1", widths[0])
    prev = widths[0]
    for i, (w, d) in enumerate(zip(widths, blocks, strict=True), start=1):
        for j in range(d):
            p = f"layer{i}.{j}"
            shapes[f"{p}.conv1.weight"] = (w, prev, 3, 3)
            bn(f"{p}.bn1", w)
            shapes[f"{p}.conv2.weight"] = (w, w, 3, 3)
            bn(f"{p}.bn2", w)
            if j == 0 and i > 1:
                shapes[f"{p}.downsample.0.weight"] = (w, prev, 1, 1)
                bn(f"{p}.downsample.1", w)
            prev = w
    shapes.update({"fc.weight": (classes, prev), "fc.bias": (classes,)})
    return shapes


@pytest.mark.parametrize(("name", "widths", "blocks", "stem_k", "classes"), [
    ("resnet18", [64, 128, 256, 512], [2, 2, 2, 2], 7, 1000),
    ("resnet_digits", [24, 48, 96], [1, 1, 1], 3, 10),
])
def test_torchvision_key_layout_loads_strictly_and_infers_the_config(name, widths, blocks, stem_k, classes):
    shapes = torchvision_layout(widths, blocks, stem_k, classes)
    with torch.device("meta"):
        model = build_architecture(name)
        sd = {key: torch.empty(shape) for key, shape in shapes.items()}
    model.load_state_dict(sd, strict=True)  # every key, every shape
    assert infer_config(sd) == get_entry(name).config


def test_infer_config_refuses_bottlenecks_and_ignores_foreign_keys():
    sd = {"conv1.weight": torch.zeros(64, 3, 7, 7), "layer1.0.conv1.weight": torch.zeros(64, 64, 1, 1),
          "layer1.0.conv3.weight": torch.zeros(256, 64, 1, 1)}
    with pytest.raises(ValueError, match="bottleneck"):
        infer_config(sd)
    assert infer_config(build_architecture("regnety_002").state_dict()) is None


def reference_forward(sd: dict, blocks: list[int], x: torch.Tensor) -> torch.Tensor:
    """The small-stem basic-block ResNet written from the paper and the key layout alone."""

    def bn(p: str, y: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(y, sd[f"{p}.running_mean"], sd[f"{p}.running_var"], sd[f"{p}.weight"], sd[f"{p}.bias"])

    x = F.relu(bn("bn1", F.conv2d(x, sd["conv1.weight"], padding=1)))
    for i, d in enumerate(blocks, start=1):
        for j in range(d):
            p, stride = f"layer{i}.{j}", 2 if (i > 1 and j == 0) else 1
            y = F.relu(bn(f"{p}.bn1", F.conv2d(x, sd[f"{p}.conv1.weight"], stride=stride, padding=1)))
            y = bn(f"{p}.bn2", F.conv2d(y, sd[f"{p}.conv2.weight"], padding=1))
            if f"{p}.downsample.0.weight" in sd:
                x = bn(f"{p}.downsample.1", F.conv2d(x, sd[f"{p}.downsample.0.weight"], stride=stride))
            x = F.relu(y + x)
    return F.linear(x.mean((2, 3)), sd["fc.weight"], sd["fc.bias"])


def test_forward_matches_a_functional_reference_and_the_contract_shapes():
    model = randomize_bn(build_architecture("resnet_digits")).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        features = model.forward_features(x)
        logits = model(x)
        expected = reference_forward(model.state_dict(), [1, 1, 1], x)
    assert features.shape == (2, 96, 8, 8)
    assert logits.shape == (2, 10) and model.num_classes == 10
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(model.forward_head(features), logits)
    assert model.class_names is None and model.no_weight_decay() == set()
    model.train()
    assert isinstance(model(x), torch.Tensor)


def test_config_validation():
    with pytest.raises(ValueError, match="same length"):
        ResNetConfig(widths=(16, 32), blocks=(1,))
    with pytest.raises(ValueError, match="stem"):
        ResNetConfig(stem="cifar")
    assert ResNetConfig(widths=[8, 16], blocks=[1, 1]) == ResNetConfig(widths=(8, 16), blocks=(1, 1))
