import json

import numpy as np
import pytest
import torch
from inferencehelpers import tiny
from PIL import Image

from deit.inference import (
    InferenceHead,
    agreement,
    attention_maps,
    attention_probs,
    attention_rollout,
    head_weight_cosine,
    plot_attention,
    plot_token_similarity,
    token_similarity,
)


def batches(n_batches=2, batch=3, size=32, labels=True):
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n_batches):
        x = torch.randn(batch, 3, size, size, generator=g)
        out.append((x, torch.randint(0, 5, (batch,), generator=g)) if labels else x)
    return out


def twin_tokens(model):
    """Make the cls and dist tokens indistinguishable: same learned vector, same position embedding."""
    with torch.no_grad():
        model.dist_token.copy_(model.cls_token)
        model.pos_embed[:, 1].copy_(model.pos_embed[:, 0])
        model.head_dist.weight.copy_(model.head.weight)
    return model


def test_identical_tokens_have_similarity_one_at_every_layer(model):
    result = token_similarity(twin_tokens(model), batches())
    assert result.layers == ["input", "block 1", "block 2"]
    assert result.num_images == 6
    np.testing.assert_allclose(result.cls_dist_cosine, 1.0, atol=1e-5)
    assert result.final_norm_cosine == pytest.approx(1.0, abs=1e-5)
    assert result.token_parameter_cosine == pytest.approx(1.0, abs=1e-6)
    assert result.head_weight_cosine_mean == pytest.approx(1.0, abs=1e-6)


def test_random_tokens_are_not_similar_and_max_images_caps(model):
    result = token_similarity(model, batches(), max_images=4)
    assert result.num_images == 4
    assert abs(result.cls_dist_cosine[0]) < 0.9
    per_class = head_weight_cosine(model)
    assert per_class.shape == (5,)
    assert result.head_weight_cosine_mean == pytest.approx(float(per_class.mean()))


def test_token_similarity_needs_a_distilled_model():
    with pytest.raises(ValueError, match="distilled"):
        token_similarity(tiny(distilled=False), batches())


def test_attention_probs_sum_to_one_per_query(model):
    probs = attention_probs(model, torch.randn(2, 3, 32, 32))
    assert len(probs) == 2
    for p in probs:
        assert p.shape == (2, 2, 18, 18)  # batch, heads, 2 prefix + 16 patches
        torch.testing.assert_close(p.sum(-1), torch.ones(2, 2, 18))
        assert (p >= 0).all()
    rollout = attention_rollout(probs)
    torch.testing.assert_close(rollout.sum(-1), torch.ones(2, 18))


def test_attention_probs_are_what_the_forward_pass_uses(model):
    x = model.embed(torch.randn(1, 3, 32, 32))
    blk = model.blocks[0]
    h = blk.norm1(x)
    p = blk.attn.attention_probs(h)
    _, _, v = blk.attn._qkv(h)
    manual = blk.attn.proj((p @ v).transpose(1, 2).reshape(1, 18, 32))
    torch.testing.assert_close(manual, blk.attn(h), atol=1e-5, rtol=1e-5)


def test_rollout_of_uniform_attention_is_uniform_plus_identity():
    n = 4
    uniform = torch.full((1, 2, n, n), 1 / n)
    one_layer = attention_rollout([uniform])
    torch.testing.assert_close(one_layer[0], 0.5 * torch.eye(n) + 0.5 / n)
    two = attention_rollout([uniform, uniform])
    torch.testing.assert_close(two[0], one_layer[0] @ one_layer[0])


def test_attention_maps_and_plot(model, tmp_path):
    maps = attention_maps(model, torch.randn(3, 32, 32))
    assert maps.tokens == ["cls", "dist"]
    assert maps.last_layer.shape == (2, 2, 4, 4)  # tokens, heads, grid
    assert maps.rollout.shape == (2, 4, 4)
    # Attention to the patches is the row minus what goes to the prefix tokens: at most 1.
    assert (maps.last_layer.sum(dim=(-2, -1)) <= 1 + 1e-6).all()
    out = tmp_path / "attention.png"
    plot_attention(maps, np.random.default_rng(0).random((32, 32, 3)), out)
    with Image.open(out) as im:
        assert im.format == "PNG" and im.width > im.height


def test_token_similarity_plot(model, tmp_path):
    out = tmp_path / "tokens.png"
    plot_token_similarity(token_similarity(model, batches(1)), out)
    assert Image.open(out).format == "PNG"


def test_agreement_counts(model):
    data = batches(labels=True)
    # A teacher that is the student's own dist head: the dist head agrees with it everywhere.
    teacher = InferenceHead(model, "dist")
    result = agreement(model, teacher, data)
    assert result.num_images == 6
    assert result.teacher_agreement["dist"] == 1.0
    # Labels made from the cls head's predictions: the cls head is 100% accurate on them.
    relabelled = [(x, model.forward_heads(x)[0].argmax(-1)) for x, _ in data]
    result = agreement(model, teacher, relabelled)
    assert result.accuracy["cls"] == 1.0
    assert result.teacher_accuracy == pytest.approx(result.cls_dist_agreement)
    table = result.format()
    assert "student dist head" in table and "100.00%" in table
    json.dumps(result.to_dict())


def test_agreement_without_labels_and_class_mismatch(model):
    result = agreement(model, InferenceHead(model, "cls"), batches(labels=False))
    assert result.accuracy["avg"] is None and result.teacher_accuracy is None
    assert result.teacher_agreement["cls"] == 1.0
    with pytest.raises(ValueError, match="teacher predicts 7 classes but the student 5"):
        agreement(model, tiny(distilled=False, num_classes=7), batches())
