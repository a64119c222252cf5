"""Process-group set-up from torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK): NCCL on GPU, gloo on CPU.

Multi-node runs are torchrun's business (``--nnodes``, ``--rdzv-endpoint``); nothing here reads a ``--local-rank``
argument. Only rank 0 writes files or prints.

Restarts (``torchrun --max-restarts``): torchrun hands every attempt the same store (its agent's, at the same
MASTER_PORT), where the ranks of the failed attempt left their addresses; a restarted rank reading them connects to
a dead peer ("Gloo connectFullMesh failed ... Connection refused"). Each attempt therefore meets under a key prefix
of its own (``TORCHELASTIC_RESTART_COUNT``), so a restarted group re-forms.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from deit.runtime.device import resolve_device
from deit.runtime.typedconfig import ConfigError


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
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size, store=_attempt_store(world_size))
        initialized_here = True
    return DistEnv(rank, world_size, local_rank, dev, initialized_here)


def _attempt_store(world_size: int) -> dist.Store | None:
    """Under torchelastic, a client of the agent's store with a prefix for this restart attempt; otherwise None
    (``init_process_group``'s own env:// rendezvous)."""
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world_size, is_master=False,
                          timeout=timedelta(minutes=30))
    return dist.PrefixStore(f"deit/attempt_{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)


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


def on_main(env: DistEnv, fn):
    """``fn()`` computed on rank 0 and its result given to every rank; an error there is raised on every rank (as
    a ConfigError with its message), so no rank goes on alone or waits for rank 0 forever."""
    outcome = None
    if env.is_main:
        try:
            outcome = ("ok", fn())
        except Exception as exc:
            outcome = ("error", str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}")
    outcome = broadcast_object(outcome, env)
    if outcome[0] == "error":
        raise ConfigError(outcome[1])
    return outcome[1]


def gather_lists(items: list, env: DistEnv) -> list:
    """Every rank's ``items``, concatenated in rank order (on every rank)."""
    if not env.distributed:
        return list(items)
    gathered: list[list | None] = [None] * env.world_size
    dist.all_gather_object(gathered, list(items))
    return [item for part in gathered for item in (part or [])]


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
    "gather_lists",
    "init_distributed",
    "launched_rank",
    "on_main",
    "ranks_identical",
    "weights_digest",
]
