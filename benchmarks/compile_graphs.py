"""What torch.compile makes of one training step (forward + distillation loss, and the backward AOTAutograd derives),
ours against HF's twins with the same weights: graphs, graph breaks and their reasons, and the ops of the forward
and backward graphs by kind (GEMMs, attention kernels, casts, copies, LayerNorm, GELU, ...).

Run: python benchmarks/compile_graphs.py [--dtype bf16] [--img-size 64] [--batch 2] [--attn-impl auto]
Nothing here is timed and the graphs do not depend on the CPU, so it says the same on a CPU without native bf16 as
on one with it (a small --img-size keeps the emulated bf16 maths of the one real call cheap; the op counts do not
depend on the token count).
"""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Callable

import torch
from torch import nn
from torch._dynamo.backends.common import aot_autograd

from deit.benchmark.common import autocast
from deit.benchmark.peers import load_twins
from deit.models import build_architecture, set_attn_impl
from deit.train.loss import DistillationObjective

KINDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("attention (fused)", ("scaled_dot_product",)),
    ("gemm", ("aten.mm", "aten.addmm", "aten.bmm", "aten.convolution")),
    ("softmax", ("softmax",)),
    ("cast", ("convert_element_type", "_to_copy")),
    ("copy/layout", ("clone", "copy", "cat", "stack", "contiguous", "_unsafe_view", "expand")),
    ("layernorm", ("native_layer_norm",)),
    ("gelu", ("gelu",)),
    ("view/permute", ("view", "permute", "transpose", "t.default", "unbind", "select", "slice", "squeeze")),
)


def kind(target: str) -> str:
    for label, needles in KINDS:
        if any(n in target for n in needles):
            return label
    return "other element-wise/reduction"


def census(fn: Callable[..., torch.Tensor], *args: torch.Tensor) -> dict[str, object]:
    """Compile ``fn`` with a backend that records the AOT forward and backward graphs (and runs them eagerly)."""
    graphs: dict[str, Counter] = {"forward": Counter(), "backward": Counter()}

    def recorder(part: str):
        def compiler(gm: torch.fx.GraphModule, _inputs):
            for node in gm.graph.nodes:
                if node.op == "call_function":
                    graphs[part][kind(str(node.target))] += 1
            return gm.forward

        return compiler

    torch._dynamo.reset()
    explained = torch._dynamo.explain(fn)(*args)
    torch._dynamo.reset()
    backend = aot_autograd(fw_compiler=recorder("forward"), bw_compiler=recorder("backward"))
    torch.compile(fn, backend=backend, dynamic=False)(*args).backward()
    return {"graphs": explained.graph_count, "breaks": explained.graph_break_count,
            "reasons": sorted({str(b.reason).splitlines()[0] for b in explained.break_reasons}), **graphs}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dtype", choices=("fp32", "bf16"), default="bf16")
    p.add_argument("--img-size", type=int, default=64)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--model", default="deit_tiny_distilled_patch16_224")
    p.add_argument("--attn-impl", default="auto")
    args = p.parse_args()
    cpu = torch.device("cpu")
    torch.manual_seed(0)
    model = build_architecture(args.model, img_size=args.img_size)
    set_attn_impl(model, args.attn_impl)
    x = torch.randn(args.batch, 3, args.img_size, args.img_size)
    y = torch.randint(0, model.num_classes, (args.batch,))
    logits = torch.randn(args.batch, model.num_classes)
    criterion = DistillationObjective(nn.CrossEntropyLoss(label_smoothing=0.1), "hard")
    twins = load_twins(model.eval(), cpu, x[:2])
    contenders = {"ours": (model, model.forward_heads), **{t.label: (t.module, t.heads) for t in twins}}
    print(f"torch {torch.__version__}, {args.model} at {args.img_size} px, batch {args.batch}, {args.dtype}, "
          f"our attn_impl={args.attn_impl}")
    for label, (module, forward) in contenders.items():
        module.train()

        def loss_of(images, labels, teacher, forward=forward):
            with autocast(cpu, args.dtype):
                return criterion(forward(images), labels, teacher)

        result = census(loss_of, x, y, logits)
        print(f"{label}: {result['graphs']} graph(s), {result['breaks']} break(s) {result['reasons'] or ''}")
        for part in ("forward", "backward"):
            counts = result[part]
            print(f"  {part:8s} {sum(counts.values()):4d} ops: "
                  + ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])))


if __name__ == "__main__":
    main()
