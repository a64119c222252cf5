"""DeiT III's checkpoints: the official models_v2 layout, timm's and mmpretrain's, each built here in that
ecosystem's key names, load with no architecture given and convert to every other layout and back bit for bit;
transformers has no DeiT III; weights no family reads name the closest model and what differs."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

from deit.checkpoints import (
    UnknownLayoutError,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
    save_official,
    save_openmmlab,
    save_timm,
)
from deit.checkpoints.reading import checkpoint_info
from deit.models import build_architecture

TINY3 = dict(img_size=32, patch_size=8, embed_dim=128, depth=2, num_heads=2, num_classes=5)
LAYOUTS = ("official", "timm", "openmmlab", "deit")


def _deit3(distilled: bool) -> torch.nn.Module:
    name = "deit3_small_distilled_patch16_224" if distilled else "deit3_small_patch16_224"
    model = build_architecture(name, **TINY3)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for pname, p in model.named_parameters():
            offset = 1.0 if "norm" in pname and pname.endswith("weight") else 0.0
            p.copy_(torch.randn(p.shape, generator=g) * (0.5 if "gamma" in pname else 0.1) + offset)
    return model.eval()


# Each ecosystem's names, written here from its code (models_v2.py's Layer_scale_init_Block; mmpretrain's DeiT3
# backbone and tools/model_converters/deit3_to_mmpretrain.py), not from the converter under test.
def _official_names(sd: dict) -> dict:
    return {re.sub(r"^(blocks\.\d+)\.ls([12])\.gamma$", r"\1.gamma_\2", k): v for k, v in sd.items()}


def _mmpretrain_names(sd: dict) -> dict:
    out = {}
    for k, v in sd.items():
        if k.startswith(("head.", "head_dist.")):
            out["head.layers." + k] = v
            continue
        new = re.sub(r"^norm\.", "ln1.", k).replace("patch_embed.proj.", "patch_embed.projection.")
        new = re.sub(r"^blocks\.(\d+)\.", r"layers.\1.", new)
        for ours, theirs in (("norm1.", "ln1."), ("norm2.", "ln2."), ("mlp.fc1.", "ffn.layers.0.0."),
                             ("mlp.fc2.", "ffn.layers.1."), ("ls1.gamma", "attn.gamma1.weight"),
                             ("ls2.gamma", "ffn.gamma2.weight")):
            new = re.sub(rf"^(layers\.\d+\.){re.escape(ours)}", rf"\g<1>{theirs}", new)
        out["backbone." + new] = v
    return out


def _write(model, layout: str, path) -> dict:
    """The file of ``model`` as the ecosystem writes it, and the tensors it holds."""
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    if layout == "official":  # the training script's checkpoint: weights under 'model', and more
        torch.save({"model": _official_names(sd), "epoch": 799, "args": None}, path)
        return _official_names(sd)
    if layout == "timm":
        save_file(sd, str(path))
        return sd
    if layout == "openmmlab":  # what mmpretrain's converter writes: the bare renamed dict
        torch.save(_mmpretrain_names(sd), path)
        return _mmpretrain_names(sd)
    save_checkpoint(model, path)
    return sd


def _tensors(path, layout: str) -> dict:
    if layout in ("timm", "deit"):
        return load_file(str(path))
    obj = torch.load(path, weights_only=True)
    return obj.get("model", obj.get("state_dict", obj))


_SAVE = {"official": save_official, "timm": save_timm, "openmmlab": save_openmmlab, "deit": save_checkpoint}
_SUFFIX = {"official": ".pth", "timm": ".safetensors", "openmmlab": ".pth", "deit": ".safetensors"}


@pytest.mark.parametrize("distilled", [False, True])
@pytest.mark.parametrize("src", LAYOUTS)
def test_each_layout_loads_unaided_and_converts_to_every_other_and_back_bit_for_bit(tmp_path, src, distilled):
    model = _deit3(distilled)
    original = _write(model, src, tmp_path / f"src{_SUFFIX[src]}")
    info = read_checkpoint(tmp_path / f"src{_SUFFIX[src]}")
    assert info.layout == src and info.architecture is None  # a custom size: the shape is read from the weights
    cfg = info.config
    assert (cfg.init_values is not None, cfg.prefix_pos_embed, cfg.distilled) == (True, False, distilled)
    loaded = load_checkpoint(tmp_path / f"src{_SUFFIX[src]}")
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)

    expected_names = {"official": _official_names, "openmmlab": _mmpretrain_names}
    for dst in LAYOUTS:
        there = tmp_path / f"{src}-to-{dst}{_SUFFIX[dst]}"
        _SAVE[dst](loaded, there)
        written = _tensors(there, dst)
        assert set(written) == set(expected_names.get(dst, dict)(model.state_dict())), (src, dst)
        back = tmp_path / f"{src}-to-{dst}-back{_SUFFIX[src]}"
        _SAVE[src](load_checkpoint(there), back)
        final = _tensors(back, src)
        assert set(final) == set(original), (src, dst)
        for k, v in original.items():
            assert final[k].dtype == v.dtype and torch.equal(final[k], v), (src, dst, k)


def _cli(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "deit", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def test_the_cli_converts_official_to_mmpretrain_and_back_and_refuses_hf(tmp_path):
    model = _deit3(distilled=False)
    original = _write(model, "official", tmp_path / "official.pth")
    done = _cli("convert", "official.pth", "mm.pth", "--to", "openmmlab", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "LayerScale, pos_embed on the patch tokens only" in done.stdout and "OpenMMLab layout" in done.stdout
    assert "backbone.layers.1.ffn.gamma2.weight" in torch.load(tmp_path / "mm.pth", weights_only=True)["state_dict"]
    done = _cli("convert", "mm.pth", "back.pth", "--to", "official", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    final = torch.load(tmp_path / "back.pth", weights_only=True)["model"]
    assert set(final) == set(original) and all(torch.equal(final[k], v) for k, v in original.items())

    done = _cli("convert", "official.pth", "hf_dir", "--to", "hf", cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "HF transformers has no DeiT III" in done.stderr and "LayerScale" in done.stderr
    assert not (tmp_path / "hf_dir").exists()


def test_vit_h_reads_back_with_its_sixteen_heads():
    # 1280 wide: the DeiT convention would say 20 heads; the weights do not record it, the registry does.
    with torch.device("meta"):
        for name in ("deit3_huge_patch14_224", "deit3_huge_distilled_patch14_224"):
            sd = build_architecture(name, num_classes=100).state_dict()
            info = checkpoint_info({"model": _official_names(sd)}, "vit-h.pth")
            assert info.config.num_heads == 16 and info.architecture == name, name
            assert any("num_heads 16 as deit3_huge" in note for note in info.notes)


def test_a_release_sized_checkpoint_gets_the_registered_name_and_preprocessing(tmp_path):
    with torch.device("meta"):
        sd = build_architecture("deit3_base_patch16_384").state_dict()
    info = checkpoint_info(_mmpretrain_names(sd), "mm.pth")
    assert info.layout == "openmmlab" and info.architecture == "deit3_base_patch16_384"
    assert info.preprocessing.crop_pct == 1.0 and info.config.num_heads == 12


# -------------------------------------------------------------------------------------- closest family
def test_weights_no_family_reads_name_the_closest_model_and_what_differs(tmp_path):
    sd = dict(_deit3(distilled=False).state_dict())
    sd["reg_token"] = sd.pop("cls_token")  # a ViT with register tokens and no class token
    torch.save(sd, tmp_path / "regs.pth")
    with pytest.raises(UnknownLayoutError) as err:
        load_checkpoint(tmp_path / "regs.pth")
    n = len(sd)
    assert (f"closest: vit (DeiT / DeiT III ViT), like deit3_small_patch16_224: {n - 1} of {n} keys match; "
            "missing: cls_token; unexpected: reg_token") in str(err.value)

    sd = dict(_deit3(distilled=True).state_dict())  # models_v2's hMLP stem: three convolutions for one
    for kind in ("weight", "bias"):
        sd[f"patch_embed.proj.0.{kind}"] = sd.pop(f"patch_embed.proj.{kind}")
    sd["patch_embed.proj.3.weight"] = torch.zeros(8, 8, 2, 2)
    torch.save({"model": sd}, tmp_path / "hmlp.pth")
    done = _cli("convert", "hmlp.pth", "x.safetensors", cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    n = len(sd)
    assert (f"closest: vit (DeiT / DeiT III ViT), like deit3_small_distilled_patch16_224: {n - 3} of {n} keys match; "
            "missing: patch_embed.proj.bias, patch_embed.proj.weight; unexpected: patch_embed.proj.{i}.bias, "
            "patch_embed.proj.{i}.weight") in done.stderr


def test_keys_of_no_known_kind_have_no_closest_model(tmp_path):
    torch.save({"encoder.conv.weight": torch.zeros(4, 3, 3, 3)}, tmp_path / "odd.pth")
    with pytest.raises(UnknownLayoutError) as err:
        load_checkpoint(tmp_path / "odd.pth")
    assert "closest" not in str(err.value)
