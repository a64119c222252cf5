"""loss.name=bce: DeiT III's binary cross-entropy, against hand computations and the official binarisation."""

from __future__ import annotations

import math

import pytest
import torch

from deit.data import Mixup
from deit.train import DistillationObjective
from deit.train.config import ConfigError, TrainConfig
from deit.train.objectives import ObjectiveSpec, build_objective


def _bce_by_hand(logits: list[list[float]], targets: list[list[int]]) -> float:
    """mean over every (image, class) of -[y log sigmoid(x) + (1 - y) log(1 - sigmoid(x))]."""
    terms = []
    for row, ys in zip(logits, targets, strict=True):
        for x, y in zip(row, ys, strict=True):
            s = 1 / (1 + math.exp(-x))
            terms.append(-(y * math.log(s) + (1 - y) * math.log(1 - s)))
    return sum(terms) / len(terms)


LOGITS = [[2.0, -1.0, 0.5], [-0.3, 1.5, -2.0]]


def test_class_indices_become_one_hot_targets():
    bce = build_objective("bce", ObjectiveSpec(num_classes=3, smoothing=0.0, soft_targets=False))
    loss = bce(torch.tensor(LOGITS), torch.tensor([0, 2]))
    assert float(loss) == pytest.approx(_bce_by_hand(LOGITS, [[1, 0, 0], [0, 0, 1]]), rel=1e-6)


def test_mixed_targets_are_binarised_like_the_official_engine():
    bce = build_objective("bce", ObjectiveSpec(num_classes=3, smoothing=0.0, soft_targets=True))
    # mixup's targets: a share of each label; one row unmixed, one with a vanishing share (still a positive).
    soft = torch.tensor([[0.7, 0.3, 0.0], [0.0, 1.0 - 1e-6, 1e-6]])
    loss = bce(torch.tensor(LOGITS), soft)
    assert float(loss) == pytest.approx(_bce_by_hand(LOGITS, [[1, 1, 0], [0, 1, 1]]), rel=1e-6)
    # the official engine.py: targets = targets.gt(0.0).type(targets.dtype), then BCEWithLogitsLoss()
    official = torch.nn.BCEWithLogitsLoss()(torch.tensor(LOGITS), soft.gt(0.0).type(soft.dtype))
    assert float(loss) == pytest.approx(float(official), rel=1e-6)
    # not the soft targets themselves (what a plain BCE on mixup's output would compute)
    assert float(loss) != pytest.approx(float(torch.nn.BCEWithLogitsLoss()(torch.tensor(LOGITS), soft)), rel=1e-3)


def test_binarised_after_a_real_mixup_batch():
    torch.manual_seed(0)
    x, y = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
    mix = Mixup(mixup_alpha=0.8, cutmix_alpha=0.0, label_smoothing=0.0, num_classes=5)
    _, soft = mix(x, y, torch.Generator().manual_seed(1))
    assert mix.last_mode == "mixup"
    binary = soft.gt(0.0).float()
    # each image and its mirror in the batch: two positives per row
    assert binary.tolist() == [[1, 0, 0, 1, 0], [0, 1, 1, 0, 0], [0, 1, 1, 0, 0], [1, 0, 0, 1, 0]]
    logits = torch.randn(4, 5)
    bce = build_objective("bce", ObjectiveSpec(num_classes=5, smoothing=0.0, soft_targets=True))
    assert torch.allclose(bce(logits, soft), torch.nn.functional.binary_cross_entropy_with_logits(logits, binary))


def test_label_smoothing_is_refused_naming_the_fix():
    # smoothing puts s/C on every class: binarised, every class would be a positive
    with pytest.raises(ValueError, match="data.smoothing=0"):
        build_objective("bce", ObjectiveSpec(num_classes=3, smoothing=0.1, soft_targets=True))
    cfg = TrainConfig()
    cfg.loss.name = "bce"  # data.smoothing defaults to 0.1: refused before any data is read
    with pytest.raises(ConfigError, match="loss.name=bce .* set data.smoothing=0"):
        cfg.validate()
    cfg.data.smoothing = 0.0
    assert cfg.validate().loss.name == "bce"


def test_distillation_composes_on_top_of_bce():
    bce = build_objective("bce", ObjectiveSpec(num_classes=3, smoothing=0.0, soft_targets=True))
    objective = DistillationObjective(bce, "hard", alpha=0.25)
    cls_logits, dist_logits = torch.tensor(LOGITS), torch.tensor([[0.1, 0.2, 0.3], [1.0, -1.0, 0.0]])
    teacher = torch.tensor([[0.0, 5.0, 0.0], [3.0, 0.0, 0.0]])  # hard labels 1 and 0
    soft = torch.tensor([[0.6, 0.4, 0.0], [0.0, 0.0, 1.0]])
    terms = objective.terms((cls_logits, dist_logits), soft, teacher)
    base = _bce_by_hand(LOGITS, [[1, 1, 0], [0, 0, 1]])
    ce = -(math.log(math.exp(0.2) / sum(math.exp(v) for v in (0.1, 0.2, 0.3)))
           + math.log(math.exp(1.0) / sum(math.exp(v) for v in (1.0, -1.0, 0.0)))) / 2
    assert float(terms["base"]) == pytest.approx(base, rel=1e-6)
    assert float(terms["distillation"]) == pytest.approx(ce, rel=1e-6)
    assert float(terms["loss"]) == pytest.approx(0.75 * base + 0.25 * ce, rel=1e-6)
