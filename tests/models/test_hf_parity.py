"""Numerical parity with HF transformers (test-only dependency): same weights, same logits (max abs diff <= 1e-4).

HF models get random weights everywhere (HF's own init zeros the tokens and position embeddings, which would hide
ordering mistakes), are saved with ``save_pretrained`` and loaded through ``deit.load_checkpoint``.
"""

import json
import re

import pytest
import torch

transformers = pytest.importorskip("transformers")

from safetensors.torch import save_file  # noqa: E402

from deit.checkpoints import export_hf, load_checkpoint, read_checkpoint  # noqa: E402

TOL = 1e-4
# DeiT-Ti: width 192, 12 blocks, 3 heads, 224 px, patch 16.
TINY = dict(hidden_size=192, num_hidden_layers=12, num_attention_heads=3, intermediate_size=768, image_size=224,
            patch_size=16, num_labels=10, layer_norm_eps=1e-6)


def _randomise(model):
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            offset = 1.0 if "layernorm" in name and name.endswith("weight") else 0.0
            p.copy_(torch.randn(p.shape, generator=g) * 0.05 + offset)
    return model.eval()


def _hf(cls_name, **kw):
    if cls_name.startswith("ViT"):
        config = transformers.ViTConfig(**{**TINY, **kw})
    else:
        config = transformers.DeiTConfig(**{**TINY, **kw})
    return _randomise(getattr(transformers, cls_name)(config))


@pytest.fixture(scope="module")
def pixels():
    g = torch.Generator().manual_seed(1)
    return torch.randn(2, 3, 224, 224, generator=g), torch.randn(2, 3, 288, 288, generator=g)


def _max_diff(a, b):
    return (a - b).abs().max().item()


@pytest.mark.parametrize(
    ("cls_name", "head_mode", "distilled"),
    [
        ("DeiTForImageClassificationWithTeacher", "avg", True),
        ("DeiTForImageClassification", "cls", True),
        ("ViTForImageClassification", "avg", False),
    ],
)
def test_hf_save_pretrained_loads_with_matching_logits(tmp_path, pixels, cls_name, head_mode, distilled):
    x224, x288 = pixels
    hf = _hf(cls_name)
    hf.save_pretrained(tmp_path)
    model = load_checkpoint(tmp_path)
    assert model.distilled == distilled and model.head_mode == head_mode
    assert model.config.num_heads == 3 and model.config.layer_norm_eps == 1e-6 and model.num_classes == 10
    with torch.no_grad():
        assert _max_diff(model(x224), hf(x224).logits) <= TOL
        if cls_name == "DeiTForImageClassificationWithTeacher":
            out = hf(x224)
            cls_logits, dist_logits = model.forward_heads(x224)
            assert _max_diff(cls_logits, out.cls_logits) <= TOL
            assert _max_diff(dist_logits, out.distillation_logits) <= TOL
        # Another resolution: our resampled pos_embed against HF's interpolate_pos_encoding.
        dynamic = load_checkpoint(tmp_path, dynamic_img_size=True)
        assert _max_diff(dynamic(x288), hf(x288, interpolate_pos_encoding=True).logits) <= TOL


def test_hf_v5_key_file_loads_and_eps_travels_with_config(tmp_path, pixels):
    x224, _ = pixels
    hf = _hf("DeiTForImageClassificationWithTeacher", layer_norm_eps=1e-12)  # HF's default eps, not DeiT's
    hf.config.save_pretrained(tmp_path)
    sd = hf.state_dict()
    assert any(".layers.0.attention.q_proj." in k for k in sd)  # the in-memory names are the 5.x ones
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "model.safetensors"), {"format": "pt"})
    info = read_checkpoint(tmp_path)
    assert info.layout == "hf-v5" and info.config.layer_norm_eps == 1e-12
    with torch.no_grad():
        assert _max_diff(load_checkpoint(tmp_path)(x224), hf(x224).logits) <= TOL


def _v5_to_legacy(key):
    """transformers 5.x -> legacy names, per checkpoint-formats.md."""
    key = re.sub(r"^(deit|vit)\.layers\.(\d+)\.", r"\1.encoder.layer.\2.", key)
    key = re.sub(r"attention\.([qkv])_proj\.",
                 lambda m: "attention.attention." + {"q": "query", "k": "key", "v": "value"}[m.group(1)] + ".", key)
    key = key.replace("attention.o_proj.", "attention.output.dense.")
    return key.replace("mlp.fc1.", "intermediate.dense.").replace("mlp.fc2.", "output.dense.")


def test_hf_legacy_layout_built_from_v5_keys_loads(tmp_path, pixels):
    x224, _ = pixels
    hf = _hf("DeiTForImageClassificationWithTeacher")
    hf.config.save_pretrained(tmp_path)
    legacy = {_v5_to_legacy(k): v for k, v in hf.state_dict().items()}
    assert "deit.encoder.layer.0.attention.attention.query.weight" in legacy
    torch.save(legacy, tmp_path / "pytorch_model.bin")
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "DeiTImageProcessor", "size": {"height": 256, "width": 256}, "resample": 3,
        "crop_size": {"height": 224, "width": 224}, "do_center_crop": True, "do_normalize": True,
        "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225],
    }))
    info = read_checkpoint(tmp_path)
    assert info.layout == "hf-legacy"
    model = load_checkpoint(tmp_path)
    assert model.preprocessing.crop_pct == 0.875 and model.preprocessing.interpolation == "bicubic"
    with torch.no_grad():
        assert _max_diff(model(x224), hf(x224).logits) <= TOL


@pytest.mark.parametrize("layout", ["v5", "legacy"])
def test_export_hf_loads_in_transformers_with_matching_logits(tmp_path, pixels, layout):
    x224, _ = pixels
    from deit import create_model

    for name, head_mode, cls_name in (
        ("deit_tiny_distilled_patch16_224", "avg", "DeiTForImageClassificationWithTeacher"),
        ("deit_tiny_distilled_patch16_224", "cls", "DeiTForImageClassification"),
        ("deit_tiny_patch16_224", "avg", "ViTForImageClassification"),
    ):
        ours = create_model(name, num_classes=10, head_mode=head_mode).eval()
        out = tmp_path / f"{name}-{head_mode}"
        export_hf(ours, out, layout=layout)
        assert json.loads((out / "config.json").read_text())["architectures"] == [cls_name]
        hf, loading = getattr(transformers, cls_name).from_pretrained(out, output_loading_info=True)
        assert not loading["missing_keys"] and not loading["unexpected_keys"]
        assert hf.config.layer_norm_eps == 1e-6
        with torch.no_grad():
            assert _max_diff(hf.eval()(x224).logits, ours(x224)) <= TOL
