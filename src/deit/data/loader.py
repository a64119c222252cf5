"""``build_loader``: data set + transform + sampler + DataLoader, reproducible to the sample.

The output contract (what the trainer, evaluation, the teacher-output cache and any stage after the loader, such
as a device-side augmentation stage, may rely on). Iterating a loader yields ``(images, labels)``:

- ``images``: ``torch.float32``, shape ``(B, 3, H, W)`` with ``H == W == preprocessing.input_size`` (the model's),
  contiguous, on the CPU (in pinned memory when ``pin_memory`` is on and CUDA is available: the caller moves it).
- values: normalised in the workers with the model's ``preprocessing.mean`` / ``std`` (per channel,
  ``(x / 255 - mean) / std``, x the 8-bit RGB value), so about zero-mean, unit-variance; not clipped. The order in a
  worker is: decode to 8-bit RGB, crop (resized or padded), flip, RandAugment (all on 8-bit images), normalise,
  then random erasing on the normalised tensor (its noise is N(0, 1) in normalised units). Eval loaders: resize
  the shorter side, centre crop, normalise.
- ``labels``: ``torch.int64``, shape ``(B,)``, class indices into ``dataset.classes``. Hard labels always: mixup,
  cutmix and label smoothing come after the loader (``deit.data.mixup``, seeded by the trainer).
- which samples: train loaders (``augment``) drop the last incomplete batch and follow the epoch's stream of
  ``deit.data.samplers``; eval loaders keep every sample exactly once over all ranks, in data set order.
- bad images: with ``on_bad_image=skip`` an unreadable image is replaced by another sample of the split (a pure
  function of its index) and named in ``loader.bad_images`` for the current pass; with ``fail`` the pass raises
  ``BadImageError`` naming the file (in the main process, as itself).
- what decides a sample: its data set index and ``(seed, epoch, position)`` (below), nothing else.
- with ``data.device_augment`` (train loaders): ``images`` is a ``DeviceBatch`` instead (below): uint8 pixels in
  [0, 255], unnormalised, plus the drawn parameters; ``DeviceAugment`` on the device turns it into exactly the
  float batch above (same values, same order); labels and the rest of this contract stay as they are.

Each sample's augmentation is drawn from ``numpy.random.default_rng([seed, epoch, position])`` where position is
its place in the epoch's stream over all ranks (see ``deit.data.samplers``). Hence the same seed gives the same
batches with 0 or N workers, and a run resumed with ``loader.sampler.set_epoch(epoch, start_batch=k)`` yields
exactly the batches k, k+1, ... of the uninterrupted run. Mixup is separate: it is seeded by the trainer through
the generator it passes to ``Mixup``. Workers' global RNGs (python, numpy, torch) are also seeded from ``seed``
via the DataLoader's generator, for any user transform that uses them.

With ``data.device_augment`` (train loaders only: ``augment`` true), the workers decode, cut out the crop box and
draw every random choice of the recipe from the same per-sample generator, in the same order; a batch is then
``(DeviceBatch, labels)``: ``DeviceBatch.images`` the uint8 pixels of each sample's crop box (not resized, flipped
or normalised), back to back, and ``DeviceBatch.params`` the drawn parameters of the rest of the recipe. The
training device turns it into the float batch the worker path would have sent, with
``deit.data.device_augment.DeviceAugment`` (the task does, before mixup). Move it with ``batch.to(device)``;
pinning works as for tensors. Evaluation loaders are unaffected.

A data error in a worker (``on_bad_image=fail``: the file that cannot be read) reaches the main process as itself,
its type and its one-line message, not as torch's wrapper with the worker's traceback; and the workers end with
every failure of a pass, with ``Loader.close()``, and at the latest when the process exits (they ignore SIGTERM,
which would otherwise leave ``multiprocessing``'s exit handler waiting on them forever).
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import importlib
import inspect
import weakref

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, default_collate, get_worker_info

from deit.data.config import DataConfig
from deit.data.datasets import ImageDataset, build_dataset
from deit.data.device_augment import DeviceAugmentWorker, DeviceBatch, DeviceSample
from deit.data.images import DataError
from deit.data.samplers import EpochSampler, EvalSampler, RepeatAugSampler, ShuffleSampler, dist_info
from deit.data.transforms import Compose, SampleKey, build_transform
from deit.models.preprocessing import Preprocessing
from deit.runtime.signals import ignore_stop_signals

# The modules whose code decides what a sample of the stream looks like (decoding, transforms, mixing, order).
STREAM_MODULES = ("images", "transforms", "randaugment", "three_augment", "mixup", "samplers", "loader",
                  "device_augment", "device_steps", "device_ops", "device_resize", "device_simple_crop",
                  "device_three_augment")


@functools.cache
def stream_code_digest() -> str:
    """A digest of the code that turns files into the stream's batches (the modules of ``STREAM_MODULES``): what
    is keyed by it (a teacher-output cache) is never reused once that code changes. An edited comment costs a
    rebuild; a stale cache would cost silently wrong targets."""
    digest = hashlib.sha256()
    for name in STREAM_MODULES:
        digest.update(inspect.getsource(importlib.import_module(f"deit.data.{name}")).encode())
    return digest.hexdigest()[:16]

# A sample or a batch, or the data error a worker met while loading it (raised again by the loader, as itself).
Sample = tuple[torch.Tensor | DeviceSample, int, tuple[str, ...]] | DataError
Batch = tuple[torch.Tensor | DeviceBatch, torch.Tensor, list[str]] | DataError
Transform = Compose | DeviceAugmentWorker


class TransformedDataset(Dataset):
    """``ds[(index, (seed, epoch, position))] -> (tensor, label)``; a plain int key seeds from (0, 0, index)."""

    def __init__(self, base: ImageDataset, transform: Transform):
        self.base = base
        self.transform = transform

    @property
    def classes(self) -> list[str]:
        return self.base.classes

    @property
    def targets(self) -> list[int]:
        return self.base.targets

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key: int | tuple[int, tuple[int, int, int]]) -> Sample:
        """(image tensor, label, errors of the unreadable files replaced to get this sample); in a worker, a
        ``DataError`` is returned rather than raised, so that the loader raises it in the main process as is."""
        index, seed = key if isinstance(key, tuple) else (key, (0, 0, key))
        try:
            img, label, bad = self.base.fetch(index)
        except DataError as exc:
            if get_worker_info() is None:
                raise
            return exc
        return self.transform(img, np.random.default_rng(seed), SampleKey(seed[0], seed[1], index)), label, tuple(bad)


def collate(batch: list[Sample], stack=default_collate) -> Batch:
    """The batch (its images put together by ``stack``), or the first data error a worker met while loading it."""
    failed = next((s for s in batch if isinstance(s, DataError)), None)
    if failed is not None:
        return failed
    images, labels, bad = zip(*batch, strict=True)
    return stack(list(images)), default_collate(list(labels)), [e for errors in bad for e in errors]


class Loader(DataLoader):
    """A DataLoader of ``(images, labels)`` batches that also collects, from every worker, the unreadable images
    replaced during the current pass over it (``bad_images``, reset when a new pass starts).

    A data error met by a worker is raised here as itself; a pass that fails or is left before its end (its
    generator closed) ends its workers, persistent ones too: a later pass starts new ones."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.bad_images: list[str] = []
        self._pass = None  # the current pass's iterator: it owns the worker processes
        if self.num_workers > 0:
            _OPEN.add(self)

    def __iter__(self):
        self.bad_images = []
        self._pass = super().__iter__()
        try:
            for batch in self._pass:
                if isinstance(batch, DataError):
                    raise batch
                images, labels, bad = batch
                self.bad_images.extend(bad)
                yield images, labels
        except BaseException:  # an error, an interrupt, or a pass left early (GeneratorExit): end its workers
            self.close()
            raise

    def close(self) -> None:
        """End the worker processes now (a later pass starts new ones)."""
        current, self._pass = self._pass, None
        self._iterator = None  # with persistent workers, DataLoader's own reference to ``current``
        # torch's multi-process iterator (private, stable since torch 1.x); the in-process one has no workers
        shutdown = getattr(current, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()
        for worker in getattr(current, "_workers", ()):
            if worker.is_alive():  # stuck past the shutdown's grace period, and deaf to SIGTERM
                worker.kill()
                worker.join()


_OPEN: weakref.WeakSet[Loader] = weakref.WeakSet()


@atexit.register  # before multiprocessing's own exit handler (registered earlier, run later), which would wait
def _close_open_loaders() -> None:  # forever on a worker that ignores its SIGTERM
    for loader in list(_OPEN):
        loader.close()


def resolve_distributed(distributed) -> tuple[int, int]:
    """None: torch.distributed's world when initialised, else one process. False: one process. True: must be
    initialised. (num_replicas, rank): as given (tests, custom launchers)."""
    if distributed is None:
        return dist_info()
    if distributed is False:
        return 1, 0
    if distributed is True:
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError("distributed=True but torch.distributed is not initialised")
        return dist_info()
    num_replicas, rank = distributed
    return dist_info(int(num_replicas), int(rank))


def build_sampler(cfg: DataConfig, num_items: int, augment: bool, *, seed: int = 0,
                  distributed=None) -> EpochSampler:
    num_replicas, rank = resolve_distributed(distributed)
    if not augment:
        return EvalSampler(num_items, num_replicas=num_replicas, rank=rank, seed=seed, batch_size=cfg.batch_size)
    if cfg.repeated_aug:
        return RepeatAugSampler(num_items, num_repeats=cfg.num_repeats, num_replicas=num_replicas, rank=rank,
                                seed=seed, batch_size=cfg.batch_size)
    return ShuffleSampler(num_items, num_replicas=num_replicas, rank=rank, seed=seed, batch_size=cfg.batch_size)


def build_loader(cfg: DataConfig, split: str = "train", *, preprocessing: Preprocessing, seed: int = 0,
                 distributed=None, dataset: ImageDataset | None = None, augment: bool | None = None
                 ) -> Loader:
    """A DataLoader of ``(images, labels)`` batches; ``loader.sampler.set_epoch(epoch, start_batch=0)`` each epoch.

    ``augment`` (default: split == "train") picks the train transform, the shuffling/repeating sampler and
    ``drop_last``; otherwise the eval transform and an in-order sampler that visits each sample once over all
    ranks. With ``cfg.device_augment`` a train loader yields ``DeviceBatch`` images (see the module docstring).
    ``dataset`` reuses an already built data set. ``loader.dataset.classes`` names the classes.
    """
    ds = build_dataset(cfg, split) if dataset is None else dataset
    augment = split == "train" if augment is None else augment
    sampler = build_sampler(cfg, len(ds), augment, seed=seed, distributed=distributed)
    workers = cfg.num_workers
    transform: Transform = build_transform(cfg, augment, preprocessing)
    collate_fn = collate
    if augment and cfg.device_augment:
        transform = DeviceAugmentWorker.build(cfg, preprocessing)
        collate_fn = functools.partial(collate, stack=transform.collate)
    loader = Loader(
        TransformedDataset(ds, transform),
        batch_size=cfg.batch_size,
        sampler=sampler,
        num_workers=workers,
        pin_memory=cfg.pin_memory and torch.cuda.is_available(),
        drop_last=augment,
        persistent_workers=cfg.persistent_workers and workers > 0,
        generator=torch.Generator().manual_seed(seed),
        collate_fn=collate_fn,
        worker_init_fn=ignore_stop_signals if workers > 0 else None,
    )
    if len(loader) == 0:
        raise DataError(f"the {split} loader has no batches: {len(sampler)} samples per process, fewer than "
                        f"batch_size={cfg.batch_size} (last incomplete batch dropped); lower batch_size")
    return loader
