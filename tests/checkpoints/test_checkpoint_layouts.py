"""Every foreign layout loads to the same model; round trips are bit-exact; bad files fail clearly and safely."""

import argparse
import re

import pytest
import torch
from safetensors.torch import save_file

from deit.checkpoints import (
    CheckpointError,
    StateDictMismatchError,
    UnknownLayoutError,
    UnsafeCheckpointError,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
    save_official,
)


def _same_logits(a, b, x):
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x), rtol=0, atol=1e-6)


# ----------------------------------------------------------------------------------------------- official / timm
def test_official_to_ours_to_official_is_bit_identical(tmp_path, make_vit, images):
    model = make_vit()
    original = {k: v.clone() for k, v in model.state_dict().items()}
    # The official training script's checkpoint: weights under 'model', plus optimizer state and argparse args.
    torch.save(
        {"model": original, "optimizer": {"state": {}}, "epoch": 299, "args": argparse.Namespace(lr=5e-4)},
        tmp_path / "official.pth",
    )
    info = read_checkpoint(tmp_path / "official.pth")
    assert info.layout == "official" and info.family == "vit"
    assert info.config.distilled and info.config.embed_dim == 128 and info.config.img_size == 32

    ours = load_checkpoint(tmp_path / "official.pth")
    assert not ours.training
    save_checkpoint(ours, tmp_path / "ours.safetensors")
    back = load_checkpoint(tmp_path / "ours.safetensors")
    save_official(back, tmp_path / "back.pth")

    final = torch.load(tmp_path / "back.pth", weights_only=True)["model"]
    assert list(final) == list(original)
    for k in original:
        assert final[k].dtype == original[k].dtype and torch.equal(final[k], original[k]), k
    _same_logits(model, back, images)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_bare_timm_state_dict_loads(tmp_path, make_vit, images, suffix):
    model = make_vit(distilled=False)
    path = tmp_path / f"timm{suffix}"
    if suffix == ".pth":
        torch.save(model.state_dict(), path)
    else:
        save_file(model.state_dict(), str(path))
    info = read_checkpoint(path)
    assert info.layout == "timm" and not info.config.distilled and info.config.num_classes == 5
    _same_logits(model, load_checkpoint(path), images)


def test_ddp_prefix_is_stripped(tmp_path, make_vit, images):
    model = make_vit()
    torch.save({"model": {f"module.{k}": v for k, v in model.state_dict().items()}}, tmp_path / "ddp.pth")
    _same_logits(model, load_checkpoint(tmp_path / "ddp.pth"), images)


def test_known_architecture_gets_its_registry_name_and_preprocessing(tmp_path):
    from deit import create_model

    model = create_model("deit_base_patch16_384", depth=1)  # one block: the same keys pattern, a 384 px grid
    sd = model.state_dict()
    torch.save({"model": sd}, tmp_path / "b384.pth")
    info = read_checkpoint(tmp_path / "b384.pth")
    assert info.config.img_size == 384 and info.config.num_heads == 12
    assert info.preprocessing.crop_pct == 1.0  # full-image evaluation at 384, as the official models
    tiny = create_model("deit_tiny_patch16_224")
    torch.save(tiny.state_dict(), tmp_path / "ti.pth")
    info = read_checkpoint(tmp_path / "ti.pth")
    assert info.architecture == "deit_tiny_patch16_224"
    assert info.preprocessing.crop_pct == 0.875 and info.preprocessing.interpolation == "bicubic"


# ------------------------------------------------------------------------------------------------------ OpenMMLab
# Built here from checkpoint-formats.md, independently of the converter under test.
def _to_openmmlab(sd):
    out = {}
    for k, v in sd.items():
        if k.startswith("head_dist."):
            new = "head.layers.head_dist." + k[len("head_dist.") :]
        elif k.startswith("head."):
            new = "head.layers.head." + k[len("head.") :]
        elif k.startswith("norm."):
            new = "backbone.ln1." + k[len("norm.") :]
        else:
            new = k.replace("patch_embed.proj.", "patch_embed.projection.")
            new = re.sub(r"^blocks\.(\d+)\.", r"layers.\1.", new)
            new = re.sub(r"^(layers\.\d+\.)norm1\.", r"\1ln1.", new)
            new = re.sub(r"^(layers\.\d+\.)norm2\.", r"\1ln2.", new)
            new = re.sub(r"^(layers\.\d+\.)mlp\.fc1\.", r"\1ffn.layers.0.0.", new)
            new = re.sub(r"^(layers\.\d+\.)mlp\.fc2\.", r"\1ffn.layers.1.", new)
            new = "backbone." + new
        out[new] = v
    return out


@pytest.mark.parametrize("distilled", [True, False])
def test_openmmlab_file_from_renamed_keys_loads_and_matches(tmp_path, make_vit, images, distilled):
    model = make_vit(distilled=distilled)
    mm = _to_openmmlab(model.state_dict())
    assert "backbone.ln1.weight" in mm and "backbone.layers.0.ln1.weight" in mm
    torch.save({"meta": {"mmcls_version": "0.25.0", "CLASSES": None}, "state_dict": mm}, tmp_path / "mm.pth")
    info = read_checkpoint(tmp_path / "mm.pth")
    assert info.layout == "openmmlab" and info.config.distilled == distilled
    loaded = load_checkpoint(tmp_path / "mm.pth")
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    _same_logits(model, loaded, images)


# ------------------------------------------------------------------------------------------- HF without transformers
# transformers 5.x names, then the legacy ones by renaming the 5.x keys (checkpoint-formats.md), built here.
def _to_hf_v5(sd):
    out = {}
    for k, v in sd.items():
        m = re.match(r"blocks\.(\d+)\.(.*)", k)
        if m:
            i, rest = m.groups()
            if rest.startswith("attn.qkv."):
                kind = rest.split(".")[-1]
                for name, part in zip("qkv", v.chunk(3), strict=True):
                    out[f"deit.layers.{i}.attention.{name}_proj.{kind}"] = part
                continue
            rest = (rest.replace("norm1.", "layernorm_before.").replace("norm2.", "layernorm_after.")
                    .replace("attn.proj.", "attention.o_proj."))
            out[f"deit.layers.{i}.{rest}"] = v
            continue
        new = {
            "cls_token": "deit.embeddings.cls_token",
            "dist_token": "deit.embeddings.distillation_token",
            "pos_embed": "deit.embeddings.position_embeddings",
        }.get(k)
        if new is None:
            new = (k.replace("patch_embed.proj.", "deit.embeddings.patch_embeddings.projection.")
                   .replace("norm.", "deit.layernorm.") if not k.startswith("head") else
                   k.replace("head_dist.", "distillation_classifier.").replace("head.", "cls_classifier."))
        out[new] = v
    return out


_QKV_NAMES = {"q": "query", "k": "key", "v": "value"}


def _v5_to_legacy(sd):
    out = {}
    for k, v in sd.items():
        new = re.sub(r"^deit\.layers\.(\d+)\.", r"deit.encoder.layer.\1.", k)
        new = re.sub(r"attention\.([qkv])_proj\.", lambda m: f"attention.attention.{_QKV_NAMES[m.group(1)]}.", new)
        new = new.replace("attention.o_proj.", "attention.output.dense.")
        new = new.replace("mlp.fc1.", "intermediate.dense.").replace("mlp.fc2.", "output.dense.")
        out[new] = v
    return out


def test_hf_v5_and_legacy_weight_files_load_without_a_config(tmp_path, make_vit, images):
    model = make_vit()
    v5 = _to_hf_v5(model.state_dict())
    legacy = _v5_to_legacy(v5)
    assert "deit.encoder.layer.1.attention.attention.value.weight" in legacy
    assert "deit.encoder.layer.0.output.dense.weight" in legacy
    save_file(v5, str(tmp_path / "v5.safetensors"))
    torch.save(legacy, tmp_path / "pytorch_model.bin")
    for path, layout in ((tmp_path / "v5.safetensors", "hf-v5"), (tmp_path / "pytorch_model.bin", "hf-legacy")):
        info = read_checkpoint(path)
        assert info.layout == layout
        loaded = load_checkpoint(path)
        assert loaded.head_mode == "avg"
        _same_logits(model, loaded, images)


# -------------------------------------------------------------------------------------------------------- errors
def test_pickle_that_would_run_code_is_refused_and_never_executed(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))  # would create the marker file if unpickled

    torch.save({"model": {"w": torch.zeros(1)}, "x": Payload()}, tmp_path / "evil.pth")
    with pytest.raises(UnsafeCheckpointError, match=r"refused.*could run code"):
        load_checkpoint(tmp_path / "evil.pth")
    assert not marker.exists()

    from deit.cli import main

    assert main(["convert", str(tmp_path / "evil.pth"), str(tmp_path / "out.safetensors")]) == 2
    assert not marker.exists() and not (tmp_path / "out.safetensors").exists()


def test_unknown_layout_lists_prefixes_and_supported_layouts(tmp_path):
    torch.save({"encoder.conv1.weight": torch.zeros(4, 3, 3, 3), "decoder.fc.weight": torch.zeros(2, 4)},
               tmp_path / "odd.pth")
    with pytest.raises(UnknownLayoutError) as err:
        load_checkpoint(tmp_path / "odd.pth")
    msg = str(err.value)
    assert "encoder.conv1." in msg and "decoder.fc." in msg
    for layout in ("official", "timm", "openmmlab", "hf-legacy", "hf-v5"):
        assert layout in msg


def test_not_a_checkpoint_is_a_clear_error(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        load_checkpoint(tmp_path / "notes.txt")


def test_missing_key_is_named(tmp_path, make_vit):
    sd = make_vit().state_dict()
    del sd["blocks.1.mlp.fc2.weight"]
    torch.save(sd, tmp_path / "cut.pth")
    with pytest.raises(StateDictMismatchError, match=r"missing.*'blocks\.1\.mlp\.fc2\.weight'"):
        load_checkpoint(tmp_path / "cut.pth")


def test_shape_mismatch_names_key_and_both_shapes(tmp_path, make_vit):
    save_checkpoint(make_vit(), tmp_path / "m.safetensors")
    with pytest.raises(StateDictMismatchError) as err:
        load_checkpoint(tmp_path / "m.safetensors", mlp_ratio=2.0)
    msg = str(err.value)
    assert "'blocks.0.mlp.fc1.weight'" in msg and "(512, 128)" in msg and "(256, 128)" in msg
    assert isinstance(err.value, ValueError)


def test_unknown_override_names_the_nearest_field(tmp_path, make_vit):
    save_checkpoint(make_vit(), tmp_path / "m.safetensors")
    with pytest.raises(TypeError, match="drop_path_rate"):
        load_checkpoint(tmp_path / "m.safetensors", drop_path_rat=0.1)


def test_sharded_hf_directory_loads(tmp_path, make_vit, images):
    import json

    model = make_vit()
    v5 = _to_hf_v5(model.state_dict())
    keys = sorted(v5)
    shards = {"model-00001-of-00002.safetensors": keys[: len(keys) // 2],
              "model-00002-of-00002.safetensors": keys[len(keys) // 2 :]}
    for name, part in shards.items():
        save_file({k: v5[k] for k in part}, str(tmp_path / name), {"format": "pt"})
    weight_map = {k: name for name, part in shards.items() for k in part}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    _same_logits(model, load_checkpoint(tmp_path), images)
