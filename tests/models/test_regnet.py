import json
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from deit.cli import main
from deit.models import build_architecture, get_entry, measure
from deit.models.regnet import RegNet, RegNetConfig, infer_config

# Published sizes (timm's model table; the paper's Table for RegNetY): exact parameter counts and stage layouts.
EXPECTED = {
    "regnety_002": (3_162_996, [24, 56, 152, 368], [1, 1, 4, 7], 8),
    "regnety_004": (4_344_144, [48, 104, 208, 440], [1, 3, 6, 6], 8),
    "regnety_008": (6_263_168, [64, 128, 320, 768], [1, 3, 8, 2], 16),
    "regnety_160": (83_590_140, [224, 448, 1232, 3024], [2, 4, 11, 1], 112),
}
# A RegNetY small enough to run: stages (16, 1), (32, 1), (64, 2) from the generator, SE on.
TINY = RegNetConfig(depth=4, w0=16, wa=16.0, wm=2.0, group_size=8, se_ratio=0.25, num_classes=5)


def randomize_bn(model: torch.nn.Module) -> torch.nn.Module:
    """Random BN affine and statistics: the zero-init residual BN would otherwise hide every residual branch."""
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            for t in (m.weight, m.bias, m.running_mean):
                t.data.normal_(0, 0.5)
            m.running_var.data.uniform_(0.5, 2.0)
    return model


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_exact_params_and_stage_layout_of_named_regnets(name):
    params, widths, depths, group = EXPECTED[name]
    with torch.device("meta"):
        model = build_architecture(name)
    stages = model.config.stages()
    assert [s.width for s in stages] == widths and [s.depth for s in stages] == depths
    assert {s.group_width for s in stages} == {group}
    assert sum(p.numel() for p in model.parameters()) == params


def test_regnety_160_is_the_deit_teacher_with_16_gmacs():
    entry = get_entry("regnety_160")
    assert entry.pretrained_url == "https://dl.fbaipublicfiles.com/deit/regnety_160-a5fe301d.pth"
    pre = entry.preprocessing
    assert (pre.input_size, pre.crop_pct, pre.interpolation) == (224, 0.875, "bicubic")
    with torch.device("meta"):
        model = build_architecture("regnety_160")
    # Paper: 15.9 GF. Linear+Conv multiply-accumulates at 224 px, SE 1x1 convs included.
    assert round(measure(model, 224).gmacs_linear, 2) == 15.91


def test_deit_info_reports_regnety_160(capsys):
    assert main(["info", "regnety_160", "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert (row["family"], row["params"], row["gmacs_linear"], row["img_size"]) == ("regnet", 83_590_140, 15.91, 224)


def timm_layout(stem: int, widths: list[int], depths: list[int], group: int, se_ratio: float, classes: int) -> dict:
    """Key -> shape of a timm RegNet, written from timm's layout rules (not from our modules)."""
    shapes = {}

    def conv_bn(prefix: str, cin: int, cout: int, k: int, groups: int = 1) -> None:
        shapes[f"{prefix}.conv.weight"] = (cout, cin // groups, k, k)
        for name in ("bn.weight", "bn.bias", "bn.running_mean", "bn.running_var"):
            shapes[f"{prefix}.{name}"] = (cout,)
        shapes[f"{prefix}.bn.num_batches_tracked"] = ()

    conv_bn("stem", 3, stem, 3)
    cin = stem
    for i, (w, d) in enumerate(zip(widths, depths, strict=True), start=1):
        for j in range(1, d + 1):
            p = f"s{i}.b{j}"
            conv_bn(f"{p}.conv1", cin, w, 1)
            conv_bn(f"{p}.conv2", w, w, 3, groups=w // group)
            if se_ratio:
                rd = round(cin * se_ratio)
                shapes.update({f"{p}.se.fc1.weight": (rd, w, 1, 1), f"{p}.se.fc1.bias": (rd,),
                               f"{p}.se.fc2.weight": (w, rd, 1, 1), f"{p}.se.fc2.bias": (w,)})
            conv_bn(f"{p}.conv3", w, w, 1)
            if j == 1:  # stride 2 and/or a width change: 1x1 projection shortcut
                conv_bn(f"{p}.downsample", cin, w, 1)
            cin = w
    shapes.update({"head.fc.weight": (classes, cin), "head.fc.bias": (classes,)})
    return shapes


def random_state_dict(shapes: dict) -> dict:
    sd = {}
    for key, shape in shapes.items():
        if key.endswith("num_batches_tracked"):
            sd[key] = torch.tensor(7)
        elif key.endswith("running_var"):
            sd[key] = torch.rand(shape) + 0.5
        else:
            sd[key] = torch.randn(shape) * 0.1
    return sd


def test_timm_key_layout_of_regnety_002_loads_strictly_and_infers_its_config():
    params, widths, depths, group = EXPECTED["regnety_002"]
    sd = random_state_dict(timm_layout(32, widths, depths, group, 0.25, 1000))
    assert sum(v.numel() for k, v in sd.items() if not k.endswith(("running_mean", "running_var", "tracked"))) == params
    model = build_architecture("regnety_002")
    assert set(model.state_dict()) == set(sd)
    model.load_state_dict(sd, strict=True)
    torch.testing.assert_close(model.s4.b7.se.fc2.bias, sd["s4.b7.se.fc2.bias"])
    # The config comes back from the shapes alone, as the named model's.
    assert infer_config(sd) == get_entry("regnety_002").config
    sd_10 = {**sd, "head.fc.weight": sd["head.fc.weight"][:10], "head.fc.bias": sd["head.fc.bias"][:10]}
    assert infer_config(sd_10) == replace(get_entry("regnety_002").config, num_classes=10)


def test_infer_config_of_an_unnamed_regnet_and_of_foreign_keys():
    cfg = RegNetConfig(depth=5, w0=24, wa=20.0, wm=2.2, group_size=8, se_ratio=0.0, num_classes=3)  # a RegNetX
    sd = RegNet(cfg).state_dict()
    inferred = infer_config(sd)
    assert inferred.stages() == cfg.stages() and (inferred.se_ratio, inferred.num_classes) == (0.0, 3)
    RegNet(inferred).load_state_dict(sd, strict=True)
    assert infer_config(build_architecture("resnet_digits").state_dict()) is None
    assert infer_config({"cls_token": torch.zeros(1, 1, 8), "blocks.0.norm1.weight": torch.zeros(8)}) is None
    broken = {**sd, "s1.b1.se.fc1.weight": torch.zeros(4, 16, 1, 1)}  # SE on one block only
    with pytest.raises(ValueError, match="cannot express"):
        infer_config(broken)


def reference_forward(sd: dict, stages: list[tuple[int, int]], x: torch.Tensor) -> torch.Tensor:
    """RegNetY inference written from the paper and the key layout alone: stem, then per block
    relu(bn(conv3(se(relu(bn(conv2(relu(bn(conv1(x))))))))) + shortcut), global pool, head.fc."""

    def cbn(p: str, x: torch.Tensor, stride: int = 1, groups: int = 1, act: bool = True) -> torch.Tensor:
        w = sd[f"{p}.conv.weight"]
        y = F.conv2d(x, w, stride=stride, padding=w.shape[-1] // 2, groups=groups)
        y = F.batch_norm(y, sd[f"{p}.bn.running_mean"], sd[f"{p}.bn.running_var"], sd[f"{p}.bn.weight"],
                         sd[f"{p}.bn.bias"], eps=1e-5)
        return F.relu(y) if act else y

    x = cbn("stem", x, stride=2)
    for i, (depth, group) in enumerate(stages, start=1):
        for j in range(1, depth + 1):
            p, stride = f"s{i}.b{j}", 2 if j == 1 else 1
            y = cbn(f"{p}.conv1", x)
            y = cbn(f"{p}.conv2", y, stride=stride, groups=y.shape[1] // group)
            s = F.relu(F.conv2d(y.mean((2, 3), keepdim=True), sd[f"{p}.se.fc1.weight"], sd[f"{p}.se.fc1.bias"]))
            y = y * torch.sigmoid(F.conv2d(s, sd[f"{p}.se.fc2.weight"], sd[f"{p}.se.fc2.bias"]))
            y = cbn(f"{p}.conv3", y, act=False)
            shortcut = cbn(f"{p}.downsample", x, stride=stride, act=False) if j == 1 else x
            x = F.relu(y + shortcut)
    return F.linear(x.mean((2, 3)), sd["head.fc.weight"], sd["head.fc.bias"])


def test_forward_matches_a_functional_reference_and_the_contract_shapes():
    model = randomize_bn(RegNet(TINY)).eval()
    assert [(s.width, s.depth) for s in TINY.stages()] == [(16, 1), (32, 1), (64, 2)]
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        features = model.forward_features(x)
        logits = model(x)
        expected = reference_forward(model.state_dict(), [(s.depth, s.group_width) for s in TINY.stages()], x)
    assert features.shape == (2, 64, 4, 4)  # stride 2 (stem) x 2 per stage
    assert logits.shape == (2, 5) and model.num_classes == 5
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(model.forward_head(features), logits)
    assert model.class_names is None and model.no_weight_decay() == set()
    model.train()
    assert isinstance(model(x), torch.Tensor)


# The classifier contract, for both convnet families: (model factory, input size, feature width).
CONVNETS = {
    "regnet": (lambda **kw: RegNet(replace(TINY, **kw)), 64, 64),
    "resnet": (lambda **kw: build_architecture("resnet_digits", **kw), 32, 96),
}


@pytest.mark.parametrize("family", sorted(CONVNETS))
def test_channels_last_gives_the_same_output(family):
    factory, size, _ = CONVNETS[family]
    model = randomize_bn(factory()).eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        ref = model(x)
        model = model.to(memory_format=torch.channels_last)
        out = model(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("family", sorted(CONVNETS))
def test_reset_classifier(family):
    factory, size, features = CONVNETS[family]
    model = factory().eval()
    model.reset_classifier(7)
    assert model.num_classes == 7 and model.config.num_classes == 7
    assert model(torch.randn(1, 3, size, size)).shape == (1, 7)
    model.reset_classifier(0)
    assert model(torch.randn(1, 3, size, size)).shape == (1, features)  # pooled features


@pytest.mark.parametrize("family", sorted(CONVNETS))
def test_drop_path_acts_only_in_training(family):
    factory, size, _ = CONVNETS[family]
    model = randomize_bn(factory(drop_path_rate=0.5))
    plain = factory()
    plain.load_state_dict(model.state_dict())
    x = torch.randn(4, 3, size, size)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), plain.eval()(x))
        model.train()
        plain.train()
        torch.manual_seed(1)
        a = model(x)
        torch.manual_seed(2)
        b = model(x)
        torch.testing.assert_close(plain(x), plain(x))
    assert not torch.allclose(a, b)
    rates = [m.drop_prob for m in model.modules() if type(m).__name__ == "DropPath"]
    expected = {"regnet": [0.0, 0.5 / 3, 1.0 / 3, 0.5], "resnet": [0.0, 0.25, 0.5]}[family]
    assert rates == pytest.approx(expected)  # linear over all blocks


def test_config_validation_and_json_round_trip():
    with pytest.raises(ValueError, match="multiple of 8"):
        RegNetConfig(w0=20)
    with pytest.raises(ValueError, match="go together"):
        RegNetConfig(stage_widths=(16, 32))
    explicit = RegNetConfig(stage_widths=[16, 32], stage_depths=[1, 2], group_size=8)
    assert explicit == RegNetConfig(**json.loads(json.dumps(explicit.to_dict())))
    assert [(s.width, s.depth) for s in explicit.stages()] == [(16, 1), (32, 2)]
