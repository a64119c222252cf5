"""The teacher's recorded validation predictions give every student the agreement the live teacher gives."""

import dataclasses

import pytest
import torch

from deit.inference.evaluation import eval_loader, evaluate
from deit.inference.teacher import Teacher
from deit.models import build_architecture
from deit.reproduce.replay import ReplayedTeacher, record_predictions, replayed_teacher

DATA = ["img_size=16", "synthetic_classes=4", "synthetic_val=37"]  # 37: the last batch is a partial one


@pytest.fixture
def models():
    torch.manual_seed(0)
    teacher = build_architecture("resnet_digits", num_classes=4, img_size=16).eval()
    student = build_architecture("deit_tiny_distilled_patch16_224", img_size=16, patch_size=8, embed_dim=32, depth=1,
                           num_heads=2, num_classes=4).eval()
    return teacher, student


def test_replayed_agreement_equals_the_live_teachers(models, tmp_path):
    teacher, student = models
    loader, _ = eval_loader("synthetic", student, batch_size=8, overrides=DATA)
    path = tmp_path / "val_predictions.pt"
    recorded = record_predictions(teacher, loader, student.preprocessing, path)
    assert recorded.shape == (37,) and recorded.dtype == torch.int64
    live = evaluate(student, loader, teacher=Teacher(teacher))
    replay = replayed_teacher(path, student.preprocessing)
    assert replay is not None
    assert evaluate(student, loader, teacher=replay) == live
    replay.finish()
    assert 0.0 < live["agreement"] < 1.0 and {"agreement_cls", "agreement_dist"} <= set(live)


def test_replay_refuses_another_preprocessing_or_another_split(models, tmp_path):
    teacher, student = models
    loader, _ = eval_loader("synthetic", student, batch_size=8, overrides=DATA)
    path = tmp_path / "val_predictions.pt"
    record_predictions(teacher, loader, student.preprocessing, path)
    other = dataclasses.replace(student.preprocessing, mean=(0.5, 0.5, 0.5))
    assert replayed_teacher(path, other) is None  # the caller then runs the teacher itself
    assert replayed_teacher(tmp_path / "missing.pt", student.preprocessing) is None

    longer, _ = eval_loader("synthetic", student, batch_size=8, overrides=[*DATA[:2], "synthetic_val=45"])
    with pytest.raises(RuntimeError, match="holds 37 predictions; the evaluation has more images"):
        evaluate(student, longer, teacher=ReplayedTeacher(path))
    shorter, _ = eval_loader("synthetic", student, batch_size=8, overrides=[*DATA[:2], "synthetic_val=20"])
    replay = ReplayedTeacher(path)
    evaluate(student, shorter, teacher=replay)
    with pytest.raises(RuntimeError, match="holds 37 predictions but the evaluation had 20 images"):
        replay.finish()
