"""The speed ideas tried on DeiT, each measured against the shipped code in the same alternating rounds.

Run: python benchmarks/ablations.py [--threads 2] [--repeats 5] [--only NAME ...] [--compile]
Each line: the variant's images/s, the shipped code's, and their ratio (variant / shipped: < 1 means the shipped
choice is faster). The numbers behind the "what did not help" table of docs/results/benchmark-cpu.md.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
from collections.abc import Callable, Iterator

import torch
from torch import nn

from deit.benchmark import race
from deit.benchmark.training import build_teacher, make_step
from deit.models import build_architecture, fusion, vit_blocks
from deit.models.fusion import fuse_for_cpu_inference
from deit.train.loss import DistillationObjective

CPU = torch.device("cpu")


@contextlib.contextmanager
def patched(obj: object, name: str, value: object) -> Iterator[None]:
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, old)


def permute_split(self: vit_blocks.Attention, qkv: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The layout before: (3, B, H, N, hd) by permute, whose backward needs a contiguous copy."""
    b, n, _ = qkv.shape
    return qkv.reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)


def math_attend(self: vit_blocks.Attention, qkv: torch.Tensor, prefix: int | None = None) -> torch.Tensor:
    """Explicit softmax(q k^T) v with the probabilities materialised (what HF's eager attention does)."""
    b, n, three_c = qkv.shape
    q, k, v = self.split_heads(qkv)
    if prefix is not None:
        q, n = q[:, :, :prefix], prefix
    probs = (q @ k.transpose(-2, -1)).mul_(self.scale).softmax(dim=-1)
    return (probs @ v).transpose(1, 2).reshape(b, n, three_c // 3)


def compare(title: str, shipped: Callable[[], object], variant: Callable[[], object], batch: int,
            repeats: int, variant_ctx: Callable[[], contextlib.AbstractContextManager] | None = None) -> None:
    def wrapped() -> None:
        with variant_ctx() if variant_ctx else contextlib.nullcontext():
            variant()

    s = race({"shipped": shipped, "variant": wrapped}, CPU, repeats, warmup=1)
    ours, theirs = batch / s["shipped"].median, batch / s["variant"].median
    print(f"{title:82s} variant {theirs:7.1f} img/s  shipped {ours:7.1f} img/s  ratio {theirs / ours:5.2f}", flush=True)


def inference_ideas(name: str, batch: int, repeats: int, use_compile: bool) -> None:
    model = build_architecture(name).eval()
    shipped = fuse_for_cpu_inference(model)  # what evaluation and prediction run on the CPU
    x = torch.randn(batch, 3, 224, 224)

    def fwd() -> None:
        with torch.inference_mode():
            shipped(x)

    def run(title: str, variant: Callable[[], object], ctx=None) -> None:
        compare(f"{name} inference: {title}", fwd, variant, batch, repeats, ctx)

    run("block without oneDNN fused bias/GELU/residual", lambda: _inference(model, x))
    run("every token through the last block", lambda: _inference(lambda x: shipped.forward_head(
        shipped.forward_features(x)), x))
    plain_layout = fuse_for_cpu_inference(model)
    with patched(fusion, "_pack", lambda weight: weight):  # its blocks keep the weights it makes on the first call
        _inference(plain_layout, x[:1])
    run("oneDNN linears on plain-layout (unpacked) weights", lambda: _inference(plain_layout, x))
    run("math attention instead of SDPA", fwd, lambda: patched(vit_blocks.Attention, "attend", math_attend))
    run("torch.no_grad instead of torch.inference_mode", lambda: _no_grad(shipped, x))
    run("no grad-mode context (autograd on, plain model)", lambda: model(x))
    cl = x.contiguous(memory_format=torch.channels_last)
    run("channels-last input to the patch embedding", lambda: _inference(shipped, cl))
    cl_weight = copy.deepcopy(model)
    cl_weight.patch_embed.proj.to(memory_format=torch.channels_last)
    cl_weight = fuse_for_cpu_inference(cl_weight)
    run("channels-last patch-embedding weight", lambda: _inference(cl_weight, x))
    if torch.ops.mkldnn._is_mkldnn_bf16_supported():
        run("bf16 autocast", lambda: _inference(model, x, torch.autocast("cpu", dtype=torch.bfloat16)))
    if use_compile:
        compiled = torch.compile(model)
        run("torch.compile (inductor)", lambda: _inference(compiled, x))


def _inference(model: Callable[[torch.Tensor], object], x: torch.Tensor,
               ctx: contextlib.AbstractContextManager | None = None) -> None:
    with torch.inference_mode(), ctx or contextlib.nullcontext():
        model(x)


def _no_grad(model: nn.Module, x: torch.Tensor) -> None:
    with torch.no_grad():
        model(x)


def training_ideas(batch: int, repeats: int) -> None:
    name = "deit_tiny_distilled_patch16_224"
    model = build_architecture(name).train()
    x = torch.randn(batch, 3, 224, 224)
    y = torch.randint(0, 1000, (batch,))
    teacher = build_teacher("regnety_002", 1000, CPU)
    criterion = DistillationObjective(nn.CrossEntropyLoss(label_smoothing=0.1), "hard")
    with torch.inference_mode():
        logits = teacher(x)
    step = make_step(model, model.forward_heads, criterion, x, y, lambda: logits, "fp32")
    every_token = make_step(model, lambda x: model._heads(model.forward_features(x)), criterion, x, y,
                            lambda: logits, "fp32")
    compare(f"{name} train step: every token through the last block", step, every_token, batch, repeats)
    compare(f"{name} train step: permute+contiguous q/k/v split", step, step, batch, repeats,
            lambda: patched(vit_blocks.Attention, "split_heads", permute_split))
    compare(f"{name} train step: math attention instead of SDPA", step, step, batch, repeats,
            lambda: patched(vit_blocks.Attention, "attend", math_attend))

    nchw = build_architecture("regnety_002").eval()
    nchw.load_state_dict(teacher.module.state_dict())

    def teacher_fwd(module: nn.Module) -> Callable[[], None]:
        return lambda: _inference(module, x)

    compare("regnety_002 teacher forward: NCHW instead of channels-last", teacher_fwd(teacher.module),
            teacher_fwd(nchw), batch, repeats)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--only", nargs="+", choices=("tiny", "small", "train"), default=["tiny", "small", "train"])
    p.add_argument("--compile", action="store_true", help="also time torch.compile (slow to compile on CPU)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, batch {args.batch}, {args.repeats} rounds")
    for size in ("tiny", "small"):
        if size in args.only:
            inference_ideas(f"deit_{size}_patch16_224", args.batch, args.repeats, args.compile)
    if "train" in args.only:
        training_ideas(args.batch, args.repeats)


if __name__ == "__main__":
    main()
