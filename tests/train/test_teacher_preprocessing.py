"""The teacher sees its own preprocessing: a teacher checkpoint's input size and mean/std are honoured."""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from train_support import tiny_overrides

from deit.checkpoints import save_checkpoint
from deit.inference.teacher import InputAdapter, Teacher
from deit.models import Preprocessing, build_architecture
from deit.train import load_config, train

STUDENT = Preprocessing(input_size=16, crop_pct=1.0)
TEACHER = Preprocessing(input_size=32, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3), interpolation="bilinear",
                        crop_pct=1.0)


def test_adapter_renormalises_and_resizes():
    pixels = torch.rand(2, 3, 16, 16)
    as_student = (pixels - torch.tensor(STUDENT.mean).view(1, 3, 1, 1)) / torch.tensor(STUDENT.std).view(1, 3, 1, 1)
    adapter = InputAdapter(STUDENT, TEACHER)
    got = adapter(as_student)
    resized = F.interpolate(pixels, size=(32, 32), mode="bilinear", align_corners=False)
    want = (resized - torch.tensor(TEACHER.mean).view(1, 3, 1, 1)) / torch.tensor(TEACHER.std).view(1, 3, 1, 1)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert "resized 16 -> 32 px" in adapter.describe() and "re-normalised" in adapter.describe()
    assert InputAdapter(STUDENT, dataclasses.replace(STUDENT, crop_pct=0.875)).identity  # crop is eval-only


def test_teacher_applies_its_adapter_and_stays_frozen():
    torch.manual_seed(0)
    module = build_architecture("resnet_digits", num_classes=4, img_size=32)
    x = torch.randn(2, 3, 16, 16)
    adapter = InputAdapter(STUDENT, TEACHER)
    teacher = Teacher(module, "float32", adapter)
    with torch.no_grad():
        want = module.eval()(adapter(x))
    torch.testing.assert_close(teacher(x), want, atol=1e-5, rtol=1e-4)
    assert not module.training and not any(p.requires_grad for p in module.parameters())


def test_a_run_converts_the_batch_for_its_teacher_and_says_so(tmp_path, capsys):
    torch.manual_seed(1)
    module = build_architecture("resnet_digits", num_classes=4, img_size=32)
    module.preprocessing = TEACHER
    save_checkpoint(module, tmp_path / "teacher.safetensors")
    cfg = load_config("digits-convnet-teacher", tiny_overrides(tmp_path / "run", extra=(
        "epochs=1", "distillation.type=hard", f"teacher.checkpoint={tmp_path / 'teacher.safetensors'}")))
    result = train(cfg)
    out = capsys.readouterr().out
    assert out.count("the teacher's checkpoint records its own preprocessing") == 1
    assert "resized 16 -> 32 px (bilinear)" in out and "mean (0.5, 0.4, 0.3)" in out
    assert 0.0 <= result.summary["final"]["teacher_top1"] <= 1.0
