"""LAMB against an independent, written-out reference: the published rule (You et al. 2020, Algorithm 2) with the
conventions of apex's FusedLAMB, the optimizer of the official DeiT III recipe."""

from __future__ import annotations

import math

import pytest
import torch

from deit.models import build_architecture
from deit.train.config import ConfigError, OptimConfig, TrainConfig
from deit.train.optim import Lamb, build_optimizer

B1, B2, EPS, LR = 0.9, 0.999, 1e-8, 0.01


def reference_lamb(weights, grads_per_step, decays, *, lr=LR, max_grad_norm=1.0, trust_without_decay=False):
    """Algorithm 2, one tensor at a time, in float64 Python loops:
    m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2; r = m_hat / (sqrt(v_hat) + eps); u = r + lam w;
    w -= lr * phi(||w||) / ||u|| * u with phi the identity, plus FusedLAMB's conventions: gradients first clipped
    to the global norm max_grad_norm, the ratio 1 when either norm is 0, and no ratio where lam == 0."""
    w = [x.detach().double().clone() for x in weights]
    m = [torch.zeros_like(x) for x in w]
    v = [torch.zeros_like(x) for x in w]
    for t, grads in enumerate(grads_per_step, start=1):
        total = math.sqrt(sum(float((g.double() ** 2).sum()) for g in grads))
        scale = max_grad_norm / total if max_grad_norm and total > max_grad_norm else 1.0
        for i, (g, lam) in enumerate(zip(grads, decays, strict=True)):
            g = g.double() * scale
            m[i] = B1 * m[i] + (1 - B1) * g
            v[i] = B2 * v[i] + (1 - B2) * g * g
            r = (m[i] / (1 - B1**t)) / ((v[i] / (1 - B2**t)).sqrt() + EPS)
            u = r + lam * w[i]
            trust = 1.0
            if lam != 0 or trust_without_decay:
                w_norm, u_norm = float(w[i].norm()), float(u.norm())
                trust = w_norm / u_norm if w_norm > 0 and u_norm > 0 else 1.0
            w[i] = w[i] - lr * trust * u
    return w


def _problem():
    """A weight, a zero-initialised weight (||w|| = 0 at first), a weight that never gets a gradient and is 0
    (both norms 0), a bias and a norm scale (no decay); gradient scales vary so that clipping changes the result."""
    g = torch.Generator().manual_seed(0)
    weights = [torch.randn(6, 5, generator=g), torch.zeros(4, 3), torch.zeros(3, 3), torch.randn(5, generator=g),
               torch.ones(5)]
    decays = [0.05, 0.05, 0.05, 0.0, 0.0]
    scales = [20.0, 0.01, 3.0, 0.3]  # the first and third steps clip (global norm >> 1), the others do not
    steps = [[torch.randn(w.shape, generator=g) * s for w in weights] for s in scales]
    for grads in steps:
        grads[2].zero_()
    return weights, decays, steps


def _run_ours(weights, decays, steps, **kw):
    params = [torch.nn.Parameter(w.clone()) for w in weights]
    opt = Lamb([{"params": [p], "weight_decay": lam} for p, lam in zip(params, decays, strict=True)], lr=LR,
               betas=(B1, B2), eps=EPS, **kw)
    for grads in steps:
        for p, grad in zip(params, grads, strict=True):
            p.grad = grad.clone()
        opt.step()
    return [p.detach() for p in params]


def _close(ours, ref) -> bool:
    return all(torch.allclose(a.double(), b, rtol=1e-5, atol=1e-7) for a, b in zip(ours, ref, strict=True))


def test_lamb_matches_the_written_out_rule_with_clipping_and_no_decay_params():
    weights, decays, steps = _problem()
    ours = _run_ours(weights, decays, steps)
    ref = reference_lamb(weights, steps, decays)
    assert _close(ours, ref)
    assert all(torch.isfinite(p).all() for p in ours) and torch.equal(ours[2], torch.zeros(3, 3))
    assert not torch.equal(ours[1], weights[1])  # ||w|| = 0 took the plain step (ratio 1), not no step
    # The comparison sees each convention: dropping any of them moves the result beyond the tolerance.
    assert not _close(ours, reference_lamb(weights, steps, decays, max_grad_norm=None))
    assert not _close(ours, reference_lamb(weights, steps, decays, trust_without_decay=True))
    assert not _close(ours, reference_lamb(weights, steps, [0.0] * len(decays)))


def test_clipping_and_trust_for_every_tensor_are_options():
    weights, decays, steps = _problem()
    assert _close(_run_ours(weights, decays, steps, max_grad_norm=None),
                  reference_lamb(weights, steps, decays, max_grad_norm=None))
    assert _close(_run_ours(weights, decays, steps, max_grad_norm=5.0),
                  reference_lamb(weights, steps, decays, max_grad_norm=5.0))
    assert _close(_run_ours(weights, decays, steps, trust_all=True),
                  reference_lamb(weights, steps, decays, trust_without_decay=True))


def test_first_step_sizes_no_decay_adam_decay_trust_ratio():
    """Step 1 without clipping: a no-decay tensor moves by lr * g / (|g| + eps) per element (Adam's first step);
    a decayed one by exactly lr * ||w|| in total (the ratio rescales the update to the weight's norm)."""
    w = torch.nn.Parameter(torch.full((4, 4), 0.5))
    b = torch.nn.Parameter(torch.zeros(4))
    opt = Lamb([{"params": [w], "weight_decay": 0.1}, {"params": [b], "weight_decay": 0.0}], lr=LR, eps=EPS)
    w.grad, b.grad = torch.full((4, 4), 0.01), torch.tensor([0.02, -0.03, 0.0, 0.04])
    before = w.detach().clone()
    opt.step()
    assert torch.allclose(b.detach(), -LR * b.grad / (b.grad.abs() + EPS))
    assert float((w.detach() - before).norm()) == pytest.approx(LR * float(before.norm()), rel=1e-5)


def test_state_dict_resume_continues_the_same_steps():
    weights, decays, steps = _problem()
    full = _run_ours(weights, decays, steps)
    params = [torch.nn.Parameter(w.clone()) for w in weights]

    def make():
        return Lamb([{"params": [p], "weight_decay": lam} for p, lam in zip(params, decays, strict=True)], lr=LR,
                    eps=EPS)

    opt = make()
    for i, grads in enumerate(steps):
        if i == 2:  # restart from the state dict: moments and the step count (bias correction) must survive
            state = opt.state_dict()
            opt = make()
            opt.load_state_dict(state)
        for p, grad in zip(params, grads, strict=True):
            p.grad = grad.clone()
        opt.step()
    assert all(torch.equal(a, b.detach()) for a, b in zip(full, params, strict=True))


def test_build_optimizer_lamb_on_a_deit_uses_the_recipe_groups():
    model = build_architecture("deit_tiny_patch16_224", img_size=16, patch_size=8, embed_dim=16, depth=1, num_heads=2,
                         num_classes=3)
    cfg = OptimConfig(name="lamb", weight_decay=0.05, eps=1e-8)
    opt = build_optimizer(cfg, model, lr=LR)
    assert isinstance(opt, Lamb) and opt.max_grad_norm == 1.0  # FusedLAMB's default clipping, built in
    names = dict(model.named_parameters())
    before = {k: p.detach().clone() for k, p in names.items()}
    model(torch.randn(2, 3, 16, 16)).sum().backward()
    grads = [[p.grad.clone() for p in names.values()]]
    decays = [g["weight_decay"] for p in names.values() for g in opt.param_groups if any(p is q for q in g["params"])]
    opt.step()
    ref = reference_lamb(list(before.values()), grads, decays)
    assert _close([p.detach() for p in names.values()], ref)
    no_decay = {k for k, lam in zip(names, decays, strict=True) if lam == 0}
    assert {"pos_embed", "cls_token", "blocks.0.norm1.weight", "head.bias"} <= no_decay
    assert "blocks.0.attn.qkv.weight" not in no_decay


def test_lamb_is_a_config_choice():
    assert TrainConfig().validate().optim.name == "adamw"
    cfg = TrainConfig()
    cfg.optim.name = "lamb"
    assert cfg.validate().optim.name == "lamb"
    cfg.optim.name = "lars"
    with pytest.raises(ConfigError, match="adamw, lamb, sgd"):
        cfg.validate()
