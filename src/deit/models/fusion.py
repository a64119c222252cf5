"""CPU inference with oneDNN's fused linear: an explicit transformation of a ViT into an inference-only copy.

On CPU, a Linear is a GEMM plus a pass that copies the bias into the output, and GELU and the residual add are one
more pass each over the same activations. oneDNN's linear (``torch.ops.mkldnn._linear_pointwise``) applies bias,
GELU or the residual add while the output tile is still in cache: the same maths (max abs difference ~1e-6),
10-25% less time per block. The op has no autograd formula and is used here for float32 only, so the fused model
is for inference: eval mode, no gradients, float32 on the CPU, no autocast (it raises otherwise).

:func:`fuse_for_cpu_inference` returns the fused copy or raises ValueError naming every block option it cannot
fuse; :func:`cpu_inference_model` returns the fused copy where it applies and the model itself elsewhere (what
evaluation, prediction and the benchmark call). Every option of a block is handled or refused:

- LayerScale (``ls1``/``ls2``): folded into the branch's output projection, gamma * (W h + b) = (gamma W) h +
  gamma b, at each forward from the current gammas (two small element-wise products per block);
- dropout, attention dropout, stochastic depth: no-ops at inference, skipped; qkv without bias: handled;
- any layer other than the stock ones (a subclass of Block, Attention or Mlp; another module in place of a
  Linear, of GELU(approximate="none"), of a dropout or a drop path, or of LayerScale; a parametrization):
  refused, since the fused block would compute something else;
- a forward hook or pre-hook on any module of the model, or a global one: refused, since the fused blocks do
  not call their layers and a hook elsewhere would be called from a copy;
- parameters or buffers other than float32 on the CPU, or a torch build without a working oneDNN op: refused.

The copy never changes the model: its modules are new, and its parameters are new tensors sharing the model's
storage, so the transformation costs ~11 ms of CPU (DeiT-Ti to DeiT-B). At its first call each fused block packs
its four linears' weights (LayerScale folded in) into oneDNN's blocked layout: a copy of those weights (0.16 s for
DeiT-B), bit for bit the same results, 5-7% less time per GEMM (``FusedBlock.linears``). It packs again whenever a
source tensor changed in place since (its version counter: an optimizer step, load_state_dict), so the copy computes
with the model's current weights; a change through ``.data`` (which bypasses the counter), to a model made under
``torch.inference_mode`` (whose tensors have no counter), or a parameter the model replaces (reset_classifier,
set_img_size, .to()), is not seen: fuse again. Moving or casting the copy leaves the model where it is.
``deit.inference.evaluation.evaluate`` fuses anew at each call, so validation during training always sees the
current weights.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.module import _global_forward_hooks, _global_forward_pre_hooks

from deit.models.layers import DropPath
from deit.models.vit_blocks import Attention, Block, LayerScale, Mlp


@functools.cache
def _onednn_linear_works() -> bool:
    """Whether this torch build has oneDNN's fused linear and it agrees with Linear -> GELU (checked once)."""
    try:
        op = torch.ops.mkldnn._linear_pointwise
        x, w, b = torch.linspace(-2, 2, 24).view(2, 3, 4), torch.linspace(-1, 1, 20).view(5, 4), torch.ones(5)
        with torch.no_grad():
            fused = op(x, w, b, "gelu", [], "none")
        return torch.allclose(fused, F.gelu(F.linear(x, w, b)), atol=1e-5)
    except (AttributeError, RuntimeError):
        return False


def _cpu_autocast_enabled() -> bool:
    try:
        return torch.is_autocast_enabled("cpu")
    except TypeError:  # torch < 2.4
        return torch.is_autocast_cpu_enabled()


def _block_problems(name: str, block: nn.Module) -> list[str]:
    """Why ``block`` (named ``name`` in the model) cannot become a FusedBlock: one line per layer."""
    if type(block) is not Block:
        return [f"{name} is a {type(block).__name__}, not deit's Block"]
    attn, mlp = block.attn, block.mlp
    if type(attn) is not Attention or type(mlp) is not Mlp:
        return [f"{name}: attention or MLP is not deit's ({type(attn).__name__}, {type(mlp).__name__})"]
    expected: dict[str, tuple[nn.Module | None, tuple[type, ...]]] = {
        "attn.qkv": (attn.qkv, (nn.Linear,)), "attn.proj": (attn.proj, (nn.Linear,)),
        "mlp.fc1": (mlp.fc1, (nn.Linear,)), "mlp.fc2": (mlp.fc2, (nn.Linear,)), "mlp.act": (mlp.act, (nn.GELU,)),
        "attn.proj_drop": (attn.proj_drop, (nn.Dropout,)), "mlp.drop": (mlp.drop, (nn.Dropout,)),
        "drop_path1": (block.drop_path1, (DropPath,)), "drop_path2": (block.drop_path2, (DropPath,)),
        "ls1": (block.ls1, (LayerScale, type(None))), "ls2": (block.ls2, (LayerScale, type(None))),
    }
    problems = [f"{name}.{part} is a {type(m).__name__}, which the fused block does not compute"
                for part, (m, types) in expected.items() if type(m) not in types]
    if type(mlp.act) is nn.GELU and mlp.act.approximate != "none":
        problems.append(f"{name}.mlp.act is GELU(approximate={mlp.act.approximate!r}); the fused kernel is exact GELU")
    return problems


def fusion_problems(model: nn.Module) -> list[str]:
    """Why :func:`fuse_for_cpu_inference` would refuse ``model``: one line per reason, empty when it can fuse."""
    if not _onednn_linear_works():
        return ["this torch build has no working oneDNN fused linear (torch.ops.mkldnn._linear_pointwise)"]
    problems: list[str] = []
    blocks = [(n, m) for n, m in model.named_modules() if isinstance(m, (Block, FusedBlock))]
    if not blocks:
        problems.append(f"{type(model).__name__} has no ViT blocks (deit.models.vit_blocks.Block) to fuse")
    for name, block in blocks:
        problems += _block_problems(name, block)
    if _global_forward_hooks or _global_forward_pre_hooks:
        problems.append("a global forward hook is registered (torch.nn.modules.module.register_module_forward_hook)")
    problems += [f"{name or 'the model'} has a forward hook; the fused model would skip it or call it from a copy"
                 for name, m in model.named_modules() if m._forward_hooks or m._forward_pre_hooks]
    kinds = {(t.dtype, t.device.type) for t in (*model.parameters(), *model.buffers())}
    if kinds - {(torch.float32, "cpu")}:
        found = ", ".join(sorted(f"{dtype} on {device}" for dtype, device in kinds))
        problems.append(f"its tensors are {found}; the fused kernels are for float32 on the CPU")
    return problems


def fuse_for_cpu_inference(model: nn.Module) -> nn.Module:
    """An inference-only copy of ``model`` whose ViT blocks run oneDNN's fused linear; same logits (max abs
    difference ~1e-6). Raises ValueError naming every reason when it cannot (see the module's docstring)."""
    problems = fusion_problems(model)
    if problems:
        raise ValueError("cannot fuse this model for CPU inference: " + "; ".join(problems) +
                         ". Run the model as it is (deit.models.fusion.cpu_inference_model does that by itself)")
    return _fused_copy(model)


def cpu_inference_model(model: nn.Module) -> nn.Module:
    """``fuse_for_cpu_inference(model)`` where it applies (a float32 ViT with stock blocks on the CPU and a torch
    build with the op), else ``model`` itself. The caller runs it without autocast and without gradients."""
    return model if fusion_problems(model) else _fused_copy(model)


def _fused_copy(model: nn.Module) -> nn.Module:
    # New tensors on the same storage: the copy shares the weights but nothing done to it reaches the model.
    tensors: dict[int, torch.Tensor] = {id(p): nn.Parameter(p.detach(), requires_grad=False)
                                        for p in model.parameters()}
    tensors.update({id(b): b.detach() for b in model.buffers()})
    fused = _copy_tree(model, tensors)  # in eval mode throughout
    for parent in list(fused.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is Block:
                setattr(parent, name, FusedBlock(child))
    return fused


def _copy_tree(module: nn.Module, tensors: dict[int, torch.Tensor]) -> nn.Module:
    """A new module tree over ``tensors``: every module shallow-copied with its containers (submodules,
    parameters, buffers, hook dicts, lists, sets) copied one level, so nothing done to the copy reaches the
    original. Much cheaper than copy.deepcopy, which visits every attribute of every module."""
    attributes = {k: v.copy() if isinstance(v, (dict, list, set)) else v for k, v in module.__dict__.items()}
    attributes.update(
        training=False,
        _parameters={k: None if p is None else tensors[id(p)] for k, p in module._parameters.items()},
        _buffers={k: None if b is None else tensors[id(b)] for k, b in module._buffers.items()},
        _modules={k: None if m is None else _copy_tree(m, tensors) for k, m in module._modules.items()},
    )
    new = object.__new__(type(module))
    object.__setattr__(new, "__dict__", attributes)  # past Module.__setattr__: the attributes are all there
    return new


class FusedBlock(nn.Module):
    """A Block for CPU inference: oneDNN does bias, GELU and the residual add inside each GEMM, LayerScale is
    folded into the output projections. Its layers are the Block's (same state-dict keys), in eval mode for good."""

    TAKES_PREFIX = True  # like Block: forward(x, prefix=n) computes the first n tokens' outputs alone

    def __init__(self, block: Block) -> None:
        super().__init__()
        self.norm1, self.attn, self.ls1 = block.norm1, block.attn, block.ls1
        self.norm2, self.mlp, self.ls2 = block.norm2, block.mlp, block.ls2
        self._packed: tuple[tuple[int, ...], list[Linear]] | None = None  # (source versions, the four linears)
        self.train(False)

    def linears(self) -> list[Linear]:
        """(weight, bias) of qkv, proj, fc1 and fc2, LayerScale folded into proj and fc2, the weights in oneDNN's
        packed layout (see ``_pack``). Made at the first forward, and made again whenever a source tensor was changed
        in place since (its version counter moved: an optimizer step, ``load_state_dict``), so the copy computes
        with the current weights; a change through ``.data`` bypasses the counter: fuse again after one."""
        attn, mlp = self.attn, self.mlp
        layers = [(attn.qkv, None), (attn.proj, self.ls1), (mlp.fc1, None), (mlp.fc2, self.ls2)]
        sources = [t for layer, ls in layers for t in (layer.weight, layer.bias, None if ls is None else ls.gamma)
                   if t is not None]
        versions = tuple(-1 if t.is_inference() else t._version for t in sources)  # inference tensors: no counter
        if self._packed is None or self._packed[0] != versions:
            with torch.no_grad():
                packed = [_scaled(layer, ls) for layer, ls in layers]
                self._packed = (versions, [(_pack(w), b) for w, b in packed])
        return self._packed[1]

    def train(self, mode: bool = True) -> FusedBlock:
        if mode:
            raise ValueError("a model fused for CPU inference cannot train: train the model it was made from")
        return super().train(False)

    def forward(self, x: torch.Tensor, prefix: int | None = None) -> torch.Tensor:
        if x.device.type != "cpu" or x.dtype != torch.float32 or _cpu_autocast_enabled():
            raise ValueError(f"a model fused for CPU inference takes float32 CPU inputs without autocast; got "
                             f"{x.dtype} on {x.device}{' under autocast' if _cpu_autocast_enabled() else ''}: run "
                             "the original model instead")
        if torch.is_grad_enabled() and x.requires_grad:
            raise ValueError("a model fused for CPU inference computes no gradients: run the original model")
        linear = torch.ops.mkldnn._linear_pointwise
        qkv_w, proj_w, fc1_w, fc2_w = self.linears()
        qkv = linear(self.norm1(x), *qkv_w, "none", [], "")
        if prefix is not None:
            x = x[:, :prefix].contiguous()  # the residual operand of the fused add
        x = linear.binary(self.attn.attend(qkv, prefix), x, *proj_w, "add")
        h = linear(self.norm2(x), *fc1_w, "gelu", [], "none")
        return linear.binary(h, x, *fc2_w, "add")


Linear = tuple[torch.Tensor, torch.Tensor | None]  # (weight, bias) as oneDNN's linear takes them


def _pack(weight: torch.Tensor) -> torch.Tensor:
    """``weight`` in oneDNN's blocked layout for its linear, where this torch build can: the same results bit for
    bit, 5-7% less time per GEMM than the plain layout at DeiT sizes (measured on an AVX2 EPYC, 2026-12-07); a copy
    of the weight, made once per fused block."""
    return torch.ops.mkldnn._reorder_linear_weight(weight.contiguous(), None) if _packing_works() else weight


@functools.cache
def _packing_works() -> bool:
    """Whether oneDNN's linear takes a packed weight and agrees with the plain one (checked once)."""
    try:
        x, w, b = torch.linspace(-2, 2, 24).view(2, 3, 4), torch.linspace(-1, 1, 20).view(5, 4), torch.ones(5)
        with torch.no_grad():
            op = torch.ops.mkldnn._linear_pointwise
            packed = op(x, torch.ops.mkldnn._reorder_linear_weight(w, None), b, "none", [], "")
            return torch.allclose(packed, op(x, w, b, "none", [], ""), atol=1e-6)
    except (AttributeError, RuntimeError):
        return False


def _scaled(layer: nn.Linear, ls: LayerScale | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The weight and bias of ``ls(layer(h))`` as one linear: LayerScale's gamma folded into the rows."""
    if ls is None:
        return layer.weight, layer.bias
    gamma = ls.gamma
    return layer.weight * gamma[:, None], None if layer.bias is None else layer.bias * gamma


__all__ = ["FusedBlock", "cpu_inference_model", "fuse_for_cpu_inference", "fusion_problems"]
