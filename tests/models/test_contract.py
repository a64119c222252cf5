"""The model contract (deit.models.contract), checked on every registered family: a new family must be added to
SMALL below, or this test fails."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from deit.models import FAMILIES, Classifier, Preprocessing, build_architecture, get_entry
from deit.models.contract import (
    classifier_prefixes,
    combine_heads,
    has_two_heads,
    head_names,
    head_outputs,
    prediction_key,
    state_dict_num_classes,
    training_outputs,
)
from deit.models.fusion import _onednn_linear_works, fuse_for_cpu_inference
from deit.models.registry import family_of, find_entry, list_models, structure
from deit.models.vit_config import ViTConfig

_VIT = {"patch_size": 8, "embed_dim": 64, "depth": 2, "num_heads": 1}
# Each option of the ViT (DeiT III's LayerScale, patch-only position embedding, uniform stochastic depth), with
# and without the distillation token.
_VIT_OPTIONS = [{"init_values": 1e-4}, {"prefix_pos_embed": False},
                {"drop_path_schedule": "uniform", "drop_path_rate": 0.1}]
# ViTConfig fields that are sizes, rates or checked elsewhere: every other field is an option SMALL must set.
_VIT_NOT_OPTIONS = {"img_size", "patch_size", "in_chans", "num_classes", "embed_dim", "depth", "num_heads",
                    "mlp_ratio", "drop_rate", "attn_drop_rate", "drop_path_rate", "layer_norm_eps", "qkv_bias",
                    "dynamic_img_size"}

# family -> [(registered name, config overrides, input size)]: the smallest instance of each registered variant kind.
SMALL = {
    "vit": [
        ("deit_tiny_patch16_224", {"patch_size": 8, "embed_dim": 64, "depth": 2, "num_heads": 1}, 32),
        ("deit_tiny_distilled_patch16_224", {"patch_size": 8, "embed_dim": 64, "depth": 2, "num_heads": 1}, 32),
        ("deit_tiny_distilled_patch16_224",
         {"patch_size": 8, "embed_dim": 64, "depth": 1, "num_heads": 1, "head_mode": "cls"}, 32),
        *[(name, {**_VIT, **option}, 32) for option in _VIT_OPTIONS
          for name in ("deit_tiny_patch16_224", "deit_tiny_distilled_patch16_224")],
    ],
    "regnet": [("regnety_002", {}, 64)],
    "resnet": [("resnet_digits", {}, 16), ("resnet18", {"widths": (8, 16, 16, 16)}, 64),
               ("resnet18_cifar", {"widths": (8, 8, 16, 16)}, 32)],
    "resnet9": [("resnet9_small", {}, 32),
                ("resnet9", {"widths": (8, 8, 16, 16), "residual": (False, True, False)}, 32)],
    "airbench": [("airbench93_cifar", {"widths": (8, 16, 16)}, 32),
                 ("airbench94_cifar", {"widths": (8, 8, 16), "whiten": True}, 32)],
}
CASES = [(family, name, overrides, size) for family, cases in SMALL.items() for name, overrides, size in cases]


def test_every_registered_family_is_covered():
    assert set(FAMILIES) <= set(SMALL), f"add a small instance of {set(FAMILIES) - set(SMALL)} to SMALL"
    for family in FAMILIES:
        assert list_models(family), f"family {family} has no registered model"


def test_every_vit_option_is_covered():
    options = {f.name for f in dataclasses.fields(ViTConfig)} - _VIT_NOT_OPTIONS
    defaults = ViTConfig()
    set_somewhere = {k for _, overrides, _ in SMALL["vit"] for k, v in overrides.items() if v != getattr(defaults, k)}
    set_somewhere |= {"distilled"}  # the *_distilled_* names
    assert options <= set_somewhere, f"add a small ViT with {options - set_somewhere} set to SMALL"


def _build(name, overrides, size, num_classes=5):
    torch.manual_seed(0)
    kwargs = {"img_size": size} if "img_size" in {f.name for f in dataclasses.fields(_entry_config(name))} else {}
    return build_architecture(name, num_classes=num_classes, **kwargs, **overrides)


def _entry_config(name):
    from deit.models import get_entry

    return get_entry(name).config


@pytest.mark.parametrize("family, name, overrides, size", CASES, ids=[f"{c[1]}-{i}" for i, c in enumerate(CASES)])
def test_contract(family, name, overrides, size):
    model = _build(name, overrides, size)
    x = torch.randn(2, 3, size, size)
    assert isinstance(model, Classifier) and family_of(model.config) == family
    assert isinstance(model.preprocessing, Preprocessing) and model.class_names is None
    assert model.num_classes == model.config.num_classes == 5

    # forward: one tensor of logits, in train and in eval mode alike
    model.train()
    out_train = model(x)
    model.eval()
    with torch.no_grad():
        out = model(x)
        assert type(out_train) is type(out) is torch.Tensor and out.shape == out_train.shape == (2, 5)
        torch.testing.assert_close(model.forward_head(model.forward_features(x)), out)
        heads = head_outputs(model, x)
        assert tuple(heads) == head_names(model)
        torch.testing.assert_close(heads[prediction_key(model)], out)
        outputs = training_outputs(model, x)
    assert all(o.shape == (2, 5) for o in outputs)
    if has_two_heads(model):
        cls_logits, dist_logits = model.forward_heads(x)
        torch.testing.assert_close(combine_heads(cls_logits, dist_logits, model.head_mode), out)
        assert len(outputs) == 2 and set(heads) == {"cls", "dist", "avg"}
    else:
        with pytest.raises(ValueError, match="distill"):
            model.forward_heads(x)
        assert len(outputs) == 1 and set(heads) == {"model"}

    # weight decay exemptions name real parameters; a new class count re-sizes every head
    names = {n.split(".")[-1] for n, _ in model.named_parameters()} | {n for n, _ in model.named_parameters()}
    assert set(model.no_weight_decay()) <= names
    model.reset_classifier(3)
    with torch.no_grad():
        assert model(x).shape == (2, 3) and all(o.shape == (2, 3) for o in training_outputs(model, x))


@pytest.mark.parametrize("family, name, overrides, size", CASES, ids=[f"{c[1]}-{i}" for i, c in enumerate(CASES)])
def test_the_classifier_is_what_its_prefixes_name(family, name, overrides, size):
    """classifier_prefixes name exactly the parameters reset_classifier replaces, and a state dict's class count
    is read from them: how checkpoints adapt a head of any family."""
    model = _build(name, overrides, size)
    prefixes = classifier_prefixes(model)
    assert prefixes and all(any(k.startswith(p) for k in model.state_dict()) for p in prefixes[:1])
    before = model.state_dict()
    assert state_dict_num_classes(model, before) == 5
    assert state_dict_num_classes(model, {k: v for k, v in before.items() if not k.startswith(prefixes)}) is None
    model.reset_classifier(7)
    after = model.state_dict()
    changed = {k for k in before if k not in after or after[k].shape != before[k].shape}
    assert changed and all(k.startswith(prefixes) for k in changed)
    assert all(k.startswith(prefixes) for k in set(after) ^ set(before))
    assert state_dict_num_classes(model, after) == model.num_classes == 7


@pytest.mark.parametrize("family, name, overrides, size", CASES, ids=[f"{c[1]}-{i}" for i, c in enumerate(CASES)])
def test_family_reads_its_config_back_from_the_weights(family, name, overrides, size):
    model = _build(name, overrides, size)
    inferred = FAMILIES[family].infer_config(model.state_dict())
    assert type(inferred) is type(model.config) and structure(inferred) == structure(model.config)
    assert inferred.num_classes == 5
    if not overrides:
        assert find_entry(family, model.config).name == name


VIT_CASES = [c for c in CASES if c[0] == "vit"]


@pytest.mark.skipif(not _onednn_linear_works(), reason="this torch build has no oneDNN fused linear")
@pytest.mark.parametrize("family, name, overrides, size", VIT_CASES,
                         ids=[f"{c[1]}-{i}" for i, c in enumerate(VIT_CASES)])
def test_vit_fused_for_cpu_inference_gives_the_same_logits(family, name, overrides, size):
    model = _build(name, overrides, size).eval()
    x = torch.randn(2, 3, size, size)
    fused = fuse_for_cpu_inference(model)
    with torch.no_grad():
        plain, fast = head_outputs(model, x), head_outputs(fused, x)
    assert tuple(fast) == tuple(plain)
    for head in plain:
        torch.testing.assert_close(fast[head], plain[head], atol=1e-5, rtol=1e-5)


def test_combine_heads_modes():
    a, b = torch.tensor([[1.0, 3.0]]), torch.tensor([[3.0, 1.0]])
    assert torch.equal(combine_heads(a, b, "cls"), a) and torch.equal(combine_heads(a, b, "dist"), b)
    assert torch.equal(combine_heads(a, b), torch.tensor([[2.0, 2.0]]))
    with pytest.raises(ValueError, match="head mode"):
        combine_heads(a, b, "max")


def test_every_config_field_declares_what_it_is():
    """Roles live on the fields (deit.models.fields): matching a config to a named model and what a weights-only
    file loses both read them, so a new field states once whether it is architecture, training or output."""
    from deit.models.fields import fields_with_role

    for name, family in FAMILIES.items():
        config = family.config_cls()
        assert "num_classes" in fields_with_role(config, "output"), name
        assert {"drop_rate", "drop_path_rate"} <= fields_with_role(config, "training"), name
        skipped = fields_with_role(config, "training", "output")
        assert not skipped & set(structure(config)), name
    vit = get_entry("deit_tiny_patch16_224").config
    layer_scale = structure(dataclasses.replace(vit, init_values=1e-4))
    assert layer_scale == structure(dataclasses.replace(vit, init_values=1e-6)) and layer_scale != structure(vit)
    assert structure(dataclasses.replace(vit, drop_path_rate=0.3, num_classes=7)) == structure(vit)
