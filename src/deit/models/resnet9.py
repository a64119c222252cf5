"""ResNet-9, the fast CIFAR network (Myrtle.ai's DAWNBench entry, the ancestor of airbench): built for 32 px
inputs, with a 3x3 stem and no stem pooling, and few, wide layers that keep a CPU busy with large convolutions.

    prep                     conv 3x3 (w0) -> BN -> ReLU                       32 x 32
    layer1                   conv 3x3 (w1) -> BN -> ReLU -> max-pool 2 (+ residual: 2 x conv-BN-ReLU)   16 x 16
    layer2                   conv 3x3 (w2) -> BN -> ReLU -> max-pool 2 (+ residual if set)            8 x 8
    layer3                   conv 3x3 (w3) -> BN -> ReLU -> max-pool 2 (+ residual: 2 x conv-BN-ReLU)  4 x 4
    head                     global max-pool -> fc (no bias) -> x head_scale

The default widths (64, 128, 256, 512) are the original's (6,573,120 parameters with 10 classes); ``resnet9_cifar``
halves them for a 2-core CPU budget. ``head_scale`` (0.125 in the original) keeps the initial logits small.

The contract (``deit.models.contract``), one head: ``forward_features(x)`` -> the last feature map;
``forward_head(features)`` -> logits; ``forward(x)`` -> logits, always one tensor.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import torch
from torch import nn

from deit.models.contract import Classifier
from deit.models.fields import role
from deit.models.layers import DropPath
from deit.models.preprocessing import Preprocessing

CIFAR10_MEAN: tuple[float, float, float] = (0.4914, 0.4822, 0.4465)
CIFAR10_STD: tuple[float, float, float] = (0.2470, 0.2435, 0.2616)


@dataclass(frozen=True)
class ResNet9Config:
    widths: tuple[int, int, int, int] = (64, 128, 256, 512)  # prep, layer1, layer2, layer3
    residual: tuple[bool, bool, bool] = (True, False, True)  # a residual pair after layer1, layer2, layer3
    in_chans: int = 3
    num_classes: int = role(10, "output")
    head_scale: float = 0.125
    drop_rate: float = role(0.0, "training")
    drop_path_rate: float = role(0.0, "training")

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        object.__setattr__(self, "residual", tuple(bool(r) for r in self.residual))
        problems = []
        if len(self.widths) != 4 or any(w < 1 for w in self.widths):
            problems.append(f"widths must be 4 positive numbers (prep, layer1..3), got {self.widths}")
        if len(self.residual) != 3:
            problems.append(f"residual must be 3 booleans (after layer1..3), got {self.residual}")
        if self.in_chans < 1 or self.num_classes < 0 or self.head_scale <= 0:
            problems.append("in_chans must be positive, num_classes non-negative and head_scale positive")
        if problems:
            raise ValueError("invalid ResNet9Config: " + "; ".join(problems))

    def to_dict(self) -> dict:
        return asdict(self)


class ConvBN(nn.Sequential):
    """conv 3x3 (no bias) -> BN -> ReLU; keys ``conv``, ``bn``."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)


class Residual(nn.Module):
    """x + res2(res1(x)), with stochastic depth on the branch."""

    def __init__(self, width: int, drop_path: float) -> None:
        super().__init__()
        self.res1 = ConvBN(width, width)
        self.res2 = ConvBN(width, width)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop_path(self.res2(self.res1(x)))


class Stage(nn.Module):
    """conv-BN-ReLU, max-pool 2, and an optional residual pair; keys ``conv``, ``res``."""

    def __init__(self, cin: int, cout: int, residual: bool, drop_path: float) -> None:
        super().__init__()
        self.conv = ConvBN(cin, cout)
        self.pool = nn.MaxPool2d(2)
        self.res = Residual(cout, drop_path) if residual else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res(self.pool(self.conv(x)))


class ResNet9(Classifier):
    """ResNet-9 classifier. See the module docstring for the layout and the forward contract."""

    classifier_prefixes = ("fc.",)

    def __init__(self, cfg: ResNet9Config, preprocessing: Preprocessing | None = None) -> None:
        super().__init__(cfg, preprocessing or cifar_preprocessing())
        w = cfg.widths
        rates = [cfg.drop_path_rate * i / 2 for i in range(3)]  # linear over the three stages
        self.prep = ConvBN(cfg.in_chans, w[0])
        self.layer1 = Stage(w[0], w[1], cfg.residual[0], rates[0])
        self.layer2 = Stage(w[1], w[2], cfg.residual[1], rates[1])
        self.layer3 = Stage(w[2], w[3], cfg.residual[2], rates[2])
        self.head_drop = nn.Dropout(cfg.drop_rate)
        self.fc = nn.Linear(w[3], cfg.num_classes, bias=False) if cfg.num_classes else nn.Identity()
        self.init_weights()

    def init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        if isinstance(self.fc, nn.Linear):
            nn.init.normal_(self.fc.weight, 0.0, 0.01 / self.config.head_scale)

    def reset_classifier(self, num_classes: int) -> None:
        self.fc = nn.Linear(self.config.widths[3], num_classes, bias=False) if num_classes else nn.Identity()
        if num_classes:
            nn.init.normal_(self.fc.weight, 0.0, 0.01 / self.config.head_scale)
        self.config = replace(self.config, num_classes=num_classes)
        self.class_names = None

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer3(self.layer2(self.layer1(self.prep(x))))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        if features.ndim == 4:
            features = features.amax(dim=(2, 3))
        return self.fc(self.head_drop(features)) * self.config.head_scale


def cifar_preprocessing(size: int = 32) -> Preprocessing:
    """CIFAR's own statistics, the whole 32 px image (no crop)."""
    return Preprocessing(input_size=size, mean=CIFAR10_MEAN, std=CIFAR10_STD, interpolation="bilinear", crop_pct=1.0)


def infer_config(state_dict: dict) -> ResNet9Config | None:
    """The ResNet9Config of a state dict, or None if the keys are not a ResNet-9's."""
    if "prep.conv.weight" not in state_dict or "layer1.conv.conv.weight" not in state_dict:
        return None
    widths = (state_dict["prep.conv.weight"].shape[0],
              *(state_dict[f"layer{i}.conv.conv.weight"].shape[0] for i in (1, 2, 3)))
    residual = tuple(f"layer{i}.res.res1.conv.weight" in state_dict for i in (1, 2, 3))
    head = state_dict.get("fc.weight")
    return ResNet9Config(widths=widths, residual=residual, in_chans=state_dict["prep.conv.weight"].shape[1],
                         num_classes=0 if head is None else head.shape[0])


__all__ = ["CIFAR10_MEAN", "CIFAR10_STD", "ResNet9", "ResNet9Config", "cifar_preprocessing", "infer_config"]
