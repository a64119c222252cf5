"""Airbench's CIFAR-10 network (Keller Jordan, "94% on CIFAR-10 in 3.29 seconds on a single GPU", 2024): a 2x2
patch-whitening convolution and three conv groups without residuals, built for 32 px inputs.

    whiten                   conv 2x2, no padding (2 x 3 x 2 x 2 = 24 channels, bias) -> GELU              31 x 31
    block1..3                conv 3x3 -> max-pool 2 -> BN -> GELU -> conv 3x3 -> BN -> GELU        15, 7, 3 px
    head                     global max-pool -> fc (no bias) -> x head_scale

``widths`` (64, 256, 256) are airbench94's (1,972,792 parameters with 10 classes), (64, 128, 128) airbench93's.
BatchNorm as airbench has it: eps 1e-12, running statistics with momentum ``bn_momentum`` (airbench's 0.6 keeps 60%
of the old statistic: torch's momentum 0.4), and a fixed scale of 1 (the weight exists, equal to 1, and is not
trained; only the bias is). Every 3x3 conv starts as kaiming-uniform with its first ``in_channels`` filters set
to the identity (a partial Dirac init). The head's global max-pool over the last 3x3 map is airbench's
``MaxPool2d(3)``.

``whiten`` (a training option): the first convolution's weight is not trained but computed from the training
images before step 0 (:func:`whitening_weights`; the trainer calls :meth:`Airbench.init_from_data`): the
eigenvectors of the 2x2 patches' covariance, scaled by 1/sqrt(eigenvalue + eps), and their negatives, so that its
24 outputs are the patches in a decorrelated basis of unit variance. Its bias is still trained. Without
``whiten`` the first convolution is an ordinary trained layer.

The contract (``deit.models.contract``), one head: ``forward_features(x)`` -> the last feature map;
``forward_head(features)`` -> logits; ``forward(x)`` -> logits, always one tensor.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import torch
from torch import nn

from deit.models.contract import Classifier
from deit.models.fields import role
from deit.models.preprocessing import Preprocessing
from deit.models.resnet9 import cifar_preprocessing

WHITEN_EPS = 5e-4  # added to the eigenvalues: the near-zero ones would otherwise blow their filters up
WHITEN_IMAGES = 5000  # training images the whitening covariance is estimated from (airbench's count)


@dataclass(frozen=True)
class AirbenchConfig:
    widths: tuple[int, int, int] = (64, 256, 256)  # block1..3
    whiten_kernel: int = 2  # the first conv's kernel: 2 * in_chans * whiten_kernel**2 output channels
    in_chans: int = 3
    num_classes: int = role(10, "output")
    head_scale: float = 1 / 9
    bn_momentum: float = role(0.6, "training")  # the fraction of the old running statistic kept (airbench's)
    whiten: bool = role(False, "training")  # the first conv's weight: computed from the data and frozen
    drop_rate: float = role(0.0, "training")
    drop_path_rate: float = role(0.0, "training")  # no residual branches: must stay 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        problems = []
        if len(self.widths) != 3 or any(w < 1 for w in self.widths):
            problems.append(f"widths must be 3 positive numbers (block1..3), got {self.widths}")
        if self.whiten_kernel < 1 or self.in_chans < 1 or self.num_classes < 0 or self.head_scale <= 0:
            problems.append("whiten_kernel and in_chans must be positive, num_classes non-negative, head_scale "
                            "positive")
        if not 0.0 <= self.bn_momentum < 1.0:
            problems.append(f"bn_momentum (the fraction of the old statistic kept) must be in [0, 1), got "
                            f"{self.bn_momentum}")
        if self.drop_path_rate:
            problems.append(f"drop_path_rate {self.drop_path_rate}: the airbench net has no residual branches for "
                            "stochastic depth; set model.drop_path=0")
        if problems:
            raise ValueError("invalid AirbenchConfig: " + "; ".join(problems))

    @property
    def whiten_width(self) -> int:
        return 2 * self.in_chans * self.whiten_kernel ** 2

    def to_dict(self) -> dict:
        return asdict(self)


class BatchNorm(nn.BatchNorm2d):
    """Airbench's BatchNorm: eps 1e-12, a scale fixed at 1 (not trained), a trained bias."""

    def __init__(self, width: int, keep: float) -> None:
        super().__init__(width, eps=1e-12, momentum=1.0 - keep)
        self.weight.requires_grad_(False)


def conv3x3(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, padding=1, bias=False)


class ConvGroup(nn.Module):
    """conv -> max-pool 2 -> BN -> GELU -> conv -> BN -> GELU; keys ``conv1``, ``norm1``, ``conv2``, ``norm2``."""

    def __init__(self, cin: int, cout: int, keep: float) -> None:
        super().__init__()
        self.conv1 = conv3x3(cin, cout)
        self.pool = nn.MaxPool2d(2)
        self.norm1 = BatchNorm(cout, keep)
        self.conv2 = conv3x3(cout, cout)
        self.norm2 = BatchNorm(cout, keep)
        self.activ = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.activ(self.norm1(self.pool(self.conv1(x))))
        return self.activ(self.norm2(self.conv2(x)))


class Airbench(Classifier):
    """Airbench's network. See the module docstring for the layout and the forward contract."""

    classifier_prefixes = ("fc.",)

    def __init__(self, cfg: AirbenchConfig, preprocessing: Preprocessing | None = None) -> None:
        super().__init__(cfg, preprocessing or cifar_preprocessing())
        w, keep = cfg.widths, cfg.bn_momentum
        self.whiten = nn.Conv2d(cfg.in_chans, cfg.whiten_width, cfg.whiten_kernel, padding=0, bias=True)
        self.whiten_act = nn.GELU()
        self.block1 = ConvGroup(cfg.whiten_width, w[0], keep)
        self.block2 = ConvGroup(w[0], w[1], keep)
        self.block3 = ConvGroup(w[1], w[2], keep)
        self.head_drop = nn.Dropout(cfg.drop_rate)
        self.fc = nn.Linear(w[2], cfg.num_classes, bias=False) if cfg.num_classes else nn.Identity()
        self.init_weights()
        # A computed whitening is a fixed change of basis: training it would undo the decorrelation.
        self.whiten.weight.requires_grad_(not cfg.whiten)

    @torch.no_grad()
    def init_weights(self) -> None:
        nn.init.zeros_(self.whiten.bias)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                # Identity on the first in_channels filters: each group starts by passing its input through.
                nn.init.dirac_(m.weight[: m.in_channels])

    @property
    def data_init_images(self) -> int:
        """How many training images :meth:`init_from_data` wants before step 0 (0: none)."""
        return WHITEN_IMAGES if self.config.whiten else 0

    @torch.no_grad()
    def init_from_data(self, images: torch.Tensor) -> None:
        """The whitening convolution's weight from normalised training images (N, C, H, W)."""
        weight = whitening_weights(images, self.config.whiten_kernel)
        self.whiten.weight.copy_(weight.to(self.whiten.weight))

    def reset_classifier(self, num_classes: int) -> None:
        self.fc = nn.Linear(self.config.widths[2], num_classes, bias=False) if num_classes else nn.Identity()
        self.config = replace(self.config, num_classes=num_classes)
        self.class_names = None

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.whiten_act(self.whiten(x))
        return self.block3(self.block2(self.block1(x)))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        if features.ndim == 4:
            features = features.amax(dim=(2, 3))
        return self.fc(self.head_drop(features)) * self.config.head_scale


def patch_covariance(images: torch.Tensor, kernel: int) -> torch.Tensor:
    """The (uncentred) second moment of every ``kernel`` x ``kernel`` patch of ``images`` (N, C, H, W), stride 1:
    a (C k k) x (C k k) matrix over the flattened patches (channel-major, then rows, then columns: a conv
    weight's layout)."""
    c = images.shape[1]
    patches = images.float().unfold(2, kernel, 1).unfold(3, kernel, 1)  # N, C, H', W', k, k
    flat = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, c * kernel * kernel).double()
    return (flat.T @ flat / flat.shape[0]).float()


def whitening_weights(images: torch.Tensor, kernel: int, eps: float = WHITEN_EPS) -> torch.Tensor:
    """The whitening conv's weight (2 C k k, C, k, k): the eigenvectors of :func:`patch_covariance` by decreasing
    eigenvalue, each divided by sqrt(eigenvalue + eps), then the same filters negated (a GELU follows: both signs
    of each component pass)."""
    c = images.shape[1]
    eigenvalues, eigenvectors = torch.linalg.eigh(patch_covariance(images, kernel))
    order = eigenvalues.argsort(descending=True)
    scaled = eigenvectors.T[order] / torch.sqrt(eigenvalues[order] + eps)[:, None]
    filters = scaled.reshape(-1, c, kernel, kernel)
    return torch.cat([filters, -filters])


def infer_config(state_dict: dict) -> AirbenchConfig | None:
    """The AirbenchConfig of a state dict, or None if the keys are not an airbench net's."""
    if "whiten.weight" not in state_dict or "block1.conv1.weight" not in state_dict:
        return None
    whiten = state_dict["whiten.weight"]
    widths = tuple(state_dict[f"block{i}.conv1.weight"].shape[0] for i in (1, 2, 3))
    head = state_dict.get("fc.weight")
    return AirbenchConfig(widths=widths, whiten_kernel=whiten.shape[-1], in_chans=whiten.shape[1],
                          num_classes=0 if head is None else head.shape[0])


__all__ = ["WHITEN_EPS", "WHITEN_IMAGES", "Airbench", "AirbenchConfig", "infer_config", "patch_covariance",
           "whitening_weights"]
