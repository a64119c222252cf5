"""ResNet with basic blocks (He et al. 2016), in torchvision's key layout, with a stem for small inputs.

``resnet_digits`` is the pilot's teacher for the embedded 32 px digits data: a 3x3 stride-1 stem and one basic
block per stage at 24 -> 48 -> 96 channels (32 -> 16 -> 8 px), 174,274 parameters. ``resnet18``/``resnet34`` are
torchvision's (7x7 stride-2 stem and max-pool), whose ImageNet weights load without renaming::

    conv1 / bn1
    layer{i}.{j}.conv1 / bn1 / conv2 / bn2      3x3 convs (stride 2 in the first block of stages 2+)
    layer{i}.0.downsample.0 / downsample.1      1x1 projection + BN where the shape changes
    fc

The contract (``deit.models.contract``), one head: ``forward_features(x)`` -> last feature map;
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

STEMS: tuple[str, ...] = ("imagenet", "small")


@dataclass(frozen=True)
class ResNetConfig:
    """Stage widths and basic blocks per stage; the stem has ``widths[0]`` channels.

    ``stem="imagenet"``: 7x7 stride-2 conv and 3x3 stride-2 max-pool (input / 4), for 224 px images.
    ``stem="small"``: one 3x3 stride-1 conv, no pool, for inputs of about 32 px (digits, CIFAR).
    Stages after the first halve the resolution.
    """

    widths: tuple[int, ...] = (64, 128, 256, 512)
    blocks: tuple[int, ...] = (2, 2, 2, 2)
    stem: str = "imagenet"
    in_chans: int = 3
    num_classes: int = role(1000, "output")
    drop_rate: float = role(0.0, "training")
    drop_path_rate: float = role(0.0, "training")

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        object.__setattr__(self, "blocks", tuple(int(b) for b in self.blocks))
        problems = []
        if not self.widths or len(self.widths) != len(self.blocks):
            problems.append(f"widths {self.widths} and blocks {self.blocks} must be non-empty and of the same length")
        if any(v < 1 for v in (*self.widths, *self.blocks)):
            problems.append("widths and blocks must be positive")
        if self.stem not in STEMS:
            problems.append(f"stem {self.stem!r} is not one of {STEMS}")
        if self.in_chans < 1 or self.num_classes < 0:
            problems.append("in_chans must be positive and num_classes non-negative")
        if problems:
            raise ValueError("invalid ResNetConfig: " + "; ".join(problems))

    def to_dict(self) -> dict:
        return asdict(self)


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, drop_path: float) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(self.drop_path(y) + shortcut)


class ResNet(Classifier):
    """Basic-block ResNet classifier. See the module docstring for the key layout and the forward contract."""

    classifier_prefixes = ("fc.",)

    def __init__(self, cfg: ResNetConfig, preprocessing: Preprocessing | None = None) -> None:
        super().__init__(cfg, preprocessing or Preprocessing())
        stem_width = cfg.widths[0]
        if cfg.stem == "imagenet":
            self.conv1 = nn.Conv2d(cfg.in_chans, stem_width, 7, 2, padding=3, bias=False)
            self.maxpool = nn.MaxPool2d(3, 2, padding=1)
        else:
            self.conv1 = nn.Conv2d(cfg.in_chans, stem_width, 3, 1, padding=1, bias=False)
            self.maxpool = nn.Identity()
        self.bn1 = nn.BatchNorm2d(stem_width)
        self.relu = nn.ReLU(inplace=True)
        total = sum(cfg.blocks)
        rates = [cfg.drop_path_rate * i / max(total - 1, 1) for i in range(total)]  # linear over all blocks
        cin, k = stem_width, 0
        self.stage_names: list[str] = []
        for i, (width, depth) in enumerate(zip(cfg.widths, cfg.blocks, strict=True), start=1):
            blocks = []
            for j in range(depth):
                blocks.append(BasicBlock(cin, width, 2 if (i > 1 and j == 0) else 1, rates[k]))
                cin, k = width, k + 1
            self.add_module(f"layer{i}", nn.Sequential(*blocks))
            self.stage_names.append(f"layer{i}")
        self.num_features = cin
        self.head_drop = nn.Dropout(cfg.drop_rate)
        self.fc = nn.Linear(cin, cfg.num_classes) if cfg.num_classes else nn.Identity()
        self.init_weights()

    def init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                _init_linear(m)
            elif isinstance(m, BasicBlock):
                # Zero-init the last BN of each residual branch: every block starts as (projected) identity.
                nn.init.zeros_(m.bn2.weight)

    def reset_classifier(self, num_classes: int) -> None:
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()
        if num_classes:
            _init_linear(self.fc)
        self.config = replace(self.config, num_classes=num_classes)
        self.class_names = None

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for name in self.stage_names:
            x = getattr(self, name)(x)
        return x

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        if features.ndim == 4:
            features = features.mean((2, 3))
        return self.fc(self.head_drop(features))


def _init_linear(m: nn.Linear) -> None:
    nn.init.normal_(m.weight, 0.0, 0.01)
    nn.init.zeros_(m.bias)


def infer_config(state_dict: dict) -> ResNetConfig | None:
    """The ResNetConfig of a torchvision-layout state dict, or None if the keys are not a ResNet's."""
    if "conv1.weight" not in state_dict or "layer1.0.conv1.weight" not in state_dict:
        return None
    if "layer1.0.conv3.weight" in state_dict:
        raise ValueError("this state dict is a bottleneck ResNet (layer1.0.conv3 exists, e.g. ResNet-50); "
                         "deit's ResNet has basic blocks only (resnet18/34-like): use a RegNet teacher instead")
    stem = state_dict["conv1.weight"]
    kernels = {7: "imagenet", 3: "small"}
    if stem.shape[-1] not in kernels:
        raise ValueError(f"ResNet stem conv1 has a {stem.shape[-1]}x{stem.shape[-1]} kernel; "
                         "known stems: 7x7 (imagenet), 3x3 (small)")
    widths, blocks = [], []
    i = 1
    while f"layer{i}.0.conv1.weight" in state_dict:
        widths.append(state_dict[f"layer{i}.0.conv1.weight"].shape[0])
        j = 0
        while f"layer{i}.{j}.conv1.weight" in state_dict:
            j += 1
        blocks.append(j)
        i += 1
    head = state_dict.get("fc.weight")
    return ResNetConfig(
        widths=tuple(widths), blocks=tuple(blocks), stem=kernels[stem.shape[-1]], in_chans=stem.shape[1],
        num_classes=0 if head is None else head.shape[0],
    )


__all__ = ["BasicBlock", "ResNet", "ResNetConfig", "infer_config"]
