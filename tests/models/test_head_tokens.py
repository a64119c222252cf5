"""The last block computes the prefix tokens' outputs alone (``VisionTransformer.head_tokens``): same logits and
gradients as computing every token, less work, and every token again wherever something watches the last block."""

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from deit.models import VisionTransformer, ViTConfig
from deit.models.fusion import fuse_for_cpu_inference
from deit.models.vit_blocks import Block

TINY = dict(img_size=32, patch_size=4, embed_dim=32, depth=3, num_heads=2, num_classes=5)  # 64 patches
VARIANTS = {
    "deit": dict(distilled=False),
    "deit-distilled": dict(distilled=True),
    "deit3 (LayerScale, patch-only positions)": dict(distilled=False, init_values=1e-4, prefix_pos_embed=False),
    "deit3-distilled": dict(distilled=True, init_values=0.1, prefix_pos_embed=False),
}


def tiny(**kw) -> VisionTransformer:
    torch.manual_seed(0)
    return VisionTransformer(ViTConfig(**{**TINY, **kw}))


def untrimmed(model: VisionTransformer, x: torch.Tensor) -> torch.Tensor:
    """Logits the way the contract spells them: every token through every block."""
    return model.forward_head(model.forward_features(x))


class CountMatmuls(TorchDispatchMode):
    """Multiply-adds of the matrix products dispatched (torch's FlopCounterMode registers global module hooks,
    which would make the model compute every token)."""

    def __init__(self) -> None:
        super().__init__()
        self.macs = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in (torch.ops.aten.mm.default, torch.ops.aten.bmm.default):
            a, b = args[0], args[1]
            self.macs += a.numel() * b.shape[-1]
        elif func is torch.ops.aten.addmm.default:
            self.macs += args[1].numel() * args[2].shape[-1]
        elif func in (torch.ops.mkldnn._linear_pointwise.default, torch.ops.mkldnn._linear_pointwise.binary):
            x, weight = args[0], args[2 if func is torch.ops.mkldnn._linear_pointwise.binary else 1]
            self.macs += x.numel() * weight.shape[0]
        return func(*args, **(kwargs or {}))


def flops(fn) -> int:
    with CountMatmuls() as counter:
        fn()
    return 2 * counter.macs


@pytest.mark.parametrize("variant", VARIANTS)
def test_trimmed_logits_equal_every_token_logits(variant):
    model = tiny(**VARIANTS[variant]).eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        tokens = model.head_tokens(x)
        assert tokens.shape == (4, model.num_prefix_tokens, 32)
        torch.testing.assert_close(tokens, model.forward_features(x)[:, :model.num_prefix_tokens], atol=1e-6, rtol=0)
        torch.testing.assert_close(model(x), untrimmed(model, x), atol=1e-6, rtol=0)
        if model.distilled:
            heads = model.forward_heads(x)
            full = model._heads(model.forward_features(x))
            for a, b in zip(heads, full, strict=True):
                torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
        fused = fuse_for_cpu_inference(model)
        torch.testing.assert_close(fused(x), untrimmed(fused, x), atol=1e-5, rtol=0)


@pytest.mark.parametrize("variant", ["deit-distilled", "deit3-distilled"])
def test_trimmed_training_step_gives_the_same_loss_and_gradients(variant):
    """Stochastic depth on: its per-sample masks draw as many numbers either way, so the same seed gives the same
    masks; the patch tokens' outputs of the last block reach no loss, so no gradient changes."""
    model = tiny(**VARIANTS[variant], drop_path_rate=0.5).train()
    x, y = torch.randn(6, 3, 32, 32), torch.randint(0, 5, (6,))

    def grads(heads) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        model.zero_grad()
        torch.manual_seed(1)
        cls_logits, dist_logits = heads()
        loss = nn.functional.cross_entropy(cls_logits, y) + nn.functional.cross_entropy(dist_logits, y)
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    loss, trimmed = grads(lambda: model.forward_heads(x))
    full_loss, full = grads(lambda: model._heads(model.forward_features(x)))
    torch.testing.assert_close(loss, full_loss, atol=1e-6, rtol=0)
    assert trimmed.keys() == full.keys()
    for name in full:
        torch.testing.assert_close(trimmed[name], full[name], atol=1e-5, rtol=1e-4, msg=name)


def test_the_last_block_does_less_work():
    """Of the last block only the qkv projection (keys and values of every token) and a few queries remain."""
    model = tiny(depth=12, distilled=True).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        trimmed, full = flops(lambda: model(x)), flops(lambda: untrimmed(model, x))
        per_block = (flops(lambda: model.forward_features(x)) - flops(lambda: model.embed(x))) / 12
        fused = fuse_for_cpu_inference(model)
        fused_trimmed, fused_full = flops(lambda: fused(x)), flops(lambda: untrimmed(fused, x))
    # the linears' share: everything but qkv (a quarter of a block's linear work at mlp_ratio 4) and 2 queries
    assert 0.7 * per_block < full - trimmed < 0.8 * per_block
    assert fused_full == full  # the fused block's oneDNN linears, counted alike
    assert fused_trimmed == trimmed


@pytest.mark.parametrize("where", ["blocks.2", "blocks.2.mlp.fc2", "blocks.2.attn", "norm"])
def test_a_hook_that_watches_the_last_block_sees_every_token(where):
    model = tiny(distilled=True).eval()
    x = torch.randn(2, 3, 32, 32)
    seen: list[tuple[int, ...]] = []
    handle = model.get_submodule(where).register_forward_hook(lambda m, i, out: seen.append(tuple(out.shape)))
    with torch.no_grad():
        logits = model(x)
    handle.remove()
    assert seen == [(2, 2 + 64, 32)]
    with torch.no_grad():
        torch.testing.assert_close(logits, model(x), atol=1e-6, rtol=0)


def test_a_backward_hook_on_the_last_block_sees_every_token():
    model = tiny(distilled=True).train()
    seen: list[tuple[int, ...]] = []
    model.blocks[-1].register_full_backward_hook(lambda m, grad_in, grad_out: seen.append(tuple(grad_out[0].shape)))
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    assert seen == [(2, 2 + 64, 32)]


def test_a_global_hook_sees_every_token():
    model = tiny(distilled=False).eval()
    shapes: list[tuple[int, ...]] = []

    def watch(module, inputs, out):
        if module is model.blocks[-1]:
            shapes.append(tuple(out.shape))

    handle = nn.modules.module.register_module_forward_hook(watch)
    try:
        with torch.no_grad():
            model(torch.randn(2, 3, 32, 32))
    finally:
        handle.remove()
    assert shapes == [(2, 1 + 64, 32)]


def test_a_block_of_another_class_computes_every_token():
    """A subclass's forward may not take ``prefix``: it is called as a plain block."""

    class Doubled(Block):
        def forward(self, x: torch.Tensor) -> torch.Tensor:  # no prefix argument
            return super().forward(x) * 2

    model = tiny(distilled=True).eval()
    old = model.blocks[-1]
    new = Doubled(model.config, 0.0)
    new.load_state_dict(old.state_dict())
    model.blocks[-1] = new.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), untrimmed(model, x), atol=0, rtol=0)
