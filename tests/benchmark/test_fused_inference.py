"""The CPU inference fast path of the ViT block (oneDNN linear with fused bias / GELU / residual add): same
numbers as the plain path, taken only where nothing can tell the difference."""

import pytest
import torch
from torch import nn

from deit.models import create_model
from deit.models.vit_blocks import _fusable, _onednn_linear_works

pytestmark = pytest.mark.skipif(not _onednn_linear_works(), reason="this torch build has no oneDNN fused linear")


@pytest.fixture
def model():
    return create_model("deit_tiny_distilled_patch16_224", depth=2, img_size=32, num_classes=10).eval()


def test_fused_forward_matches_the_plain_one(model):
    x = torch.randn(3, 3, 32, 32)
    with torch.inference_mode():
        assert _fusable(model.blocks[0], model.embed(x))
        fused = model.forward_features(x)
    with torch.enable_grad():  # parameters require grad: the plain, differentiable path
        assert not _fusable(model.blocks[0], model.embed(x))
        plain = model.forward_features(x)
    assert fused.shape == plain.shape
    torch.testing.assert_close(fused, plain.detach(), atol=1e-5, rtol=1e-5)


def test_fast_path_only_where_it_is_invisible(model):
    blk = model.blocks[0]
    with torch.no_grad():
        x = model.embed(torch.randn(2, 3, 32, 32))
        assert _fusable(blk, x)
        handle = blk.mlp.fc1.register_forward_hook(lambda *args: None)
        assert not _fusable(blk, x)  # a hook on a fused layer must still be called
        handle.remove()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert not _fusable(blk, x)
        assert not _fusable(blk, x.double())
        blk.mlp.act = nn.GELU(approximate="tanh")
        assert not _fusable(blk, x)  # a different activation is not what the fused kernel computes
        blk.mlp.act = nn.GELU()
        model.train()
        assert not _fusable(blk, x)


def test_hooks_still_fire_and_gradients_still_flow(model):
    seen = []
    model.blocks[1].mlp.fc2.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    with torch.no_grad():
        model(torch.randn(2, 3, 32, 32))
    assert seen == [torch.Size([2, 6, 192])]
    x = torch.randn(2, 3, 32, 32)
    model(x).sum().backward()
    assert model.blocks[0].mlp.fc1.weight.grad is not None
