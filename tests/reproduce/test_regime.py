"""The default regime: the teacher trains on the milder views, the students add RandAugment
(docs/results/reproduce-digits.md)."""

from __future__ import annotations

from pathlib import Path

from deit.reproduce import DEFAULT_REGIME
from deit.reproduce.methods import get_method
from deit.reproduce.runs import method_config


def _config(method: str):
    return method_config(get_method(method), DEFAULT_REGIME, seed=1, epochs=5, run_dir=Path("unused"),
                         teacher_checkpoint=Path("teacher/last.safetensors"))


def test_teacher_and_students_get_their_own_augmentation():
    teacher, student = _config("teacher"), _config("deit-dist-hard")
    for cfg in (teacher, student):
        assert cfg.data.train_per_class == 20 and tuple(cfg.data.scale) == (0.35, 1.0) and cfg.data.reprob == 0.25
        assert cfg.eval_every == -1 and cfg.seed == 1 and cfg.epochs == 5
    assert teacher.data.auto_augment is None and teacher.data.batch_size == 64
    assert student.data.auto_augment == "rand-m5-mstd0.5-inc1" and student.data.batch_size == 32
    assert student.teacher.checkpoint == "teacher/last.safetensors"
    assert _config("deit-none").teacher.checkpoint is None  # the teacher only measures its agreement


def test_the_users_student_overrides_win_over_the_methods():
    from dataclasses import replace

    regime = replace(DEFAULT_REGIME, student=(*DEFAULT_REGIME.student, "distillation.tau=1.5",
                                              "distillation.kl_normalisation=batch_classes"))
    cfg = method_config(get_method("deit-dist-soft"), regime, seed=0, epochs=1, run_dir=Path("unused"),
                        teacher_checkpoint=Path("t.safetensors"))
    assert cfg.distillation.tau == 1.5 and cfg.distillation.kl_normalisation == "batch_classes"
    assert cfg.distillation.type == "soft" and cfg.distillation.alpha == 0.5  # the method's own settings stay


def test_default_workers_leave_one_core_per_thread(monkeypatch):
    from dataclasses import replace

    from deit.reproduce import study

    monkeypatch.setattr(study, "available_cpus", lambda: 8)
    assert study.default_workers(DEFAULT_REGIME) == 8  # the presets' threads: 1
    assert study.default_workers(replace(DEFAULT_REGIME, student=("threads=4",))) == 2
    assert study.default_workers(replace(DEFAULT_REGIME, student=("threads=null",))) == 1  # torch's own: all cores
