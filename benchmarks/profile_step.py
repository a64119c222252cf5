"""Where the time goes: torch.profiler self time of ours and HF's DeiT (same weights), by kind of kernel.

Run: python benchmarks/profile_step.py [--threads 2] [--batch 64] [--model deit_tiny_distilled_patch16_224]
Prints, for inference (torch.inference_mode; ours fused for CPU inference, as evaluation runs it) and for one
training step (forward + distillation loss + backward + AdamW), the share of profiled CPU time in GEMMs, attention,
LayerNorm, element-wise/copy kernels and the optimizer.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from collections.abc import Callable

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile

from deit.benchmark.peers import load_twins
from deit.benchmark.training import build_teacher, make_step
from deit.models import build_architecture
from deit.models.fusion import cpu_inference_model
from deit.train.loss import DistillationObjective

KINDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("gemm", ("aten::mm", "aten::addmm", "aten::bmm", "mkldnn::_linear_pointwise", "convolution")),
    ("attention", ("scaled_dot_product", "softmax")),
    ("layernorm", ("layer_norm",)),
    ("optimizer", ("lerp", "addcdiv", "addcmul", "sqrt", "_foreach", "_fused_adamw")),
)


def kind(name: str) -> str:
    for label, needles in KINDS:
        if any(n in name for n in needles):
            return label
    return "elementwise/copy/other"


def profile_shares(fn: Callable[[], object]) -> tuple[float, dict[str, float]]:
    fn()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    totals: dict[str, float] = defaultdict(float)
    for event in prof.key_averages():
        totals[kind(event.key)] += event.self_cpu_time_total
    total = sum(totals.values())
    return total / 1e6, {k: 100 * v / total for k, v in sorted(totals.items(), key=lambda kv: -kv[1])}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--model", default="deit_tiny_distilled_patch16_224")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    cpu = torch.device("cpu")
    model = build_architecture(args.model)
    x = torch.randn(args.batch, 3, 224, 224)
    y = torch.randint(0, model.num_classes, (args.batch,))
    twin = next(t for t in load_twins(model.eval(), cpu, x[:2]) if t.attn_implementation == "sdpa")

    def infer(fn: Callable[[torch.Tensor], object]) -> Callable[[], None]:
        def run() -> None:
            with torch.inference_mode():
                fn(x)

        return run

    criterion = DistillationObjective(nn.CrossEntropyLoss(label_smoothing=0.1), "hard")
    with torch.inference_mode():
        logits = build_teacher("regnety_002", 1000, cpu)(x)
    print(f"torch {torch.__version__}, {args.threads} threads, batch {args.batch}, {args.model}")
    model.eval()
    twin.module.eval()
    report("inference ours", infer(cpu_inference_model(model)))  # as evaluation, prediction and the benchmark run it
    report("inference hf-sdpa", infer(twin.logits))
    model.train()
    twin.module.train()
    report("train ours", make_step(model, model.forward_heads, criterion, x, y, lambda: logits, "fp32"))
    report("train hf-sdpa", make_step(twin.module, twin.heads, criterion, x, y, lambda: logits, "fp32"))


def report(label: str, fn: Callable[[], object]) -> None:
    seconds, shares = profile_shares(fn)
    print(f"{label:18s} {seconds:6.2f} s profiled  " + "  ".join(f"{k} {v:.0f}%" for k, v in shares.items()))


if __name__ == "__main__":
    main()
