"""Configs: presets with the paper's values, overrides, and errors naming the nearest valid key."""

from __future__ import annotations

import pytest

from deit.train.config import ConfigError
from deit.train.presets import list_presets, load_config

IN1K = [
    "deit-tiny_pt-4xb256_in1k",
    "deit-tiny-distilled_pt-4xb256_in1k",
    "deit-small_pt-4xb256_in1k",
    "deit-small-distilled_pt-4xb256_in1k",
    "deit-base_pt-16xb64_in1k",
    "deit-base-distilled_pt-16xb64_in1k",
    "deit-base_ft-16xb32_in1k-384px",
    "deit-base-distilled_ft-16xb32_in1k-384px",
]


def test_all_presets_exist_and_load():
    presets = list_presets()
    for name in [*IN1K, "digits-convnet-teacher", "digits-deit-distilled"]:
        assert name in presets
        load_config(name)
    assert not any(p.startswith("_") for p in presets)


@pytest.mark.parametrize("name", [n for n in IN1K if "_pt-" in n])
def test_pretraining_presets_have_the_paper_values(name):
    cfg = load_config(name)
    gpus, per_gpu = (4, 256) if "4xb256" in name else (16, 64)
    assert cfg.data.batch_size == per_gpu and gpus * per_gpu == 1024
    assert cfg.epochs == 300
    assert (cfg.optim.name, cfg.optim.lr, cfg.optim.scale_lr, cfg.optim.lr_base_batch) == ("adamw", 5e-4, True, 512)
    assert (cfg.optim.weight_decay, cfg.optim.eps, list(cfg.optim.betas)) == (0.05, 1e-8, [0.9, 0.999])
    assert cfg.optim.clip_grad is None
    assert (cfg.schedule.name, cfg.schedule.warmup_epochs, cfg.schedule.warmup_lr, cfg.schedule.min_lr) == (
        "cosine", 5, 1e-6, 1e-5)
    d = cfg.data
    assert (d.mixup, d.cutmix, d.mixup_switch_prob, d.smoothing) == (0.8, 1.0, 0.5, 0.1)
    assert (d.auto_augment, d.reprob, d.remode, d.repeated_aug, d.num_repeats) == (
        "rand-m9-mstd0.5-inc1", 0.25, "pixel", True, 3)
    assert d.scale == (0.08, 1.0)
    assert cfg.model.drop_path == 0.1
    assert (cfg.ema.enabled, cfg.ema.decay) == (True, 0.99996)
    distilled = "distilled" in name
    assert ("distilled" in cfg.model.name) == distilled
    if distilled:
        assert (cfg.distillation.type, cfg.distillation.alpha, cfg.teacher.model) == ("hard", 0.5, "regnety_160")
    else:
        assert cfg.distillation.type == "none"


@pytest.mark.parametrize("name", [n for n in IN1K if "_ft-" in n])
def test_finetuning_presets(name):
    cfg = load_config(name)
    assert cfg.model.img_size == 384 and cfg.model.finetune == "official"
    assert cfg.model.preprocessing == {"crop_pct": 1.0}
    assert cfg.epochs == 30 and cfg.data.batch_size * 16 == 512
    assert (cfg.optim.lr, cfg.optim.weight_decay, cfg.schedule.name, cfg.schedule.warmup_epochs) == (
        5e-6, 1e-8, "constant", 0)
    assert cfg.distillation.type == ("hard" if "distilled" in name else "none")


def test_overrides_are_typed():
    cfg = load_config("digits-deit-distilled", [
        "optim.lr=3e-3", "epochs=7", "data.scale=[0.5, 1]", "model.args.depth=4", "optim.clip_grad=1",
        "ema.enabled=true", "teacher.checkpoint=t.safetensors",
    ])
    assert cfg.optim.lr == 3e-3 and isinstance(cfg.optim.lr, float)
    assert cfg.epochs == 7
    assert cfg.data.scale == (0.5, 1.0)
    assert cfg.model.args["depth"] == 4 and cfg.model.args["embed_dim"] == 96  # merged, not replaced
    assert cfg.optim.clip_grad == 1.0
    assert cfg.ema.enabled is True


@pytest.mark.parametrize(("override", "bad", "nearest"), [
    ("optim.lrr=1e-3", "optim.lrr", "optim.lr"),
    ("epoch=3", "epoch", "epochs"),
    ("data.batchsize=3", "data.batch_size", None),
    ("distilation.type=hard", "distilation", "distillation"),
    ("model.args.embed_dimm=64", "model.args.embed_dimm", "model.args.embed_dim"),
    ("schedule.warmup_epoch=1", "schedule.warmup_epoch", "schedule.warmup_epochs"),
])
def test_typo_names_the_key_and_the_nearest_valid_one(override, bad, nearest):
    with pytest.raises(ConfigError) as info:
        load_config("digits-deit-distilled", [override])
    msg = str(info.value)
    if nearest is None:  # data.batchsize -> data.batch_size
        assert "'data.batchsize'" in msg and "did you mean 'data.batch_size'" in msg
    else:
        assert f"'{bad}'" in msg and f"did you mean '{nearest}'" in msg


def test_typo_in_a_yaml_file(tmp_path):
    path = tmp_path / "my.yaml"
    path.write_text("base: digits-convnet-teacher\noptim:\n  weight_decya: 0.1\n")
    with pytest.raises(ConfigError, match="did you mean 'optim.weight_decay'"):
        load_config(path)


@pytest.mark.parametrize(("override", "match"), [
    ("optim.lr=fast", "optim.lr='fast': expected a number"),
    ("epochs=2.5", "epochs=2.5: expected an integer"),
    ("distillation.type=medium", "distillation.type='medium' is not one of none, soft, hard"),
    ("amp=fp8", "amp='fp8'"),
    ("model.name=deit_tiny_distiled_patch16_224", "did you mean deit_tiny_distilled_patch16_224"),
    ("model.args.img_size=32", "set model.img_size instead"),
    ("data.mixup=-1", "Beta alpha"),
])
def test_bad_values_are_clear_errors(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config("digits-deit-distilled", [override])


def test_unknown_preset_suggests_the_nearest():
    with pytest.raises(ConfigError, match="did you mean 'deit-tiny_pt-4xb256_in1k'"):
        load_config("deit-tiny_pt-4xb265_in1k")
