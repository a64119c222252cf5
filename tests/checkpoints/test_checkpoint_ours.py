"""Our .safetensors layout: self-describing round trips, and the overrides applied when loading."""

import dataclasses
import json
import logging

import pytest
import torch
from safetensors import safe_open
from torch import nn

from deit.checkpoints import load_checkpoint, read_checkpoint, save_checkpoint
from deit.models import FAMILIES, Preprocessing, resample_pos_embed
from deit.models.registry import Family


def test_round_trip_preserves_config_preprocessing_and_class_names(tmp_path, make_vit, images):
    model = make_vit(head_mode="cls", dynamic_img_size=True, drop_path_rate=0.1, layer_norm_eps=1e-5)
    model.preprocessing = Preprocessing(input_size=32, mean=(0.5, 0.4, 0.3), std=(0.2, 0.2, 0.2),
                                        interpolation="bilinear", crop_pct=0.9)
    model.class_names = ["cat", "dog", "emu", "gnu", "yak"]
    path = save_checkpoint(model, tmp_path / "m.safetensors", extra_metadata={"epoch": 7, "note": "hi"})

    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    assert meta["format"] == "deit" and meta["family"] == "vit" and meta["architecture"] == "custom"
    assert meta["num_classes"] == "5" and meta["img_size"] == "32"
    assert json.loads(meta["preprocessing"])["crop_pct"] == 0.9
    assert meta["epoch"] == "7" and meta["note"] == "hi"

    loaded = load_checkpoint(path)
    assert loaded.config == model.config
    assert loaded.preprocessing == model.preprocessing
    assert loaded.class_names == model.class_names
    assert loaded.head_mode == "cls" and not loaded.training
    with torch.no_grad():
        torch.testing.assert_close(loaded(images), model(images), rtol=0, atol=0)
        big = torch.randn(1, 3, 48, 48)  # dynamic_img_size survived the trip
        torch.testing.assert_close(loaded(big), model(big), rtol=0, atol=0)


def test_named_model_records_its_name(tmp_path):
    from deit import create_model

    save_checkpoint(create_model("deit-tiny-distilled"), tmp_path / "t.safetensors")
    info = read_checkpoint(tmp_path / "t.safetensors")
    assert info.layout == "deit" and info.architecture == "deit_tiny_distilled_patch16_224"


def test_num_classes_change_reinitialises_both_heads_and_says_so(tmp_path, make_vit, images, caplog):
    model = make_vit()
    model.class_names = list("abcde")
    save_checkpoint(model, tmp_path / "m.safetensors")
    with caplog.at_level(logging.WARNING, logger="deit.checkpoints"):
        new = load_checkpoint(tmp_path / "m.safetensors", num_classes=3)
    assert "re-initialised head and head_dist" in caplog.text
    assert new.num_classes == 3 and new.config.num_classes == 3
    assert new.head.weight.shape == new.head_dist.weight.shape == (3, 128)
    assert not torch.equal(new.head.weight[:3], model.head.weight[:3])
    assert not torch.equal(new.head_dist.weight[:3], model.head_dist.weight[:3])
    assert torch.all(new.head.bias == 0) and torch.all(new.head_dist.bias == 0)
    assert new.class_names is None  # the old names do not describe the new classes
    for k, v in model.state_dict().items():
        if not k.startswith("head"):
            assert torch.equal(new.state_dict()[k], v), k
    assert new(images).shape == (2, 3)


def test_img_size_change_resamples_pos_embed(tmp_path, make_vit):
    model = make_vit()
    save_checkpoint(model, tmp_path / "m.safetensors")
    new = load_checkpoint(tmp_path / "m.safetensors", img_size=48)
    expected = resample_pos_embed(model.pos_embed.data, (6, 6), num_prefix_tokens=2)
    assert torch.equal(new.pos_embed.data, expected) and new.pos_embed.shape == (1, 2 + 36, 128)
    assert new.config.img_size == 48 and new.preprocessing.input_size == 48
    assert new(torch.randn(1, 3, 48, 48)).shape == (1, 5)


def test_head_mode_override(tmp_path, make_vit, images):
    model = make_vit()
    save_checkpoint(model, tmp_path / "m.safetensors")
    dist = load_checkpoint(tmp_path / "m.safetensors", head_mode="dist")
    with torch.no_grad():
        torch.testing.assert_close(dist(images), model.forward_heads(images)[1])


def test_save_refuses_pickle_suffix_and_reserved_metadata(tmp_path, make_vit):
    model = make_vit()
    with pytest.raises(ValueError, match=r"\.safetensors"):
        save_checkpoint(model, tmp_path / "m.pth")
    with pytest.raises(ValueError, match="reserved"):
        save_checkpoint(model, tmp_path / "m.safetensors", extra_metadata={"config": "{}"})
    with pytest.raises(ValueError, match="config"):
        save_checkpoint(nn.Linear(2, 2), tmp_path / "lin.safetensors")


# ------------------------------------------------------------------------------------ any registered family works
@dataclasses.dataclass(frozen=True)
class ToyConfig:
    width: int = 4
    num_classes: int = 3
    kernel: tuple = (3, 3)


class Toy(nn.Module):
    def __init__(self, cfg: ToyConfig, pre: Preprocessing):
        super().__init__()
        self.config, self.preprocessing, self.class_names = cfg, pre, None
        self.stem = nn.Conv2d(3, cfg.width, cfg.kernel)
        self.fc = nn.Linear(cfg.width, cfg.num_classes)

    def forward(self, x):
        return self.fc(self.stem(x).mean((2, 3)))


def _infer_toy(sd):
    if "stem.weight" not in sd or "fc.weight" not in sd:
        return None
    w = sd["stem.weight"]
    return ToyConfig(width=w.shape[0], num_classes=sd["fc.weight"].shape[0], kernel=tuple(w.shape[2:]))


def test_other_families_save_load_and_are_detected(tmp_path, monkeypatch):
    monkeypatch.setitem(FAMILIES, "toy", Family("toy", ToyConfig, Toy, infer_config=_infer_toy))
    model = Toy(ToyConfig(width=6, kernel=(5, 5)), Preprocessing(input_size=64, crop_pct=1.0)).eval()
    model.class_names = ["a", "b", "c"]
    save_checkpoint(model, tmp_path / "toy.safetensors")
    loaded = load_checkpoint(tmp_path / "toy.safetensors")
    assert type(loaded) is Toy and loaded.config == model.config and loaded.class_names == ["a", "b", "c"]
    assert loaded.preprocessing.input_size == 64

    torch.save({"model": model.state_dict()}, tmp_path / "toy.pth")  # a foreign file: found by key inference
    info = read_checkpoint(tmp_path / "toy.pth")
    assert info.family == "toy" and info.config == ToyConfig(width=6, kernel=(5, 5))
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(load_checkpoint(tmp_path / "toy.pth")(x), model(x))
