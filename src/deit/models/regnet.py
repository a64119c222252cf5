"""RegNet-X/Y (Radosavovic et al. 2020, "Designing Network Design Spaces"): the convnet teachers of DeiT.

The paper's teacher is RegNetY-16GF (``regnety_160``). Parameter names follow the timm layout, so the official
DeiT teacher file ``regnety_160-a5fe301d.pth`` (and timm's RegNet weights) load with plain ``load_state_dict``::

    stem.conv / stem.bn
    s{i}.b{j}.conv1.{conv,bn}   1x1, input -> bottleneck width
    s{i}.b{j}.conv2.{conv,bn}   3x3 grouped (stride 2 in the first block of a stage)
    s{i}.b{j}.se.{fc1,fc2}      squeeze-excitation (RegNetY only), 1x1 convs with bias
    s{i}.b{j}.conv3.{conv,bn}   1x1, bottleneck -> stage width, no activation before the residual sum
    s{i}.b{j}.downsample.{conv,bn}  1x1 projection shortcut where the shape changes
    head.fc

Widths and depths come from the RegNet generator: block ``j`` of ``depth`` gets the continuous width
``u_j = w0 + wa * j``, snapped to ``w0 * wm ** round(log(u_j / w0) / log(wm))`` and quantised to a multiple of 8;
runs of equal widths are the stages. Each stage's bottleneck width is then made a multiple of its group width.
RegNetY adds squeeze-excitation whose reduced width is ``round(se_ratio * block input width)``.

The contract (``deit.models.contract``), one head: ``forward_features(x)`` -> last feature map
(B, C, H/32, W/32); ``forward_head(features)`` -> logits; ``forward(x)`` -> logits, always one tensor.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import asdict, dataclass, replace
from itertools import groupby

import torch
from torch import nn

from deit.models.contract import Classifier
from deit.models.fields import role
from deit.models.layers import DropPath
from deit.models.preprocessing import Preprocessing

WIDTH_QUANTUM = 8


@dataclass(frozen=True)
class RegStageSpec:
    """One resolved stage: output width, number of blocks, group width of the 3x3 conv, bottleneck width."""

    width: int
    depth: int
    group_width: int
    bottleneck: int


@dataclass(frozen=True)
class RegNetConfig:
    """A RegNet: by the generator parameters (the paper's), or by explicit ``stage_widths``/``stage_depths``.

    The defaults are RegNetY-16GF, the DeiT teacher. ``se_ratio=0`` gives a RegNetX.
    """

    depth: int = 18
    w0: int = 200
    wa: float = 106.23
    wm: float = 2.48
    group_size: int = 112
    se_ratio: float = 0.25
    bottle_ratio: float = 1.0
    stem_width: int = 32
    # An explicit stage layout replaces the (depth, w0, wa, wm) generator when given (both or neither).
    stage_widths: tuple[int, ...] | None = None
    stage_depths: tuple[int, ...] | None = None
    in_chans: int = 3
    num_classes: int = role(1000, "output")
    drop_rate: float = role(0.0, "training")
    drop_path_rate: float = role(0.0, "training")

    def __post_init__(self) -> None:
        # Configs come back from JSON with lists: keep tuples so equal configs compare equal.
        for name in ("stage_widths", "stage_depths"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(int(v) for v in value))
        problems = []
        if (self.stage_widths is None) != (self.stage_depths is None):
            problems.append("stage_widths and stage_depths go together: give both or neither")
        elif self.stage_widths is not None:
            if len(self.stage_widths) != len(self.stage_depths) or not self.stage_widths:
                problems.append(f"stage_widths {self.stage_widths} and stage_depths {self.stage_depths} "
                                "must be non-empty and of the same length")
            if any(v < 1 for v in (*self.stage_widths, *self.stage_depths)):
                problems.append("stage widths and depths must be positive")
        else:
            if self.depth < 1:
                problems.append(f"depth must be positive, got {self.depth}")
            if not (self.wa >= 0 and self.w0 > 0 and self.wm > 1 and self.w0 % WIDTH_QUANTUM == 0):
                problems.append(f"the generator needs wa >= 0, wm > 1 and w0 a positive multiple of "
                                f"{WIDTH_QUANTUM}; got w0={self.w0}, wa={self.wa}, wm={self.wm}")
        if self.group_size < 1 or self.stem_width < 1 or self.in_chans < 1 or self.num_classes < 0:
            problems.append("group_size, stem_width and in_chans must be positive, num_classes non-negative")
        if self.se_ratio < 0 or self.bottle_ratio <= 0:
            problems.append(f"se_ratio must be >= 0 and bottle_ratio > 0, got {self.se_ratio}, {self.bottle_ratio}")
        if problems:
            raise ValueError("invalid RegNetConfig: " + "; ".join(problems))

    def stages(self) -> tuple[RegStageSpec, ...]:
        """The resolved stages, after the group-width compatibility adjustment."""
        if self.stage_widths is not None:
            raw = list(zip(self.stage_widths, self.stage_depths, strict=True))
        else:
            raw = generate_stage_widths(self.depth, self.w0, self.wa, self.wm)
        specs = []
        for width, depth in raw:
            bottleneck = int(width * self.bottle_ratio)
            group = min(self.group_size, bottleneck)
            bottleneck = int(round(bottleneck / group) * group)
            width = int(bottleneck / self.bottle_ratio)
            specs.append(RegStageSpec(width, depth, group, int(round(width * self.bottle_ratio))))
        return tuple(specs)

    def to_dict(self) -> dict:
        return asdict(self)


def generate_stage_widths(depth: int, w0: int, wa: float, wm: float, q: int = WIDTH_QUANTUM) -> list[tuple[int, int]]:
    """(width, number of blocks) per stage from the RegNet generator (paper eqs. 2-4)."""
    widths = []
    for j in range(depth):
        exponent = round(math.log((w0 + wa * j) / w0) / math.log(wm))
        widths.append(int(round(w0 * wm**exponent / q) * q))
    # Widths never decrease with j, so runs of equal widths are the stages.
    return [(w, len(list(run))) for w, run in groupby(widths)]


class ConvNormAct(nn.Module):
    """Conv (no bias) -> BatchNorm -> ReLU (or no activation); keys ``conv`` and ``bn`` as in timm."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, act: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding=kernel // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.act = nn.ReLU(inplace=True) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, reduced: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, reduced, 1)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(reduced, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * self.fc2(self.act(self.fc1(s))).sigmoid()


class Bottleneck(nn.Module):
    """RegNet's X/Y block: 1x1 -> 3x3 grouped -> (SE) -> 1x1, plus the (projected) shortcut, then ReLU."""

    def __init__(self, cin: int, stage: RegStageSpec, stride: int, se_ratio: float, drop_path: float) -> None:
        super().__init__()
        bot = stage.bottleneck
        self.conv1 = ConvNormAct(cin, bot, 1)
        self.conv2 = ConvNormAct(bot, bot, 3, stride=stride, groups=bot // stage.group_width)
        # RegNetY: the squeeze width is a fraction of the block's *input* width, not of the bottleneck.
        self.se = SqueezeExcite(bot, int(round(cin * se_ratio))) if se_ratio else nn.Identity()
        self.conv3 = ConvNormAct(bot, stage.width, 1, act=False)
        if cin != stage.width or stride != 1:
            self.downsample = ConvNormAct(cin, stage.width, 1, stride=stride, act=False)
        else:
            self.downsample = nn.Identity()
        self.drop_path = DropPath(drop_path)
        self.act3 = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv3(self.se(self.conv2(self.conv1(x))))
        return self.act3(self.drop_path(y) + self.downsample(x))


class ClassifierHead(nn.Module):
    """Global average pool -> dropout -> ``fc`` (key ``head.fc`` as in timm)."""

    def __init__(self, features: int, num_classes: int, drop_rate: float) -> None:
        super().__init__()
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(features, num_classes) if num_classes else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 4:
            x = x.mean((2, 3))
        return self.fc(self.drop(x))


class RegNet(Classifier):
    """RegNet-X/Y classifier. See the module docstring for the key layout and the forward contract."""

    classifier_prefixes = ("head.fc.",)

    def __init__(self, cfg: RegNetConfig, preprocessing: Preprocessing | None = None) -> None:
        super().__init__(cfg, preprocessing or Preprocessing())
        self.stem = ConvNormAct(cfg.in_chans, cfg.stem_width, 3, stride=2)
        specs = cfg.stages()
        total = sum(s.depth for s in specs)
        rates = [cfg.drop_path_rate * i / max(total - 1, 1) for i in range(total)]  # linear over all blocks
        cin, k = cfg.stem_width, 0
        self.stage_names: list[str] = []
        for i, spec in enumerate(specs, start=1):
            blocks = OrderedDict()
            for j in range(1, spec.depth + 1):
                blocks[f"b{j}"] = Bottleneck(cin, spec, 2 if j == 1 else 1, cfg.se_ratio, rates[k])
                cin, k = spec.width, k + 1
            self.add_module(f"s{i}", nn.Sequential(blocks))
            self.stage_names.append(f"s{i}")
        self.num_features = cin
        self.head = ClassifierHead(cin, cfg.num_classes, cfg.drop_rate)
        self.init_weights()

    def init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                _init_linear(m)
            elif isinstance(m, Bottleneck):
                # Zero-init the last BN of each residual branch: every block starts as (projected) identity.
                nn.init.zeros_(m.conv3.bn.weight)

    def reset_classifier(self, num_classes: int) -> None:
        self.head.fc = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()
        if num_classes:
            _init_linear(self.head.fc)
        self.config = replace(self.config, num_classes=num_classes)
        self.class_names = None

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for name in self.stage_names:
            x = getattr(self, name)(x)
        return x

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)


def _init_linear(m: nn.Linear) -> None:
    nn.init.normal_(m.weight, 0.0, 0.01)
    nn.init.zeros_(m.bias)


def infer_config(state_dict: dict) -> RegNetConfig | None:
    """The RegNetConfig of a timm-layout state dict, or None if the keys are not a RegNet's.

    Stage widths, depths, group, bottleneck and squeeze widths are read from the weight shapes. When the result
    has the structure of a registered model, that model's config (with this file's classes and input channels)
    is returned, so ``regnety_160-a5fe301d.pth`` comes back as ``regnety_160``'s config.
    """
    if "stem.conv.weight" not in state_dict or "s1.b1.conv1.conv.weight" not in state_dict:
        return None
    stem = state_dict["stem.conv.weight"]
    widths, depths, groups, bottlenecks, squeezes = [], [], [], [], []
    cin = stem.shape[0]
    i = 1
    while f"s{i}.b1.conv1.conv.weight" in state_dict:
        j = 1
        while f"s{i}.b{j}.conv1.conv.weight" in state_dict:
            p = f"s{i}.b{j}."
            width = state_dict[p + "conv3.conv.weight"].shape[0]
            if f"{p}se.fc1.weight" in state_dict:
                squeezes.append((cin, state_dict[p + "se.fc1.weight"].shape[0]))
            if j == 1:
                widths.append(width)
                bottlenecks.append(state_dict[p + "conv1.conv.weight"].shape[0])
                groups.append(state_dict[p + "conv2.conv.weight"].shape[1])
            cin, j = width, j + 1
        depths.append(j - 1)
        i += 1
    head = state_dict.get("head.fc.weight")
    se_ratio = _ratio(squeezes) if squeezes else 0.0
    bottle_ratio = _ratio(list(zip(widths, bottlenecks, strict=True)))
    found = tuple(RegStageSpec(w, d, g, b) for w, d, g, b in zip(widths, depths, groups, bottlenecks, strict=True))
    cfg = None
    if se_ratio is not None and bottle_ratio is not None and len(squeezes) in (0, sum(depths)):
        cfg = RegNetConfig(
            stage_widths=tuple(widths), stage_depths=tuple(depths), group_size=max(groups), se_ratio=se_ratio,
            bottle_ratio=bottle_ratio, stem_width=stem.shape[0], in_chans=stem.shape[1],
            num_classes=0 if head is None else head.shape[0],
        )
    if cfg is None or cfg.stages() != found:
        raise ValueError(
            "this state dict has RegNet keys (stem.conv, s1.b1.conv1, ...) but a structure RegNetConfig cannot "
            f"express: stages (width, depth, group, bottleneck) {found}, squeeze (in, out) widths {squeezes}"
        )
    return _as_named(cfg)


def _ratio(pairs: list[tuple[int, int]]) -> float | None:
    """The ratio r with round(a * r) == b for every (a, b), preferring short decimals (0.25 over 1026/4103)."""
    a, b = max(pairs)
    for r in (round(b / a, 2), round(b / a, 3), round(b / a, 4), b / a):
        if all(int(round(x * r)) == y for x, y in pairs):
            return r
    return None


def _as_named(cfg: RegNetConfig) -> RegNetConfig:
    """The config of the registered RegNet with the same structure as ``cfg``, or ``cfg`` itself."""
    from deit.models.registry import get_entry, list_models

    for name in list_models("regnet"):
        named = replace(get_entry(name).config, num_classes=cfg.num_classes, in_chans=cfg.in_chans)
        if (named.stages(), named.stem_width, named.se_ratio) == (cfg.stages(), cfg.stem_width, cfg.se_ratio):
            return named
    return cfg


__all__ = ["RegNet", "RegNetConfig", "RegStageSpec", "generate_stage_widths", "infer_config"]
