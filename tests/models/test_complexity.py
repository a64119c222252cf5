import pytest
import torch

from deit.models import build_architecture, list_models, measure

# ../shared/reference/recipe.md: exact parameter counts, GMACs linear+conv(+GELU) and incl. attention.
EXPECTED = {
    "deit_tiny_patch16_224": (5_717_416, 1.08, 1.26),
    "deit_tiny_distilled_patch16_224": (5_910_800, 1.08, 1.27),
    "deit_small_patch16_224": (22_050_664, 4.24, 4.61),
    "deit_small_distilled_patch16_224": (22_436_432, 4.27, 4.63),
    "deit_base_patch16_224": (86_567_656, 16.86, 17.58),
    "deit_base_distilled_patch16_224": (87_338_192, 16.94, 17.68),
    "deit_base_patch16_384": (86_859_496, 49.37, 55.54),
    "deit_base_distilled_patch16_384": (87_630_032, 49.45, 55.65),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_exact_params_and_gmacs_of_the_eight_variants(name):
    with torch.device("meta"):
        model = build_architecture(name)
    c = measure(model, model.config.img_size)
    params, linear, total = EXPECTED[name]
    assert c.params == params
    assert round(c.gmacs_linear, 2) == linear
    assert round(c.gmacs_total, 2) == total


def test_all_eight_deit_variants_and_aliases_are_registered():
    names = set(list_models("vit"))
    assert set(EXPECTED) <= names
    for alias in ["deit-tiny", "deit-small-distilled", "deit-base-384", "deit-base-distilled-384"]:
        with torch.device("meta"):
            build_architecture(alias)


def test_macs_count_matches_hand_formula_for_a_small_vit():
    # 2 blocks, D=32, N=1+16, patch 8 on 32 px, 5 classes.
    with torch.device("meta"):
        model = build_architecture("deit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=32, depth=2,
                             num_heads=2, num_classes=5)
    n, d = 17, 32
    patch = 16 * d * 3 * 8 * 8
    block_linear = n * d * 3 * d + n * d * d + 2 * n * d * 4 * d
    linear = patch + 2 * (block_linear + n * 4 * d) + d * 5
    total = patch + 2 * block_linear + d * 5 + 2 * (2 * n * n * d) + 5 * n * d * 5
    c = measure(model, 32)
    assert c.gmacs_linear * 1e9 == pytest.approx(linear)
    assert c.gmacs_total * 1e9 == pytest.approx(total)
