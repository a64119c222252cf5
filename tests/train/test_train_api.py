"""The Python API: any nn.Module can be the teacher."""

from __future__ import annotations

from torch import nn
from train_support import tiny_overrides

from deit.train import load_config, train


def test_any_module_can_be_the_teacher(tmp_path):
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 4))
    cfg = load_config("digits-convnet-teacher", tiny_overrides(tmp_path / "run", extra=(
        "epochs=1", "distillation.type=soft", "distillation.tau=3.0", "ema.enabled=true")))
    result = train(cfg, teacher=teacher)
    final = result.summary["final"]
    assert {"teacher_top1", "agreement", "top1_cls", "top1_dist", "ema_top1"} <= set(final)
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    assert (tmp_path / "run" / "ema.safetensors").is_file()


def test_bf16_autocast_on_cpu_with_a_bf16_teacher(tmp_path):
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 4))
    cfg = load_config("digits-convnet-teacher", tiny_overrides(tmp_path / "run", extra=(
        "epochs=1", "amp=bf16", "distillation.type=hard", "teacher.dtype=bfloat16")))
    result = train(cfg, teacher=teacher)
    assert next(teacher.parameters()).dtype.is_floating_point and next(teacher.parameters()).dtype.itemsize == 2
    final = result.summary["final"]
    assert 0.0 <= final["top1"] <= 1.0 and final["loss"] == final["loss"]  # finite, not NaN
    # The student's weights stay float32 (autocast only changes the compute dtype).
    assert all(p.dtype.itemsize == 4 for p in result.model.parameters())
