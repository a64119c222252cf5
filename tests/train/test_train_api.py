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


def test_eval_every_skips_validation_without_changing_training(tmp_path, capsys):
    import json

    import torch

    results = {}
    for every in (1, 2, 0, -1):
        cfg = load_config("digits-convnet-teacher", tiny_overrides(tmp_path / f"every{every}", extra=(
            "epochs=5", f"eval_every={every}")))
        results[every] = train(cfg)
    validated = {}
    for every, result in results.items():
        records = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
        epochs = [r for r in records if r["kind"] == "epoch"]
        assert [r["epoch"] for r in epochs] == [1, 2, 3, 4, 5]
        validated[every] = [r["epoch"] for r in epochs if "top1" in r]
        assert (result.run_dir / "plots" / "loss.png").is_file()
    assert validated == {1: [1, 2, 3, 4, 5], 2: [2, 4, 5], 0: [5], -1: []}
    # Validation draws no random numbers: the weights and the final metrics do not depend on how often it runs.
    reference = results[1].model.state_dict()
    for every in (2, 0, -1):
        assert all(torch.equal(reference[k], v) for k, v in results[every].model.state_dict().items())
    for every in (2, 0):
        assert results[every].summary["final"] == results[1].summary["final"]
    assert results[0].summary["best_epoch"] == 5
    # -1: never validated, so no final metrics and no best checkpoint (the caller evaluates the weights itself).
    never = results[-1]
    assert never.summary["final"] == {} and not (never.run_dir / "best.safetensors").exists()
    assert (never.run_dir / "last.safetensors").is_file()
    assert "(no validation)" in capsys.readouterr().out


def test_eval_every_must_be_at_least_minus_one(tmp_path):
    import pytest

    from deit.train.config import ConfigError

    with pytest.raises(ConfigError, match="eval_every must be >= -1"):
        load_config("digits-convnet-teacher", tiny_overrides(tmp_path / "run", extra=("eval_every=-2",)))


