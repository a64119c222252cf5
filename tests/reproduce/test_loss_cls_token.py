"""Usual distillation into the class token (``distillation.token=cls``) against a hand computation."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from deit.models import build_architecture
from deit.runtime.distributed import DistEnv
from deit.train.components import build_distillation_objective
from deit.train.config import ConfigError
from deit.train.loss import DistillationLoss
from deit.train.presets import load_config
from deit.train.task import TrainTask

LOGITS = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3]])
TEACHER = torch.tensor([[0.2, 3.0, 0.1], [2.0, 1.0, -1.0]])  # argmax 1, 0: disagrees with the labels
LABELS = torch.tensor([0, 2])


class FixedTeacher(nn.Module):
    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(()))
        self.logits = logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits * self.w


def log_softmax(row: list[float], tau: float = 1.0) -> list[float]:
    z = [v / tau for v in row]
    m = max(z)
    lse = m + math.log(sum(math.exp(v - m) for v in z))
    return [v - lse for v in z]


def hand_ce(rows: torch.Tensor, targets: list[int]) -> float:
    return sum(-log_softmax(r)[t] for r, t in zip(rows.tolist(), targets, strict=True)) / len(targets)


def hand_kl(student: torch.Tensor, teacher: torch.Tensor, tau: float) -> float:
    """tau^2 * mean over the batch of KL(teacher || student) at temperature tau."""
    total = 0.0
    for s, t in zip(student.tolist(), teacher.tolist(), strict=True):
        ls, lt = log_softmax(s, tau), log_softmax(t, tau)
        total += sum(math.exp(a) * (a - b) for a, b in zip(lt, ls, strict=True))
    return tau * tau * total / len(student)


def test_hard_into_class_token_matches_hand_computation():
    loss = DistillationLoss(nn.CrossEntropyLoss(), FixedTeacher(TEACHER), "hard", alpha=0.5, token="cls")
    got = loss(torch.zeros(2, 3, 4, 4), LOGITS, LABELS)
    want = 0.5 * hand_ce(LOGITS, [0, 2]) + 0.5 * hand_ce(LOGITS, [1, 0])
    assert got.item() == pytest.approx(want, rel=1e-6)


def test_soft_into_class_token_matches_hand_computation():
    loss = DistillationLoss(nn.CrossEntropyLoss(), FixedTeacher(TEACHER), "soft", alpha=0.1, tau=3.0, token="cls")
    got = loss(torch.zeros(2, 3, 4, 4), LOGITS, LABELS)
    want = 0.9 * hand_ce(LOGITS, [0, 2]) + 0.1 * hand_kl(LOGITS, TEACHER, 3.0)
    assert got.item() == pytest.approx(want, rel=1e-6)


def test_gradient_reaches_the_single_output_from_both_terms():
    logits = LOGITS.clone().requires_grad_(True)
    loss = DistillationLoss(nn.CrossEntropyLoss(), FixedTeacher(TEACHER), "hard", alpha=1.0, token="cls")
    loss(torch.zeros(2, 3, 4, 4), logits, LABELS).backward()
    # alpha 1: only the teacher's labels (1, 0) pull: their logits' gradients are negative.
    assert logits.grad[0, 1] < 0 and logits.grad[1, 0] < 0


def test_token_mismatches_are_clear_errors():
    one_output = DistillationLoss(nn.CrossEntropyLoss(), FixedTeacher(TEACHER), "hard")  # token=dist
    with pytest.raises(ValueError, match="distillation.token=cls"):
        one_output(torch.zeros(2, 3, 4, 4), LOGITS, LABELS)
    cls_on_two = DistillationLoss(nn.CrossEntropyLoss(), FixedTeacher(TEACHER), "hard", token="cls")
    with pytest.raises(ValueError, match="has one"):
        cls_on_two(torch.zeros(2, 3, 4, 4), (LOGITS, LOGITS), LABELS)
    with pytest.raises(ValueError, match="token"):
        DistillationLoss(nn.CrossEntropyLoss(), FixedTeacher(TEACHER), "hard", token="patch")
    with pytest.raises(ConfigError, match="distillation.token"):
        load_config("digits-deit-distilled", ["distillation.token=both"])


def _student(distilled: bool) -> nn.Module:
    return build_architecture("deit_tiny_patch16_224", num_classes=3, img_size=16, patch_size=4, embed_dim=32, depth=1,
                        num_heads=2, distilled=distilled)


def test_runner_checks_the_token_against_the_student():
    teacher = FixedTeacher(torch.zeros(1, 3))

    def task(cfg, student):  # the run's task checks its student once, before any teacher is loaded
        return TrainTask(student, build_distillation_objective(cfg, 3, soft_targets=False), teacher, env=DistEnv())

    cls_cfg = load_config("digits-deit-distilled", ["distillation.token=cls", "model.args.distilled=false"])
    task(cls_cfg, _student(False))  # accepted
    with pytest.raises(ConfigError, match="model.args.distilled=false"):
        task(cls_cfg, _student(True))
    dist_cfg = load_config("digits-deit-distilled", ["model.args.distilled=false"])
    with pytest.raises(ConfigError, match="needs a student with a distillation token"):
        task(dist_cfg, _student(False))
