"""The distillation loss against hand computations, and the teacher's isolation from training."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from deit.models import build_architecture
from deit.train.config import OptimConfig
from deit.train.loss import DistillationLoss, soft_distillation
from deit.train.optim import build_optimizer

LOGITS_CLS = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3]])
LOGITS_DIST = torch.tensor([[0.0, 1.0, 0.5], [1.5, -0.5, 0.0]])
TEACHER = torch.tensor([[0.2, 3.0, 0.1], [2.0, 1.0, -1.0]])  # argmax 1, 0: differs from the labels below
LABELS = torch.tensor([0, 2])


class FixedTeacher(nn.Module):
    """Returns fixed logits whatever the input (the loss must pass it the inputs, not the labels)."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(()))
        self.logits = logits
        self.seen: list[torch.Tensor] = []

    def forward(self, x):
        self.seen.append(x)
        return self.logits * self.w


def np_ce(logits: np.ndarray, target: np.ndarray) -> float:
    """Mean cross-entropy, by hand."""
    out = []
    for row, t in zip(logits, target, strict=True):
        m = row.max()
        lse = m + math.log(sum(math.exp(v - m) for v in row))
        out.append(lse - row[t])
    return float(np.mean(out))


def np_log_softmax(row: np.ndarray) -> np.ndarray:
    m = row.max()
    return row - (m + math.log(np.exp(row - m).sum()))


def test_none_single_output_is_the_base_criterion():
    loss = DistillationLoss(nn.CrossEntropyLoss(), None, "none")
    got = loss(torch.zeros(2, 3, 4, 4), LOGITS_CLS, LABELS)
    assert got.item() == pytest.approx(np_ce(LOGITS_CLS.numpy(), LABELS.numpy()), abs=1e-6)


def test_none_two_heads_trains_both_on_the_label():
    loss = DistillationLoss(nn.CrossEntropyLoss(), None, "none")
    got = loss(torch.zeros(2, 3, 4, 4), (LOGITS_CLS, LOGITS_DIST), LABELS)
    want = (np_ce(LOGITS_CLS.numpy(), LABELS.numpy()) + np_ce(LOGITS_DIST.numpy(), LABELS.numpy())) / 2
    assert got.item() == pytest.approx(want, abs=1e-6)


@pytest.mark.parametrize("alpha", [0.5, 0.1])
def test_hard_matches_hand_computation(alpha):
    teacher = FixedTeacher(TEACHER)
    loss = DistillationLoss(nn.CrossEntropyLoss(), teacher, "hard", alpha=alpha)
    x = torch.randn(2, 3, 4, 4)
    got = loss(x, (LOGITS_CLS, LOGITS_DIST), LABELS)
    teacher_labels = np.array([1, 0])
    want = (1 - alpha) * np_ce(LOGITS_CLS.numpy(), LABELS.numpy()) + alpha * np_ce(LOGITS_DIST.numpy(),
                                                                                  teacher_labels)
    assert got.item() == pytest.approx(want, abs=1e-6)
    assert teacher.seen[0] is x or torch.equal(teacher.seen[0], x)  # the teacher saw the student's very batch


@pytest.mark.parametrize("tau", [1.0, 3.0])
def test_soft_matches_hand_computation_in_both_normalisations(tau):
    s, t = LOGITS_DIST.numpy().astype(np.float64), TEACHER.numpy().astype(np.float64)
    kl_sum = 0.0
    for srow, trow in zip(s, t, strict=True):
        log_p_t, log_p_s = np_log_softmax(trow / tau), np_log_softmax(srow / tau)
        kl_sum += float((np.exp(log_p_t) * (log_p_t - log_p_s)).sum())
    batch, classes = s.shape
    got_mean = soft_distillation(LOGITS_DIST, TEACHER, tau, "batchmean").item()
    got_ref = soft_distillation(LOGITS_DIST, TEACHER, tau, "batch_classes").item()
    assert got_mean == pytest.approx(kl_sum * tau**2 / batch, rel=1e-5)
    assert got_ref == pytest.approx(kl_sum * tau**2 / (batch * classes), rel=1e-5)
    # And inside the two-term loss, with the soft targets of mixup on the class head.
    alpha = 0.3
    loss = DistillationLoss(nn.CrossEntropyLoss(), FixedTeacher(TEACHER), "soft", alpha=alpha, tau=tau)
    got = loss(torch.zeros(2, 3, 4, 4), (LOGITS_CLS, LOGITS_DIST), LABELS).item()
    want = (1 - alpha) * np_ce(LOGITS_CLS.numpy(), LABELS.numpy()) + alpha * kl_sum * tau**2 / batch
    assert got == pytest.approx(want, rel=1e-5)


def test_soft_distillation_is_zero_when_student_equals_teacher():
    assert soft_distillation(TEACHER, TEACHER, 2.0).item() == pytest.approx(0.0, abs=1e-7)


def test_dist_head_gets_the_teacher_target_and_cls_head_the_label():
    alpha = 0.5
    loss = DistillationLoss(nn.CrossEntropyLoss(), FixedTeacher(TEACHER), "hard", alpha=alpha)
    cls = LOGITS_CLS.clone().requires_grad_(True)
    dist = LOGITS_DIST.clone().requires_grad_(True)
    loss(torch.zeros(2, 3, 4, 4), (cls, dist), LABELS).backward()
    # d CE / d logits = (softmax - onehot) / batch
    want_cls = (1 - alpha) * (F.softmax(LOGITS_CLS, 1) - F.one_hot(LABELS, 3)) / 2
    want_dist = alpha * (F.softmax(LOGITS_DIST, 1) - F.one_hot(TEACHER.argmax(1), 3)) / 2
    torch.testing.assert_close(cls.grad, want_cls)
    torch.testing.assert_close(dist.grad, want_dist)
    # The class head's gradient does not depend on the teacher, the distillation head's not on the labels.
    assert not torch.allclose(dist.grad, alpha * (F.softmax(LOGITS_DIST, 1) - F.one_hot(LABELS, 3)) / 2)


def test_class_head_takes_mixed_soft_targets():
    from deit.train.objectives import SoftTargetCrossEntropy

    soft = torch.tensor([[0.7, 0.2, 0.1], [0.0, 0.4, 0.6]])
    loss = DistillationLoss(SoftTargetCrossEntropy(), FixedTeacher(TEACHER), "hard", alpha=0.5)
    got = loss(torch.zeros(2, 3, 4, 4), (LOGITS_CLS, LOGITS_DIST), soft).item()
    base = float(-(soft * F.log_softmax(LOGITS_CLS, 1)).sum(1).mean())
    want = 0.5 * base + 0.5 * np_ce(LOGITS_DIST.numpy(), np.array([1, 0]))
    assert got == pytest.approx(want, abs=1e-6)


def test_distillation_on_a_model_without_dist_token_is_a_clear_error():
    loss = DistillationLoss(nn.CrossEntropyLoss(), FixedTeacher(TEACHER), "hard")
    with pytest.raises(ValueError, match="distilled"):
        loss(torch.zeros(2, 3, 4, 4), LOGITS_CLS, LABELS)
    with pytest.raises(ValueError, match="needs a teacher"):
        DistillationLoss(nn.CrossEntropyLoss(), None, "soft")


def test_teacher_gets_no_gradient_and_no_optimizer_state():
    torch.manual_seed(0)
    student = build_architecture("deit_tiny_distilled_patch16_224", num_classes=5, img_size=16, patch_size=4,
                           embed_dim=32, depth=1, num_heads=2)
    teacher = build_architecture("resnet_digits", num_classes=5, img_size=16)
    teacher.train()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    loss_fn = DistillationLoss(nn.CrossEntropyLoss(), teacher, "hard")
    opt = build_optimizer(OptimConfig(lr=1e-2), student, lr=1e-2)
    x, y = torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 3])
    for _ in range(2):
        opt.zero_grad()
        loss_fn(x, student.forward_heads(x), y).backward()
        opt.step()
    assert not teacher.training  # eval mode: BatchNorm statistics are not updated either
    assert all(not p.requires_grad and p.grad is None for p in teacher.parameters())
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, before[k]), k
    teacher_ids = {id(p) for p in teacher.parameters()}
    opt_ids = {id(p) for g in opt.param_groups for p in g["params"]}
    assert not teacher_ids & opt_ids
    assert all(id(p) not in teacher_ids for p in opt.state)
    assert len(opt.state) == sum(1 for _ in student.parameters())
    # The teacher is not part of the loss module's state either (nothing of it is saved or wrapped by DDP).
    assert list(loss_fn.state_dict()) == [] and list(loss_fn.parameters()) == []
