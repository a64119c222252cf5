import os
import subprocess
import sys
from dataclasses import replace as dataclass_replace

import pytest
import torch
from torch import nn

from deit.models import VisionTransformer, ViTConfig, build_architecture, resample_pos_embed

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
    m = build_architecture("deit-tiny-distilled", num_classes=10, img_size=32, depth=1, patch_size=16)
    assert m.config.distilled and m.config.embed_dim == 192 and m.num_classes == 10
    assert m.preprocessing.input_size == 32
    assert m(torch.randn(1, 3, 32, 32)).shape == (1, 10)
    with pytest.raises(TypeError, match="did you mean 'depth'"):
        build_architecture("deit_tiny_patch16_224", deptj=2)
    with pytest.raises(ValueError, match="did you mean"):
        build_architecture("deit_tiny_patch16_22")


# ------------------------------------------------------------------------------ DeiT III options (seams issue)
def reference_forward(sd: dict, cfg: ViTConfig, x: torch.Tensor) -> torch.Tensor:
    """The ViT written from its definition and the key layout alone (explicit softmax attention, no deit code):
    LayerScale when ``blocks.{i}.ls1.gamma`` exists; position embedding on every token, or on the patch tokens
    only (``prefix_pos_embed=False``: the prefix tokens get none). Returns the class head's logits."""
    f = nn.functional
    d, heads = cfg.embed_dim, cfg.num_heads
    tokens = f.conv2d(x, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=cfg.patch_size)
    tokens = tokens.flatten(2).transpose(1, 2)
    prefix = [sd["cls_token"], *([sd["dist_token"]] if cfg.distilled else [])]
    prefix = torch.cat([t.expand(x.shape[0], -1, -1) for t in prefix], dim=1)
    if cfg.prefix_pos_embed:
        h = torch.cat([prefix, tokens], dim=1) + sd["pos_embed"]
    else:
        h = torch.cat([prefix, tokens + sd["pos_embed"]], dim=1)
    for i in range(cfg.depth):
        p = f"blocks.{i}."

        def ln(t, name, p=p):
            return f.layer_norm(t, (d,), sd[p + name + ".weight"], sd[p + name + ".bias"], eps=cfg.layer_norm_eps)

        def scale(t, name, p=p):
            return t * sd[p + name + ".gamma"] if p + name + ".gamma" in sd else t

        b, n, _ = h.shape
        qkv = f.linear(ln(h, "norm1"), sd[p + "attn.qkv.weight"], sd.get(p + "attn.qkv.bias"))
        q, k, v = qkv.view(b, n, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
        attn = ((q @ k.transpose(-2, -1)) * (d // heads) ** -0.5).softmax(-1)
        out = (attn @ v).transpose(1, 2).reshape(b, n, d)
        h = h + scale(f.linear(out, sd[p + "attn.proj.weight"], sd[p + "attn.proj.bias"]), "ls1")
        m = f.gelu(f.linear(ln(h, "norm2"), sd[p + "mlp.fc1.weight"], sd[p + "mlp.fc1.bias"]))
        h = h + scale(f.linear(m, sd[p + "mlp.fc2.weight"], sd[p + "mlp.fc2.bias"]), "ls2")
    h = f.layer_norm(h, (d,), sd["norm.weight"], sd["norm.bias"], eps=cfg.layer_norm_eps)
    return f.linear(h[:, 0], sd["head.weight"], sd["head.bias"])


def randomise_gammas(model: VisionTransformer) -> None:
    """Trained-like LayerScale (the init value, 1e-4, would hide the branches from any comparison)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("gamma"):
                p.uniform_(-1.5, 1.5)


@pytest.mark.parametrize("distilled", [False, True])
@pytest.mark.parametrize("init_values", [None, 1e-4])
@pytest.mark.parametrize("prefix_pos_embed", [True, False])
def test_forward_matches_a_hand_written_vit_for_each_option(distilled, init_values, prefix_pos_embed):
    model = tiny(distilled, init_values=init_values, prefix_pos_embed=prefix_pos_embed).eval()
    with torch.no_grad():
        model.pos_embed.normal_()  # large position embeddings: a row added to the wrong token cannot hide
    randomise_gammas(model)
    model.set_head_mode("cls") if distilled else None
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference_forward(model.state_dict(), model.config, x),
                                   atol=1e-5, rtol=1e-5)


def test_layer_scale_keys_init_value_and_absence_by_default():
    model = tiny(init_values=1e-4)
    gammas = {k: v for k, v in model.state_dict().items() if ".ls" in k}
    assert sorted(gammas) == [f"blocks.{i}.ls{j}.gamma" for i in range(2) for j in (1, 2)]
    assert all(v.shape == (32,) and torch.all(v == 1e-4) for v in gammas.values())
    assert all(p.requires_grad for n, p in model.named_parameters() if n.endswith("gamma"))
    plain = tiny()
    assert not any(".ls" in k for k in plain.state_dict()) and plain.blocks[0].ls1 is None
    assert sorted(plain.state_dict()) == sorted(k for k in model.state_dict() if ".ls" not in k)
    with pytest.raises(ValueError, match="init_values"):
        ViTConfig(init_values="small")


def test_layer_scale_does_not_move_the_other_parameters_init():
    # LayerScale draws no random numbers: every other weight is the one DeiT's model gets from the same seed.
    torch.manual_seed(3)
    plain = tiny().state_dict()
    torch.manual_seed(3)
    scaled = tiny(init_values=0.1).state_dict()
    assert all(torch.equal(scaled[k], v) for k, v in plain.items())


@pytest.mark.parametrize("distilled", [False, True])
def test_patch_only_pos_embed_leaves_the_prefix_tokens_without_position(distilled):
    model = tiny(distilled, prefix_pos_embed=False).eval()
    assert model.pos_embed.shape == (1, 16, 32) and model.config.pos_embed_prefix_tokens == 0
    assert model.config.num_tokens == model.num_prefix_tokens + 16  # the sequence still has its prefix
    tokens = model.embed(torch.zeros(1, 3, 32, 32))
    prefix = model.num_prefix_tokens
    assert tokens.shape == (1, prefix + 16, 32)
    torch.testing.assert_close(tokens[0, 0], model.cls_token[0, 0])
    if distilled:
        torch.testing.assert_close(tokens[0, 1], model.dist_token[0, 0])
    # Zero image: the patch tokens are the conv bias plus their own rows of pos_embed.
    torch.testing.assert_close(tokens[0, prefix:], model.patch_embed.proj.bias + model.pos_embed[0])


def test_drop_path_schedules():
    assert [b.drop_path1.drop_prob for b in tiny(drop_path_rate=0.3, depth=4).blocks] == pytest.approx(
        [0.0, 0.1, 0.2, 0.3])
    uniform = tiny(drop_path_rate=0.3, depth=4, drop_path_schedule="uniform")
    assert [(b.drop_path1.drop_prob, b.drop_path2.drop_prob) for b in uniform.blocks] == [(0.3, 0.3)] * 4
    assert tiny(drop_path_rate=0.3, depth=1, drop_path_schedule="uniform").blocks[0].drop_path1.drop_prob == 0.3
    with pytest.raises(ValueError, match=r"drop_path_schedule 'cosine' is not one of \('linear', 'uniform'\)"):
        ViTConfig(drop_path_schedule="cosine")


@pytest.mark.parametrize("prefix_pos_embed", [True, False])
def test_other_resolution_with_each_pos_embed_kind(prefix_pos_embed, tmp_path):
    from deit import create_model as create_with_weights
    from deit.checkpoints import save_checkpoint

    model = tiny(prefix_pos_embed=prefix_pos_embed).eval()
    rows = model.config.pos_embed_prefix_tokens
    x = torch.randn(1, 3, 48, 48)
    dyn = tiny(prefix_pos_embed=prefix_pos_embed, dynamic_img_size=True).eval()
    dyn.load_state_dict(model.state_dict())
    resized = tiny(prefix_pos_embed=prefix_pos_embed).eval()
    resized.load_state_dict(model.state_dict())
    resized.set_img_size(48)
    assert resized.pos_embed.shape == (1, rows + 36, 32)
    expected = resample_pos_embed(model.pos_embed.data, (6, 6), num_prefix_tokens=rows)
    torch.testing.assert_close(resized.pos_embed.data, expected)
    if not prefix_pos_embed:  # every row is a grid position: all of them are resampled
        grid = model.pos_embed.data.reshape(1, 4, 4, 32).permute(0, 3, 1, 2)
        ref = nn.functional.interpolate(grid, size=(6, 6), mode="bicubic", align_corners=False)
        torch.testing.assert_close(expected, ref.permute(0, 2, 3, 1).reshape(1, 36, 32))
    torch.testing.assert_close(dyn(x), resized(x))
    # Fine-tuning from a file: built at the named model's 224 px, the weights are resampled 4x4 -> 14x14 on
    # loading, then to the 6x6 asked for.
    path = save_checkpoint(model, tmp_path / "m.safetensors")
    finetuned = create_with_weights("deit_tiny_distilled_patch16_224", pretrained=path, img_size=48, embed_dim=32,
                                    patch_size=8, depth=2, num_heads=2, prefix_pos_embed=prefix_pos_embed)
    at_224 = resample_pos_embed(model.pos_embed.data, (28, 28), num_prefix_tokens=rows)
    torch.testing.assert_close(finetuned.pos_embed.data, resample_pos_embed(at_224, (6, 6), num_prefix_tokens=rows))


@pytest.mark.parametrize("option", [{"init_values": 1e-4}, {"prefix_pos_embed": False}, {"init_values": 0.5,
                                    "prefix_pos_embed": False}, {"drop_path_schedule": "uniform"}, {}])
@pytest.mark.parametrize("distilled", [False, True])
def test_config_inference_round_trip_for_each_option(option, distilled):
    from deit.models.vit_config import INFERRED_INIT_VALUES, infer_config

    model = tiny(distilled, drop_path_rate=0.1, **option).eval()
    randomise_gammas(model)
    cfg = infer_config(model.state_dict())
    assert cfg.prefix_pos_embed == model.config.prefix_pos_embed and cfg.distilled == distilled
    assert cfg.init_values == (None if model.config.init_values is None else INFERRED_INIT_VALUES)
    assert cfg.img_size == 32 and cfg.drop_path_schedule == "linear"  # a training setting: not in the weights
    rebuilt = VisionTransformer(dataclass_replace(cfg, num_heads=2)).eval()
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), model(x))


def test_pos_embed_that_fits_no_layout_is_declined_with_the_reason():
    from deit.checkpoints.errors import UnknownLayoutError
    from deit.checkpoints.infer import infer_architecture
    from deit.models.vit_config import infer_config

    sd = dict(tiny(distilled=True).state_dict())
    sd["pos_embed"] = sd["pos_embed"][:, :17]  # 2 prefix rows + 15: neither 2 + k*k nor k*k
    with pytest.raises(ValueError, match="pos_embed has 17 rows: neither 2 row"):
        infer_config(sd)
    with pytest.raises(UnknownLayoutError, match=r"matches no architecture family.*vit: pos_embed has 17 rows"):
        infer_architecture(sd)


def test_convert_cli_reports_the_deit3_options_and_why_a_pos_embed_cannot_be_read(tmp_path):
    from deit.checkpoints import load_checkpoint

    model = tiny(distilled=False, init_values=1e-4, prefix_pos_embed=False).eval()
    randomise_gammas(model)
    torch.save(model.state_dict(), tmp_path / "deit3.pth")  # a timm-layout file: nothing but the weights
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    deit = [sys.executable, "-m", "deit", "convert"]
    run = subprocess.run([*deit, str(tmp_path / "deit3.pth"), str(tmp_path / "ours.safetensors"), "--num-heads", "2"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "LayerScale, pos_embed on the patch tokens only" in run.stdout
    loaded = load_checkpoint(tmp_path / "ours.safetensors")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
    sd = model.state_dict()
    torch.save({**sd, "pos_embed": sd["pos_embed"][:, :15]}, tmp_path / "bad.pth")
    run = subprocess.run([*deit, str(tmp_path / "bad.pth"), str(tmp_path / "x.safetensors")],
                         capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 2 and len(run.stderr.strip().splitlines()) == 1 and "Traceback" not in run.stderr
    assert "vit: pos_embed has 15 rows: neither 1 row(s) for the cls token plus a square patch grid" in run.stderr


def test_train_config_sets_the_deit3_options_as_typed_on_the_command_line():
    from deit.runtime.typedconfig import ConfigError
    from deit.train.components import build_student
    from deit.train.presets import load_config

    # YAML 1.1 reads 1e-4 as a string: it reaches the model as the number it means.
    cfg = load_config("digits-deit-distilled", ["model.args.init_values=1e-4", "model.args.prefix_pos_embed=false",
                                                "model.args.drop_path_schedule=uniform", "model.drop_path=0.2"])
    student = build_student(cfg, 10)
    c = student.config
    assert (c.init_values, c.prefix_pos_embed, c.drop_path_schedule) == (1e-4, False, "uniform")
    assert {b.drop_path1.drop_prob for b in student.blocks} == {0.2}
    with pytest.raises(ConfigError, match=r"model.args.drop_path_schedule='cosine' is not one of linear, uniform"):
        load_config("digits-deit-distilled", ["model.args.drop_path_schedule=cosine"])
