"""The default regime: the teacher trains on the milder views, the students add RandAugment
(docs/results/reproduce-digits.md)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

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


# ---- regimes are named for what they are; data.root decides the format
def _jpeg_folders(root: Path) -> Path:
    from PIL import Image

    for split in ("train", "test"):
        for name in ("cat", "dog"):
            (root / split / name).mkdir(parents=True)
            Image.new("RGB", (32, 32)).save(root / split / name / "0.jpg")
    return root


def test_the_cifar10_regime_reads_what_its_root_holds(tmp_path):
    from deit.reproduce.regime import CIFAR_REGIME, regime_named

    assert regime_named("cifar10") is CIFAR_REGIME and regime_named("digits") is DEFAULT_REGIME
    regime = regime_named("cifar10").with_user_settings(root=str(_jpeg_folders(tmp_path / "jpegs")))
    assert (regime.name, regime.dataset, regime.teacher_preset) == ("cifar10", "imagefolder", "cifar10-convnet-teacher")
    assert "data.dataset=imagefolder" in regime.data_overrides()
    cfg = method_config(get_method("deit-none"), regime, seed=0, epochs=1, run_dir=Path("unused"))
    assert cfg.data.dataset == "imagefolder" and cfg.data.img_size == 32
    # The study plans its own runs (the preset's 60-minute budget is off) and its 100 student epochs take the DeiT
    # recipe's full augmentation, which the preset leaves out for its few epochs.
    assert cfg.budget_minutes is None and cfg.epochs == 1
    assert (cfg.data.auto_augment, cfg.data.mixup, cfg.data.cutmix) == ("rand-m5-mstd0.5-inc1", 0.8, 1.0)
    # Without a root: the archive (downloaded once when a run needs it).
    assert regime_named("cifar10").with_user_settings().dataset == "cifar10"
    with pytest.raises(ValueError, match="regime 'imagefolder': the study has the regimes digits, cifar10"):
        regime_named("imagefolder")


def test_a_study_saved_before_regimes_had_names_resumes_with_its_regime():
    from dataclasses import asdict

    from deit.reproduce.regime import CIFAR_REGIME, regime_from_dict

    for former, regime in (("digits", DEFAULT_REGIME), ("imagefolder", CIFAR_REGIME), ("cifar10", CIFAR_REGIME)):
        saved = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(regime).items()
                 if k not in ("name", "teacher_preset", "student_preset")}
        back = regime_from_dict({**saved, "dataset": former, "root": "/data"})
        assert (back.name, back.student_preset, back.dataset) == (regime.name, regime.student_preset, former)
        assert back.common == regime.common
    assert regime_from_dict(asdict(CIFAR_REGIME)) == CIFAR_REGIME


def test_dataset_is_the_former_spelling_of_regime(tmp_path):
    def deit(*args):
        return subprocess.run([sys.executable, "-m", "deit", "reproduce", *args], cwd=Path(__file__).parents[2],
                              env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=120)

    refused = deit("--dataset", "imagefolder", "--root", str(tmp_path))
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1
    assert "--dataset is now --regime (digits, cifar10)" in refused.stderr
    assert "use --regime cifar10 --root DIR" in refused.stderr
    # A regime's name still works, with a note; here the study then stops at the output that holds one already.
    (tmp_path / "study.json").write_text("{}")
    noted = deit("--dataset", "digits", "--seeds", "0", "--epochs", "1", "--output", str(tmp_path))
    assert noted.returncode == 2 and "note: --dataset is deprecated: use --regime digits" in noted.stderr
    assert "already holds a study" in noted.stderr
    missing = deit("--regime", "cifar10", "--root", str(tmp_path / "nope"), "--output", str(tmp_path / "out"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr and not (tmp_path / "out").exists()
