"""The CPU inference transformation of the ViT (deit.models.fusion: oneDNN linear with fused bias / GELU / residual
add, LayerScale folded in): the same numbers as the plain model for every block option, refused where it would
compute something else, never a change to the model it is made from, and used where inference runs on the CPU."""

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from deit.inference.evaluation import evaluate
from deit.inference.predictor import Predictor
from deit.models import build_architecture, fusion
from deit.models.contract import head_outputs
from deit.models.fusion import (
    FusedBlock,
    _onednn_linear_works,
    cpu_inference_model,
    fuse_for_cpu_inference,
    fusion_problems,
)
from deit.models.vit_blocks import Block
from deit.runtime.distributed import DistEnv

pytestmark = pytest.mark.skipif(not _onednn_linear_works(), reason="this torch build has no oneDNN fused linear")

TINY = {"depth": 2, "img_size": 32, "num_classes": 10}


def build(distilled: bool = True, **overrides) -> nn.Module:
    name = "deit_tiny_distilled_patch16_224" if distilled else "deit_tiny_patch16_224"
    model = build_architecture(name, **{**TINY, **overrides}).eval()
    with torch.no_grad():  # trained-like LayerScale: at its init value (1e-4) the branches would hardly count
        for n, p in model.named_parameters():
            if n.endswith("gamma"):
                p.uniform_(-1.5, 1.5)
    return model


@pytest.fixture
def model():
    return build()


def test_fused_forward_matches_the_plain_one(model):
    x = torch.randn(3, 3, 32, 32)
    fused = fuse_for_cpu_inference(model)
    assert all(type(b) is FusedBlock for b in fused.blocks) and all(type(b) is Block for b in model.blocks)
    with torch.inference_mode():
        fast = fused.forward_features(x)
    with torch.enable_grad():  # parameters require grad: the plain, differentiable model
        plain = model.forward_features(x)
    assert fast.shape == plain.shape
    torch.testing.assert_close(fast, plain.detach(), atol=1e-5, rtol=1e-5)


OPTIONS = {
    "deit": {},
    "layer-scale": {"init_values": 1e-4},
    "patch-only-pos-embed": {"prefix_pos_embed": False},
    "uniform-drop-path": {"drop_path_schedule": "uniform", "drop_path_rate": 0.3},
    "dropouts": {"drop_rate": 0.2, "attn_drop_rate": 0.2, "drop_path_rate": 0.2},
    "no-qkv-bias": {"qkv_bias": False},
    "all-of-deit-iii": {"init_values": 1e-6, "prefix_pos_embed": False, "drop_path_schedule": "uniform",
                        "drop_path_rate": 0.1},
    "dynamic-size": {"dynamic_img_size": True},
}


@pytest.mark.parametrize("distilled", [False, True])
@pytest.mark.parametrize("option", list(OPTIONS))
def test_every_block_option_gives_the_same_logits(option, distilled):
    model = build(distilled, **OPTIONS[option])
    fused = fuse_for_cpu_inference(model)
    size = 48 if model.config.dynamic_img_size else 32
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        plain, fast = head_outputs(model, x), head_outputs(fused, x)
    for head in plain:
        torch.testing.assert_close(fast[head], plain[head], atol=1e-5, rtol=1e-5)


def test_the_model_it_is_made_from_is_left_as_it_is(model):
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fused = fuse_for_cpu_inference(model)
    assert model.training and not fused.training
    assert all(type(b) is Block for b in model.blocks) and all(p.requires_grad for p in model.parameters())
    assert model.state_dict().keys() == before.keys() == fused.state_dict().keys()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())
    fused.double()  # casting or moving the copy leaves the model where it is
    assert all(p.dtype == torch.float32 for p in model.parameters())
    model.class_names = [str(i) for i in range(10)]
    fused = fuse_for_cpu_inference(model)
    fused.class_names.append("extra")
    fused.norm.register_forward_hook(lambda *args: None)
    fused.set_head_mode("cls")
    assert len(model.class_names) == 10 and not model.norm._forward_hooks and model.head_mode == "avg"
    with pytest.raises(ValueError, match="cannot train"):
        fuse_for_cpu_inference(model).train()


def test_the_copy_computes_with_the_current_weights():
    model = build(init_values=1e-4)
    fused = fuse_for_cpu_inference(model)  # no weight copied: an optimizer step on the model shows in the copy
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.1)
        torch.testing.assert_close(fused(x), model(x), atol=1e-5, rtol=1e-5)


def test_weights_changed_after_the_first_call_are_seen_and_packed_once():
    """The fused blocks pack their weights (oneDNN's layout) at the first call: again only after an in-place change
    of a weight, bias or LayerScale gamma, which the next call then computes with."""
    model = build(init_values=1e-4)
    fused = fuse_for_cpu_inference(model)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        fused(x)
        packings = [block._packed for block in fused.blocks]
        fused(x)
        assert [block._packed for block in fused.blocks] == packings  # the same objects: not packed again
        if fusion._packing_works():
            assert all(w.is_mkldnn for block in fused.blocks for w, _ in block.linears())
        for name, p in model.named_parameters():
            if name.startswith("blocks.1.") and name.endswith(("fc2.weight", "ls2.gamma", "qkv.bias")):
                p.mul_(1.5)  # what an optimizer step or load_state_dict does: in place
        torch.testing.assert_close(fused(x), model(x), atol=1e-5, rtol=1e-5)
        assert fused.blocks[0]._packed is packings[0] and fused.blocks[1]._packed is not packings[1]


def test_a_model_built_under_inference_mode_fuses_and_runs():
    """Its tensors are inference tensors, which have no version counter to watch."""
    with torch.inference_mode():
        model = build()
        fused = fuse_for_cpu_inference(model)
        x = torch.randn(2, 3, 32, 32)
        torch.testing.assert_close(fused(x), model(x), atol=1e-5, rtol=1e-5)


def test_packed_and_plain_weights_give_the_same_logits(model, monkeypatch):
    x = torch.randn(3, 3, 32, 32)
    packed = fuse_for_cpu_inference(model)
    with torch.no_grad():
        expected = packed(x)
        monkeypatch.setattr(fusion, "_pack", lambda weight: weight)
        plain = fuse_for_cpu_inference(model)
        torch.testing.assert_close(plain(x), expected, atol=1e-6, rtol=0)
        assert not any(w.is_mkldnn for block in plain.blocks for w, _ in block.linears())


def test_what_it_cannot_fuse_is_refused_naming_it(model):
    blk = model.blocks[0]
    handle = blk.mlp.fc1.register_forward_hook(lambda *args: None)
    with pytest.raises(ValueError, match=r"blocks\.0\.mlp\.fc1 has a forward hook"):
        fuse_for_cpu_inference(model)
    handle.remove()
    blk.mlp.act = nn.GELU(approximate="tanh")  # not what the fused kernel computes
    with pytest.raises(ValueError, match=r"blocks\.0\.mlp\.act is GELU\(approximate='tanh'\)"):
        fuse_for_cpu_inference(model)
    blk.mlp.act = nn.SiLU()
    blk.attn.proj = nn.Sequential(nn.Linear(192, 192))
    with pytest.raises(ValueError, match=r"blocks\.0\.attn\.proj is a Sequential.*blocks\.0\.mlp\.act is a SiLU"):
        fuse_for_cpu_inference(model)
    with pytest.raises(ValueError, match="float64 on cpu; the fused kernels are for float32 on the CPU"):
        fuse_for_cpu_inference(build().double())
    with pytest.raises(ValueError, match="RegNet has no ViT blocks"):
        fuse_for_cpu_inference(build_architecture("regnety_002"))
    assert fusion_problems(build()) == []


def test_fused_model_refuses_inputs_it_would_get_wrong(model):
    fused = fuse_for_cpu_inference(model)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16), pytest.raises(ValueError, match="autocast"):
        fused(x)
    with pytest.raises(ValueError, match="no gradients"):
        fused(x.requires_grad_())


def test_hooks_still_fire_and_gradients_still_flow(model):
    seen = []
    model.blocks[1].mlp.fc2.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    assert cpu_inference_model(model) is model  # a hooked model runs as it is
    with torch.no_grad():
        model(torch.randn(2, 3, 32, 32))
    assert seen == [torch.Size([2, 6, 192])]
    x = torch.randn(2, 3, 32, 32)
    model(x).sum().backward()
    assert model.blocks[0].mlp.fc1.weight.grad is not None


def count_fused_calls(monkeypatch) -> list[int]:
    calls = [0]
    forward = FusedBlock.forward

    def counting(self, x, prefix=None):
        calls[0] += 1
        return forward(self, x, prefix)

    monkeypatch.setattr(FusedBlock, "forward", counting)
    return calls


def test_evaluation_runs_the_fused_model_on_the_current_weights(monkeypatch):
    calls = count_fused_calls(monkeypatch)
    model = build(init_values=1e-4).train()
    x, y = torch.randn(6, 3, 32, 32), torch.randint(0, 10, (6,))
    loader = DataLoader(TensorDataset(x, y), batch_size=3)
    env = DistEnv(device=torch.device("cpu"))
    first = evaluate(model, loader, env)
    assert calls[0] == 2 * 2 and model.training and all(type(b) is Block for b in model.blocks)
    with torch.no_grad():  # what validation during training sees after an optimizer step
        model.head.weight.zero_(), model.head.bias.zero_(), model.head_dist.weight.zero_(), model.head_dist.bias.zero_()
    second = evaluate(model, loader, env)
    assert first["loss"] != second["loss"] and second["loss"] == pytest.approx(torch.log(torch.tensor(10.0)).item())
    calls[0] = 0
    evaluate(model, loader, env, amp="bf16")  # under autocast: the model as it is
    assert calls[0] == 0


def test_prediction_runs_the_fused_model(monkeypatch):
    calls = count_fused_calls(monkeypatch)
    model = build()
    predictor = Predictor(model, device="cpu")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(predictor.logits(x), model(x), atol=1e-5, rtol=1e-5)
    assert calls[0] == 2 and all(type(b) is Block for b in model.blocks)


def test_benchmark_times_the_fused_model(monkeypatch):
    from deit.benchmark.common import BenchmarkConfig
    from deit.benchmark.inference import bench_inference

    calls = count_fused_calls(monkeypatch)
    config = BenchmarkConfig(repeats=1, warmup=0, peer=False, gemm_size=32, threads=None,
                             model_overrides={"depth": 1, "img_size": 32})
    bench_inference("deit_tiny_patch16_224", 2, config, torch.device("cpu"), peer=False)
    assert calls[0] >= 1
