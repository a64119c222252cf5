import pytest
import torch
from torch import nn

from deit.models import VisionTransformer, ViTConfig, create_model, resample_pos_embed

TINY = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=5)


def tiny(distilled: bool = True, **kw) -> VisionTransformer:
    return VisionTransformer(ViTConfig(**{**TINY, "distilled": distilled, **kw}))


def test_forward_returns_one_tensor_in_train_and_eval():
    model = tiny()
    x = torch.randn(3, 3, 32, 32)
    model.train()
    out_train = model(x)
    model.eval()
    out_eval = model(x)
    assert isinstance(out_train, torch.Tensor) and isinstance(out_eval, torch.Tensor)
    assert out_train.shape == out_eval.shape == (3, 5)


def test_distilled_forward_averages_the_two_heads_and_head_modes_pick_one():
    model = tiny().eval()
    x = torch.randn(2, 3, 32, 32)
    cls_logits, dist_logits = model.forward_heads(x)
    assert not torch.allclose(cls_logits, dist_logits)
    torch.testing.assert_close(model(x), (cls_logits + dist_logits) / 2)
    model.set_head_mode("cls")
    torch.testing.assert_close(model(x), cls_logits)
    model.set_head_mode("dist")
    torch.testing.assert_close(model(x), dist_logits)


def test_token_layout_cls_dist_then_patches():
    model = tiny().eval()
    assert model.pos_embed.shape == (1, 2 + 16, 32)
    tokens = model.embed(torch.zeros(1, 3, 32, 32))
    # Zero image: patch tokens equal the conv bias; the prefix carries the learned tokens.
    torch.testing.assert_close(tokens[0, 0], (model.cls_token + model.pos_embed[:, 0])[0, 0])
    torch.testing.assert_close(tokens[0, 1], (model.dist_token + model.pos_embed[:, 1])[0, 0])


def test_non_distilled_has_no_dist_parts_and_forward_heads_explains():
    model = tiny(distilled=False)
    assert model.dist_token is None and model.head_dist is None
    assert model.pos_embed.shape[1] == 1 + 16
    with pytest.raises(ValueError, match="distilled"):
        model.forward_heads(torch.randn(1, 3, 32, 32))
    with pytest.raises(ValueError, match="distilled"):
        ViTConfig(**TINY, head_mode="cls")


def test_other_resolution_needs_dynamic_img_size_and_then_matches_resampled_pos_embed():
    model = tiny().eval()
    x = torch.randn(1, 3, 48, 48)
    with pytest.raises(ValueError, match="dynamic_img_size"):
        model(x)
    dyn = tiny(dynamic_img_size=True).eval()
    dyn.load_state_dict(model.state_dict())
    resized = tiny().eval()
    resized.load_state_dict(model.state_dict())
    resized.set_img_size(48)
    assert resized.pos_embed.shape == (1, 2 + 36, 32)
    torch.testing.assert_close(dyn(x), resized(x))


def test_resample_pos_embed_keeps_prefix_and_is_bicubic_on_grid():
    pos = torch.randn(1, 2 + 4 * 4, 8)
    out = resample_pos_embed(pos, (6, 6), num_prefix_tokens=2)
    assert out.shape == (1, 2 + 36, 8)
    torch.testing.assert_close(out[:, :2], pos[:, :2])
    grid = pos[:, 2:].reshape(1, 4, 4, 8).permute(0, 3, 1, 2)
    ref = nn.functional.interpolate(grid, size=(6, 6), mode="bicubic", align_corners=False)
    torch.testing.assert_close(out[:, 2:], ref.permute(0, 2, 3, 1).reshape(1, 36, 8))
    # Same grid: unchanged.
    assert resample_pos_embed(pos, (4, 4), 2) is pos
    with pytest.raises(ValueError, match="square"):
        resample_pos_embed(pos, (6, 6), num_prefix_tokens=1)


def test_stochastic_depth_only_in_training_and_linear_over_blocks():
    model = tiny(drop_path_rate=0.5, depth=3)
    rates = [b.drop_path1.drop_prob for b in model.blocks]
    assert rates == pytest.approx([0.0, 0.25, 0.5])
    x = torch.randn(8, 3, 32, 32)
    model.eval()
    torch.testing.assert_close(model(x), model(x))
    model.train()
    torch.manual_seed(1)
    a = model(x)
    torch.manual_seed(2)
    b = model(x)
    assert not torch.allclose(a, b)


def test_init_and_layer_norm_eps():
    model = tiny()
    assert model.norm.eps == 1e-6 and model.blocks[0].norm1.eps == 1e-6
    assert model.head.bias.abs().sum() == 0
    big = VisionTransformer(ViTConfig(img_size=32, patch_size=8, embed_dim=256, depth=1, num_heads=4))
    std = big.blocks[0].mlp.fc1.weight.std().item()
    assert 0.019 < std < 0.021  # trunc-normal(0.02); PyTorch default init would give ~0.036
    assert big.blocks[0].mlp.fc1.weight.abs().max() <= 2.0


def test_attention_probs_match_sdpa_output():
    model = tiny().eval()
    attn = model.blocks[0].attn
    x = torch.randn(2, 18, 32)
    probs = attn.attention_probs(x)
    torch.testing.assert_close(probs.sum(-1), torch.ones(2, 2, 18))
    _, _, v = attn._qkv(x)
    manual = attn.proj((probs @ v).transpose(1, 2).reshape(2, 18, 32))
    torch.testing.assert_close(attn(x), manual, atol=1e-5, rtol=1e-5)


def test_reset_classifier_reinitialises_both_heads():
    model = tiny()
    with torch.no_grad():
        model.head.weight.fill_(1.0)
        model.head_dist.weight.fill_(1.0)
    model.class_names = [str(i) for i in range(5)]
    model.reset_classifier(7)
    assert model.head.out_features == model.head_dist.out_features == 7 == model.num_classes
    assert model.head_dist.weight.abs().max() < 1.0 and model.class_names is None


def test_invalid_config_errors_are_clear():
    with pytest.raises(ValueError, match="multiple of patch_size"):
        ViTConfig(img_size=30, patch_size=8)
    with pytest.raises(ValueError, match="divisible by num_heads"):
        ViTConfig(embed_dim=30, num_heads=4)


def test_create_model_by_name_alias_and_overrides():
    m = create_model("deit-tiny-distilled", num_classes=10, img_size=32, depth=1, patch_size=16)
    assert m.config.distilled and m.config.embed_dim == 192 and m.num_classes == 10
    assert m.preprocessing.input_size == 32
    assert m(torch.randn(1, 3, 32, 32)).shape == (1, 10)
    with pytest.raises(TypeError, match="did you mean 'depth'"):
        create_model("deit_tiny_patch16_224", deptj=2)
    with pytest.raises(ValueError, match="did you mean"):
        create_model("deit_tiny_patch16_22")
