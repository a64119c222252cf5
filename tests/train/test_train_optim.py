"""Optimizer groups, lr scaling and the per-iteration warmup + cosine schedule."""

from __future__ import annotations

import math

import pytest
import torch

from deit.models import build_architecture
from deit.train.config import OptimConfig, ScheduleConfig
from deit.train.optim import LRSchedule, build_optimizer, build_schedule, param_groups, scaled_lr


def test_schedule_values():
    s = LRSchedule("cosine", lr=1e-3, total_steps=100, warmup_steps=10, warmup_lr=1e-6, min_lr=1e-5)
    assert s(0) == pytest.approx(1e-6)
    assert s(5) == pytest.approx(1e-6 + (1e-3 - 1e-6) * 0.5)
    assert s(10) == pytest.approx(1e-3)  # end of warmup: the peak
    assert s(55) == pytest.approx(1e-5 + (1e-3 - 1e-5) * 0.5)  # half-way through the cosine
    t = 30 - 10
    assert s(30) == pytest.approx(1e-5 + 0.5 * (1e-3 - 1e-5) * (1 + math.cos(math.pi * t / 90)))
    assert s(100) == pytest.approx(1e-5)
    assert s(150) == pytest.approx(1e-5)  # stays at the floor
    values = [s(i) for i in range(10, 101)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))  # monotone after warmup
    c = LRSchedule("constant", lr=5e-6, total_steps=100)
    assert {c(i) for i in range(100)} == {5e-6}


def test_schedule_is_per_iteration_from_epochs():
    s = build_schedule(ScheduleConfig(warmup_epochs=5, warmup_lr=1e-6, min_lr=1e-5), 1e-3, steps_per_epoch=1251,
                       total_steps=300 * 1251)
    assert (s.warmup_steps, s.total_steps) == (5 * 1251, 300 * 1251)
    assert s(1) != s(0)  # moves every step, not every epoch


def test_apply_sets_every_group():
    model = torch.nn.Linear(3, 2)
    opt = build_optimizer(OptimConfig(), model, lr=0.1)
    lr = LRSchedule("constant", lr=0.25, total_steps=10).apply(opt, 3)
    assert lr == 0.25 and all(g["lr"] == 0.25 for g in opt.param_groups)


def test_lr_scaling_by_total_batch():
    cfg = OptimConfig(lr=5e-4)
    assert scaled_lr(cfg, 256, 4) == (pytest.approx(1e-3), 1024)
    assert scaled_lr(OptimConfig(lr=5e-4, accum_steps=4), 64, 2) == (pytest.approx(5e-4), 512)
    assert scaled_lr(OptimConfig(lr=5e-4, scale_lr=False), 256, 4) == (5e-4, 1024)


def test_no_decay_groups_for_deit():
    model = build_architecture("deit_tiny_distilled_patch16_224", img_size=32, patch_size=8, depth=2)
    decay, no_decay = param_groups(model, 0.05)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    nd = set(no_decay["param_names"])
    for name in ("pos_embed", "cls_token", "dist_token", "blocks.0.norm1.weight", "blocks.0.norm1.bias",
                 "norm.weight", "head.bias", "head_dist.bias", "blocks.1.attn.qkv.bias", "patch_embed.proj.bias"):
        assert name in nd, name
    d = set(decay["param_names"])
    for name in ("blocks.0.attn.qkv.weight", "blocks.1.mlp.fc1.weight", "head.weight", "head_dist.weight",
                 "patch_embed.proj.weight"):
        assert name in d, name
    assert not d & nd
    assert len(d) + len(nd) == len(list(model.parameters()))
    opt = build_optimizer(OptimConfig(weight_decay=0.05), model, lr=1e-3)
    assert isinstance(opt, torch.optim.AdamW)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.05, 0.0]


def test_no_decay_groups_for_a_convnet():
    model = build_architecture("resnet_digits")
    decay, no_decay = param_groups(model, 5e-4)
    assert "bn1.weight" in no_decay["param_names"] and "fc.bias" in no_decay["param_names"]
    assert "conv1.weight" in decay["param_names"] and "fc.weight" in decay["param_names"]
    assert isinstance(build_optimizer(OptimConfig(name="sgd"), model, 0.1), torch.optim.SGD)
