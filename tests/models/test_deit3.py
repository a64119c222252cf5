"""DeiT III's named models: timm's names and exact sizes, both FLOPs conventions against the published figures,
aliases, release tags, and the logits of an independent forward written from the official models_v2.py."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from deit import load_checkpoint
from deit.models import build_architecture, get_entry, list_models, measure
from deit.models.vit_config import ViTConfig

# name: (parameters of timm 1.0.31's model, timm's published infer_gmacs (results/benchmark-infer-amp-nchw-pt240-*,
# attention and LayerNorm counted: our gmacs_total), mmpretrain's metafile FLOPs (configs/deit3/metafile.yml)).
PUBLISHED = {
    "deit3_small_patch16_224": (22_059_496, 4.61, 4_607_954_304),
    "deit3_small_patch16_384": (22_205_416, 15.52, 15_517_663_104),
    "deit3_medium_patch16_224": (38_849_512, 8.00, 8_003_064_320),
    "deit3_base_patch16_224": (86_585_320, 17.58, 17_581_972_224),
    "deit3_base_patch16_384": (86_877_160, 55.54, 55_538_974_464),
    "deit3_large_patch16_224": (304_374_760, 61.60, 61_603_111_936),
    "deit3_large_patch16_384": (304_763_880, 191.21, 191_210_034_176),
    "deit3_huge_patch14_224": (632_126_440, 167.40, 167_400_741_120),
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_exact_parameters_and_both_flops_conventions_of_the_published_models(name):
    with torch.device("meta"):
        model = build_architecture(name)
    c = measure(model, model.config.img_size)
    params, timm_gmacs, mmpretrain_flops = PUBLISHED[name]
    assert c.params == params
    assert round(c.gmacs_total, 2) == timm_gmacs
    # mmpretrain's figure is ours less the classifier's D x 1000 multiply-adds, to the unit.
    assert round(c.gmacs_total * 1e9) - model.config.embed_dim * 1000 == mmpretrain_flops
    # LayerScale and the patch-only position embedding add no multiply-accumulate: DeiT-B's and DeiT III-B's agree.
    if name == "deit3_base_patch16_224":
        with torch.device("meta"):
            deit = build_architecture("deit_base_patch16_224")
        assert measure(deit, 224).gmacs_linear == c.gmacs_linear and measure(deit, 224).gmacs_total == c.gmacs_total


def test_the_architecture_is_the_official_one():
    for name in PUBLISHED:
        cfg = get_entry(name).config
        assert cfg.qkv_bias and cfg.layer_norm_eps == 1e-6 and cfg.init_values == 1e-4
        assert not cfg.prefix_pos_embed and cfg.drop_path_schedule == "uniform"
    huge = get_entry("deit3_huge_patch14_224").config
    assert (huge.embed_dim, huge.depth, huge.num_heads, huge.patch_size) == (1280, 32, 16, 14)  # 80-dim heads


def test_names_aliases_official_names_and_distilled_variants():
    names = set(list_models("vit"))
    assert set(PUBLISHED) <= names
    assert {n.replace("_patch", "_distilled_patch") for n in PUBLISHED} <= names
    for alias, name in [("deit3-small", "deit3_small_patch16_224"), ("deit3-base-384", "deit3_base_patch16_384"),
                        ("deit3-huge", "deit3_huge_patch14_224"), ("deit_large_patch16_LS", "deit3_large_patch16_224"),
                        ("deit3-small-distilled", "deit3_small_distilled_patch16_224"),
                        ("deit3-large-distilled-384", "deit3_large_distilled_patch16_384")]:
        assert get_entry(alias).name == name
    distilled = get_entry("deit3_small_distilled_patch16_224")
    assert distilled.config.distilled and distilled.config.init_values == 1e-4 and distilled.pretrained_url is None


def test_release_tags_pick_the_file_and_its_evaluation_crop():
    default = get_entry("deit3_small_patch16_224")
    assert default.pretrained_url == "https://dl.fbaipublicfiles.com/deit/deit_3_small_224_1k.pth"
    assert default.preprocessing.crop_pct == 0.9 and get_entry("deit3_small_patch16_224.fb_in1k") == default
    in21k = get_entry("deit3_small_patch16_224.fb_in22k_ft_in1k")
    assert in21k.pretrained_url == "https://dl.fbaipublicfiles.com/deit/deit_3_small_224_21k.pth"
    assert in21k.preprocessing.crop_pct == 1.0 and in21k.config == default.config
    assert get_entry("deit3-huge.fb_in22k_ft_in1k").pretrained_url.endswith("/deit_3_huge_224_21k_v1.pth")
    mm = get_entry("deit3_base_patch16_384.mmpretrain_in1k").pretrained_url
    assert mm.endswith("/deit3-base-p16_3rdparty_in1k-384px_20221009-e19e36d4.pth")
    with pytest.raises(ValueError, match="no release tagged 'in21k'; its tags: fb_in1k, fb_in22k_ft_in1k"):
        get_entry("deit3_small_patch16_224.in21k")
    model = build_architecture("deit3_small_patch16_224.fb_in22k_ft_in1k", depth=1)
    assert model.preprocessing.crop_pct == 1.0


# ------------------------------------------------------------------ an independent forward, from models_v2.py
# Written from the structure of the official models_v2.py (Attention, Layer_scale_init_Block, vit_models), with its
# parameter names; nothing of deit's model code. A distillation token (timm's VisionTransformerDistilled with
# no_embed_class) is concatenated after the class token, without a position either.
class _Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.num_heads, self.scale = heads, (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0] * self.scale, qkv[1], qkv[2]
        attn = (q @ k.transpose(-2, -1)).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class _Mlp(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class _LayerScaleBlock(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim, eps=1e-6), _Attention(dim, heads)
        self.norm2, self.mlp = nn.LayerNorm(dim, eps=1e-6), _Mlp(dim)
        self.gamma_1 = nn.Parameter(1e-4 * torch.ones(dim))
        self.gamma_2 = nn.Parameter(1e-4 * torch.ones(dim))

    def forward(self, x):
        x = x + self.gamma_1 * self.attn(self.norm1(x))
        return x + self.gamma_2 * self.mlp(self.norm2(x))


class _PatchEmbed(nn.Module):
    def __init__(self, patch: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=patch, stride=patch)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class OfficialDeiT3(nn.Module):
    def __init__(self, img: int, patch: int, dim: int, depth: int, heads: int, classes: int, distilled: bool):
        super().__init__()
        self.patch_embed = _PatchEmbed(patch, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.dist_token = nn.Parameter(torch.zeros(1, 1, dim)) if distilled else None
        self.pos_embed = nn.Parameter(torch.zeros(1, (img // patch) ** 2, dim))
        self.blocks = nn.ModuleList(_LayerScaleBlock(dim, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, classes)
        self.head_dist = nn.Linear(dim, classes) if distilled else None

    def forward(self, x):
        x = self.patch_embed(x) + self.pos_embed  # positions of the patch tokens only ...
        prefix = [self.cls_token] + ([self.dist_token] if self.dist_token is not None else [])
        x = torch.cat([t.expand(x.shape[0], -1, -1) for t in prefix] + [x], dim=1)  # ... then the prefix tokens
        for blk in self.blocks:
            x = blk(x)
        x = self.norm(x)
        if self.head_dist is None:
            return self.head(x[:, 0])
        return (self.head(x[:, 0]) + self.head_dist(x[:, 1])) / 2


def random_official(distilled: bool = False, img: int = 32, patch: int = 8, dim: int = 128, depth: int = 2,
                    heads: int = 2, classes: int = 5) -> OfficialDeiT3:
    model = OfficialDeiT3(img, patch, dim, depth, heads, classes, distilled)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, p in model.named_parameters():  # every tensor matters: gammas of order 1, not 1e-4
            offset = 1.0 if "norm" in name and name.endswith("weight") else 0.0
            p.copy_(torch.randn(p.shape, generator=g) * (0.5 if "gamma" in name else 0.1) + offset)
    return model.eval()


@pytest.mark.parametrize("distilled", [False, True])
def test_logits_match_the_official_structure_in_its_own_key_names(tmp_path, distilled):
    official = random_official(distilled)
    sd = official.state_dict()
    assert "blocks.0.gamma_1" in sd and sd["pos_embed"].shape == (1, 16, 128)
    torch.save({"model": sd, "epoch": 799}, tmp_path / "official.pth")
    ours = load_checkpoint(tmp_path / "official.pth")  # no architecture given
    assert isinstance(ours.config, ViTConfig) and ours.config.init_values is not None
    assert not ours.config.prefix_pos_embed and ours.config.distilled == distilled
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        torch.testing.assert_close(ours(x), official(x), rtol=0, atol=1e-5)


def test_logits_match_at_a_registered_size():
    # DeiT III-S at 224 px with two of its twelve blocks: the registered widths, heads and grid.
    official = random_official(img=224, patch=16, dim=384, depth=2, heads=6, classes=1000)
    ours = build_architecture("deit3_small_patch16_224", depth=2).eval()
    sd = {k.replace("gamma_1", "ls1.gamma").replace("gamma_2", "ls2.gamma"): v
          for k, v in official.state_dict().items()}
    ours.load_state_dict(sd)
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        torch.testing.assert_close(ours(x), official(x), rtol=0, atol=1e-5)
