"""Epoch samplers for one process or DDP, resumable mid-epoch, seeding each sample's augmentation.

Each sampler defines an epoch's *stream*: one list of dataset indices for all ranks together, a pure function of
(seed, epoch). Rank ``r`` of ``R`` takes stream positions ``r, r + R, r + 2R, ...`` (disjoint shards), and yields
``(index, (seed, epoch, position))``: the loader seeds that sample's augmentation from the triple, so a sample is
augmented identically whatever the number of workers, their scheduling, or a restart.

Resuming mid-epoch: ``sampler.set_epoch(epoch, start_batch=k)`` skips the first ``k * batch_size`` samples of
this rank's shard (``batch_size`` given at construction); the batches that follow are exactly those an
uninterrupted run would have produced. ``len(sampler)`` is always the full epoch's per-rank length, so a schedule
computed from ``len(loader)`` does not change on resume. The next ``set_epoch`` starts at batch 0 again.

- ``RepeatAugSampler``: DeiT's repeated augmentation. The stream is ``U`` distinct images drawn from a seeded
  permutation, each repeated ``num_repeats`` times consecutively; ``U = ceil(N / num_repeats)`` rounded up so the
  stream splits evenly over ranks. The epoch therefore has about N samples (not N * repeats), every image in it
  appears exactly ``num_repeats`` times over all ranks, and with several ranks the copies land on different ranks.
- ``ShuffleSampler``: a seeded permutation, padded (wrapping) to a multiple of the number of ranks.
- ``EvalSampler``: ``0..N-1`` in order, split over ranks without padding: every sample exactly once; ranks
  may get lengths differing by one, so gather sums (correct, count) rather than assuming equal shards.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterator

import numpy as np
from torch.utils.data import Sampler


def dist_info(num_replicas: int | None = None, rank: int | None = None) -> tuple[int, int]:
    """(world size, rank): given values, else torch.distributed's when initialised, else (1, 0)."""
    if num_replicas is None or rank is None:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            num_replicas = dist.get_world_size() if num_replicas is None else num_replicas
            rank = dist.get_rank() if rank is None else rank
        else:
            num_replicas = 1 if num_replicas is None else num_replicas
            rank = 0 if rank is None else rank
    if num_replicas < 1 or not 0 <= rank < num_replicas:
        raise ValueError(f"rank {rank} is not in [0, {num_replicas})")
    return int(num_replicas), int(rank)


class EpochSampler(Sampler, ABC):
    """Base class: subclasses define ``total_size`` and ``stream()`` (the epoch's indices, all ranks)."""

    def __init__(self, num_items: int, *, num_replicas: int | None = None, rank: int | None = None,
                 seed: int = 0, batch_size: int = 1):
        if num_items < 1:
            raise ValueError("a sampler needs at least one item")
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        self.num_items = int(num_items)
        self.num_replicas, self.rank = dist_info(num_replicas, rank)
        self.seed = int(seed)
        self.batch_size = int(batch_size)
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        if epoch < 0 or start_batch < 0:
            raise ValueError(f"epoch and start_batch must be >= 0, got {epoch}, {start_batch}")
        self.epoch, self.start = int(epoch), int(start_batch) * self.batch_size

    @property
    @abstractmethod
    def total_size(self) -> int:
        """Length of the epoch's stream over all ranks."""

    @abstractmethod
    def stream(self) -> np.ndarray:
        """The epoch's dataset indices for all ranks, a pure function of (seed, epoch)."""

    def _rng(self) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch])

    def positions(self) -> range:
        """This rank's positions in the epoch stream (before ``start_batch`` is applied)."""
        return range(self.rank, self.total_size, self.num_replicas)

    def __iter__(self) -> Iterator[tuple[int, tuple[int, int, int]]]:
        order = self.stream()
        for p in self.positions()[self.start:]:
            yield int(order[p]), (self.seed, self.epoch, p)

    def __len__(self) -> int:
        return len(self.positions())


class RepeatAugSampler(EpochSampler):
    """Repeated augmentation (DeiT): each drawn image ``num_repeats`` times, epoch length about N."""

    def __init__(self, num_items: int, *, num_repeats: int = 3, shuffle: bool = True,
                 num_replicas: int | None = None, rank: int | None = None, seed: int = 0, batch_size: int = 1):
        super().__init__(num_items, num_replicas=num_replicas, rank=rank, seed=seed, batch_size=batch_size)
        if num_repeats < 1:
            raise ValueError(f"num_repeats must be >= 1, got {num_repeats}")
        self.num_repeats = int(num_repeats)
        self.shuffle = shuffle
        # Distinct images per epoch, rounded up so repeats * unique divides evenly over the ranks.
        step = self.num_replicas // math.gcd(self.num_repeats, self.num_replicas)
        self.num_unique = math.ceil(math.ceil(self.num_items / self.num_repeats) / step) * step

    @property
    def total_size(self) -> int:
        return self.num_unique * self.num_repeats

    def stream(self) -> np.ndarray:
        rng = self._rng()
        n_perm = math.ceil(self.num_unique / self.num_items)  # > 1 only for tiny data over many ranks
        if self.shuffle:
            order = np.concatenate([rng.permutation(self.num_items) for _ in range(n_perm)])
        else:
            order = np.tile(np.arange(self.num_items), n_perm)
        return np.repeat(order[: self.num_unique], self.num_repeats)


class ShuffleSampler(EpochSampler):
    """A seeded permutation per epoch, wrapped to a multiple of the ranks (``shuffle=False``: in order)."""

    def __init__(self, num_items: int, *, shuffle: bool = True, num_replicas: int | None = None,
                 rank: int | None = None, seed: int = 0, batch_size: int = 1):
        super().__init__(num_items, num_replicas=num_replicas, rank=rank, seed=seed, batch_size=batch_size)
        self.shuffle = shuffle

    @property
    def total_size(self) -> int:
        return math.ceil(self.num_items / self.num_replicas) * self.num_replicas

    def stream(self) -> np.ndarray:
        order = self._rng().permutation(self.num_items) if self.shuffle else np.arange(self.num_items)
        return np.resize(order, self.total_size)  # wraps around to pad


class EvalSampler(EpochSampler):
    """Every sample exactly once over all ranks, in order, no padding."""

    @property
    def total_size(self) -> int:
        return self.num_items

    def stream(self) -> np.ndarray:
        return np.arange(self.num_items)
