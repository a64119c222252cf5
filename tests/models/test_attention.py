"""Attention by measurement: both paths compute the same attention, "auto" probes once per key and follows the
measurement (decision logic with an injected timer, so bf16 and CUDA keys are tested on any CPU), and the choice is
a runtime setting that leaves weights, state dicts and the global RNG alone."""

from __future__ import annotations

import pytest
import torch

from deit.models import attention, build_architecture, set_attn_impl
from deit.models.attention import ProbeKey, choose, math_attention, probe_results, sdpa_attention
from deit.models.fusion import fuse_for_cpu_inference

# 64 px / patch 4: 256 patches + the class token, head size 16: big enough to be probed (MIN_PROBE_WORK).
PROBED = dict(num_classes=5, img_size=64, patch_size=4, embed_dim=32, depth=2, num_heads=2)


@pytest.fixture(autouse=True)
def _fresh_choices():
    attention.clear_choices()
    yield
    attention.clear_choices()


def _fake_measure(seconds: dict[str, float], probed: list[ProbeKey]):
    """A probe that times nothing: each path takes ``seconds[path]``; records the keys it was made for."""

    def factory(key, rows, heads, device):
        probed.append(key)
        return lambda name: seconds[name]

    return factory


def _qkv(dtype: torch.dtype, grad: bool = False):
    base = torch.randn(2, 40, 3, 3, 16, generator=torch.Generator().manual_seed(0)).to(dtype).requires_grad_(grad)
    return base, [t.transpose(1, 2) for t in base.unbind(2)]


@pytest.mark.parametrize("dtype,atol", [(torch.float32, 1e-6), (torch.bfloat16, 2e-2)])
def test_math_and_sdpa_agree_forward_and_backward(dtype, atol):
    grads = []
    outs = []
    for path in (sdpa_attention, math_attention):
        base, (q, k, v) = _qkv(dtype, grad=True)
        out = path(q, k, v)
        out.float().square().sum().backward()
        outs.append(out.float())
        grads.append(base.grad.float())
    torch.testing.assert_close(outs[0], outs[1], atol=atol, rtol=atol)
    torch.testing.assert_close(grads[0], grads[1], atol=10 * atol, rtol=10 * atol)


def test_a_vit_gives_the_same_logits_and_gradients_with_either_path():
    torch.manual_seed(0)
    model = build_architecture("deit_tiny_distilled_patch16_224", **PROBED)
    x = torch.randn(2, 3, 64, 64)
    results = {}
    for impl in ("sdpa", "math"):
        assert set_attn_impl(model, impl) == 2
        model.zero_grad()
        cls, dist = model.forward_heads(x)
        (cls.sum() + dist.square().sum()).backward()
        results[impl] = (cls.detach(), [p.grad.clone() for p in model.parameters()])
    torch.testing.assert_close(results["sdpa"][0], results["math"][0], atol=1e-5, rtol=1e-5)
    for a, b in zip(results["sdpa"][1], results["math"][1], strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_choose_follows_the_measurement_and_keeps_sdpa_within_noise():
    bf16_cpu_training = ProbeKey("cpu", "bfloat16", 197, 64, True)
    cuda_inference = ProbeKey("cuda", "bfloat16", 197, 64, False)
    # The bf16 CPU figures: flash attention ~3x slower than matmul + softmax.
    assert choose(bf16_cpu_training, lambda name: {"sdpa": 0.371, "math": 0.128}[name]) == "math"
    assert choose(cuda_inference, lambda name: {"sdpa": 0.001, "math": 0.003}[name]) == "sdpa"
    # 5% apart is within noise: sdpa, whatever the order.
    assert choose(bf16_cpu_training, lambda name: {"sdpa": 1.00, "math": 0.95}[name]) == "sdpa"
    # One math call slower than an sdpa call (a burst of load) keeps sdpa: every call must win by the margin.
    times = iter([0.1, 0.1, 0.5, 0.2, 0.5, 0.6, 0.5, 0.2])  # untimed sdpa, math, then (sdpa, math) x 3
    assert choose(bf16_cpu_training, lambda name: next(times)) == "sdpa"
    # Too small to be worth a probe: sdpa, nothing timed.
    assert choose(ProbeKey("cpu", "float32", 18, 16, True), lambda name: pytest.fail("timed")) == "sdpa"


def test_auto_probes_once_per_key_and_runs_the_chosen_path(monkeypatch):
    probed: list[ProbeKey] = []
    monkeypatch.setattr(attention, "probe_measure", _fake_measure({"sdpa": 3.0, "math": 1.0}, probed))
    torch.manual_seed(0)
    model = build_architecture("deit_tiny_patch16_224", **PROBED)
    x = torch.randn(3, 3, 64, 64)
    model.eval()
    with torch.no_grad():
        auto = model(x)
        model(x)
    model.train()
    model(x).sum().backward()
    model(x).sum().backward()
    assert probed == [ProbeKey("cpu", "float32", 257, 16, False), ProbeKey("cpu", "float32", 257, 16, True)]
    assert {choice for choice, _ in probe_results().values()} == {"math"}
    set_attn_impl(model, "math")
    with torch.no_grad():
        assert torch.equal(auto, model.eval()(x))  # auto ran the math path, exactly


def test_forced_paths_and_attention_dropout_are_not_probed(monkeypatch):
    probed: list[ProbeKey] = []
    monkeypatch.setattr(attention, "probe_measure", _fake_measure({"sdpa": 3.0, "math": 1.0}, probed))
    x = torch.randn(2, 3, 64, 64)
    model = build_architecture("deit_tiny_patch16_224", **PROBED)
    for impl in ("sdpa", "math"):
        set_attn_impl(model, impl)
        model(x)
    # Attention dropout while training: the two paths draw different masks, so auto keeps sdpa unprobed...
    dropping = build_architecture("deit_tiny_patch16_224", attn_drop_rate=0.5, **PROBED).train()
    dropping(x)
    assert probed == []
    # ... and math, forced, still applies it (two draws differ; in eval mode nothing is dropped).
    set_attn_impl(dropping, "math")
    assert not torch.equal(dropping(x), dropping(x))
    with torch.no_grad():
        assert torch.equal(dropping.eval()(x), dropping(x))


def test_a_real_probe_leaves_the_global_rng_and_the_weights_alone():
    model = build_architecture("deit_tiny_patch16_224", **PROBED).eval()
    keys = set(model.state_dict())
    torch.manual_seed(7)
    expected = torch.rand(4)
    torch.manual_seed(7)
    with torch.no_grad():
        model(torch.zeros(2, 3, 64, 64))  # the probe runs here (fresh choices), with real timings
    assert torch.equal(torch.rand(4), expected)
    ((key, (choice, seconds)),) = probe_results().items()
    assert key == ProbeKey("cpu", "float32", 257, 16, False) and choice in ("sdpa", "math")
    assert sorted(seconds) == ["math", "sdpa"] and all(len(s) == attention.REPEATS for s in seconds.values())
    set_attn_impl(model, "math")
    assert set(model.state_dict()) == keys


def test_set_attn_impl_checks_its_value_and_reaches_the_fused_inference_copy():
    model = build_architecture("deit_tiny_patch16_224", **PROBED)
    with pytest.raises(ValueError, match="'fast' is not one of auto, sdpa, math"):
        set_attn_impl(model, "fast")
    convnet = build_architecture("resnet_digits", num_classes=4, img_size=16)
    assert set_attn_impl(convnet, "auto") == 0
    with pytest.raises(ValueError, match="has no attention layers"):
        set_attn_impl(convnet, "math")
    set_attn_impl(model, "math")
    fused = fuse_for_cpu_inference(model.eval())
    assert {m.attn.attn_impl for m in fused.blocks} == {"math"}
