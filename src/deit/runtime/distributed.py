"""Process-group set-up from torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK): NCCL on GPU, gloo on CPU.

Multi-node runs are torchrun's business (``--nnodes``, ``--rdzv-endpoint``); nothing here reads a ``--local-rank``
argument. Only rank 0 writes files or prints.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from deit.runtime.device import resolve_device


@dataclass
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    initialized_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def launched_rank() -> int:
    """This process's rank as torchrun set it (0 when not launched by torchrun)."""
    return int(os.environ.get("RANK", "0"))


def init_distributed(device: str = "auto") -> DistEnv:
    """Join the process group torchrun describes in the environment (or run alone without one)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world_size <= 1:
        return DistEnv(device=dev)
    initialized_here = False
    if not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
        initialized_here = True
    return DistEnv(rank, world_size, local_rank, dev, initialized_here)


def cleanup(env: DistEnv) -> None:
    if env.initialized_here and dist.is_initialized():
        dist.destroy_process_group()


def barrier(env: DistEnv) -> None:
    if env.distributed:
        dist.barrier()


def all_reduce_sum(values: list[float], env: DistEnv, device: torch.device | None = None) -> list[float]:
    """Sum a list of numbers over ranks (in float64, so counts stay exact)."""
    if not env.distributed:
        return [float(v) for v in values]
    t = torch.tensor(values, dtype=torch.float64, device=device or env.device)
    dist.all_reduce(t)
    return t.tolist()


def broadcast_object(obj, env: DistEnv):
    if not env.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def weights_digest(model: torch.nn.Module) -> str:
    """sha256 of every tensor of a state dict, in order: equal digests mean bit-identical weights."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def ranks_identical(model: torch.nn.Module, env: DistEnv) -> bool:
    """Whether every rank holds bit-identical weights."""
    if not env.distributed:
        return True
    digests: list[str | None] = [None] * env.world_size
    dist.all_gather_object(digests, weights_digest(model))
    return len(set(digests)) == 1


__all__ = [
    "DistEnv",
    "all_reduce_sum",
    "barrier",
    "broadcast_object",
    "cleanup",
    "init_distributed",
    "launched_rank",
    "ranks_identical",
    "weights_digest",
]
