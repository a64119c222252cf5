"""The teacher-output cache: the teacher's outputs on every view of a run's data stream, stored once, read by every
run with that stream (a sweep over student settings, the students of a study, a restart from scratch).

A sample's augmentation is a pure function of (seed, epoch, position) and mixup is seeded by (seed, rank, epoch,
micro-batch), so what the teacher sees is fixed by the *stream*: the data (its content, split, subset), the
augmentation and mixup settings and the version of the code that applies them, the student's input
preprocessing, the seed, the per-device batch and the world size — not by the student. :func:`stream_key` writes
that down; a cache records it and refuses any other stream, naming the keys that differ. Model, optimizer, lr and
the number of epochs (up to the cache's) may change.

    DIR/cache.json                the key, what is stored, its geometry, who filled it
    DIR/e<epoch>-r<rank>.bin      one part per (epoch, student rank): a record per sample, in stream order

Records hold, per sample: ``argmax`` (hard distillation), ``logits`` (soft; bf16, fp16 or fp32), or ``topk``
(the k largest logits and their classes, plus the log of the remaining probability mass, which is spread evenly
over the other classes when the logits are rebuilt). A part is written whole, atomically: a partly built cache
has only whole parts, and building again resumes at the first missing one.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from deit.data.config import DataConfig
from deit.data.loader import stream_code_digest
from deit.runtime.files import atomic_path, atomic_write_text
from deit.runtime.typedconfig import dict_differences, keys_where
from deit.train.config import ConfigError
from deit.train.task import derive_seed, mix

FORMAT = "deit-teacher-cache"
VERSION = 1
OUTPUTS = ("argmax", "logits", "topk")
STORAGE = {"bfloat16": "<u2", "float16": "<f2", "float32": "<f4"}
# Data settings that do not change what the teacher sees (loader speed, label-side settings): the fields that
# declare stream=False (deit.runtime.typedconfig.setting).
NOT_IN_STREAM = keys_where(DataConfig, "stream", False)


def stream_code() -> str:
    """The version of the code that makes the stream: the data pipeline's and the task's mixing (seeds, mixup)."""
    mixing = hashlib.sha256((inspect.getsource(mix) + inspect.getsource(derive_seed)).encode()).hexdigest()[:8]
    return f"{stream_code_digest()}-{mixing}"


def stream_key(cfg, preprocessing, world_size: int, data_fingerprint: str, teacher: dict) -> dict:
    """What fixes the teacher's inputs and outputs over a run: see the module docstring."""
    data = {k: v for k, v in cfg.data.to_dict().items() if k not in NOT_IN_STREAM}
    return {
        "code": stream_code(),
        "data": {**data, "fingerprint": data_fingerprint},
        "input": {"size": preprocessing.input_size, "mean": list(preprocessing.mean), "std": list(preprocessing.std)},
        "seed": cfg.seed,
        "world_size": world_size,
        "teacher": teacher,
    }


@dataclass
class CacheMeta:
    key: dict
    outputs: str  # argmax | logits | topk
    storage: str  # bfloat16 | float16 | float32 (logits and top-k values)
    num_classes: int
    epochs: int  # the epochs the cache is meant to hold (parts may still be missing)
    ranks: int  # student world size
    batch_size: int  # per student rank
    batches: int  # micro-batches per epoch and rank
    teacher_batch_size: int
    filled_by: str  # "build" (deit teacher-cache build) or "run" (a training run, on the fly)
    top_k: int = 0
    format: str = FORMAT
    version: int = VERSION
    notes: list[str] = field(default_factory=list)

    @property
    def samples(self) -> int:
        """Samples per part."""
        return self.batches * self.batch_size

    def record_dtype(self) -> np.dtype:
        index = "<i2" if self.num_classes < 2**15 else "<i4"
        if self.outputs == "argmax":
            return np.dtype([("argmax", index)])
        if self.outputs == "logits":
            return np.dtype([("logits", STORAGE[self.storage], (self.num_classes,))])
        return np.dtype([("values", STORAGE[self.storage], (self.top_k,)), ("indices", index, (self.top_k,)),
                         ("rest", "<f4")])

    @property
    def bytes_per_sample(self) -> int:
        return self.record_dtype().itemsize

    @property
    def bytes_per_epoch(self) -> int:
        return self.bytes_per_sample * self.samples * self.ranks

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1) + "\n"


# --------------------------------------------------------------------------------------------- encode / decode
def _to_storage(t: torch.Tensor, storage: str) -> np.ndarray:
    if storage == "bfloat16":
        return t.to(torch.bfloat16).view(torch.int16).cpu().numpy().view("<u2")
    return t.to(torch.float16 if storage == "float16" else torch.float32).cpu().numpy()


def _from_storage(a: np.ndarray, storage: str, device: torch.device) -> torch.Tensor:
    a = np.array(a)  # a copy: the part is a read-only memory map
    t = torch.from_numpy(a.view("<i2") if storage == "bfloat16" else a)
    t = t.view(torch.bfloat16) if storage == "bfloat16" else t
    return t.to(device).float()


def encode(meta: CacheMeta, logits: torch.Tensor) -> np.ndarray:
    """Records for a (B, C) float32 batch of teacher logits."""
    records = np.zeros(logits.shape[0], dtype=meta.record_dtype())
    if meta.outputs == "argmax":
        records["argmax"] = logits.argmax(dim=1).cpu().numpy()
    elif meta.outputs == "logits":
        records["logits"] = _to_storage(logits, meta.storage)
    else:
        values, indices = logits.topk(meta.top_k, dim=1)
        rest = logits.scatter(1, indices, float("-inf")).logsumexp(dim=1) if meta.top_k < meta.num_classes else \
            torch.full((logits.shape[0],), float("-inf"))
        records["values"], records["indices"] = _to_storage(values, meta.storage), indices.cpu().numpy()
        records["rest"] = rest.cpu().numpy()
    return records


def decode(meta: CacheMeta, records: np.ndarray, device: torch.device) -> torch.Tensor:
    """(B, C) float32 logits from records: the stored logits; for argmax a one-hot (its argmax is the teacher's);
    for top-k the k logits with the remaining mass spread evenly over the other classes."""
    if meta.outputs == "argmax":
        index = torch.from_numpy(np.array(records["argmax"], dtype=np.int64)).to(device)
        return F.one_hot(index, meta.num_classes).float()
    if meta.outputs == "logits":
        return _from_storage(records["logits"], meta.storage, device)
    values = _from_storage(records["values"], meta.storage, device)
    indices = torch.from_numpy(np.array(records["indices"], dtype=np.int64)).to(device)
    others = meta.num_classes - meta.top_k
    rest = torch.from_numpy(np.array(records["rest"])).to(device)
    fill = rest - math.log(others) if others else rest
    full = fill[:, None].expand(-1, meta.num_classes).clone()
    return full.scatter_(1, indices, values)


# ------------------------------------------------------------------------------------------------------ files
def part_path(root: Path, epoch: int, rank: int) -> Path:
    return root / f"e{epoch:04d}-r{rank:03d}.bin"


def read_meta(root: Path) -> CacheMeta | None:
    path = root / "cache.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        meta = CacheMeta(**data)
    except (json.JSONDecodeError, TypeError) as exc:
        raise ConfigError(f"{path} is not a teacher cache's description ({exc}): remove {root} and build it "
                          "again") from None
    if meta.format != FORMAT or meta.version != VERSION:
        raise ConfigError(f"{root} holds a {meta.format} v{meta.version} cache; this deit reads {FORMAT} v{VERSION}")
    return meta


def write_meta(root: Path, meta: CacheMeta) -> None:
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(root / "cache.json", meta.to_json())


def write_part(root: Path, meta: CacheMeta, epoch: int, rank: int, records: np.ndarray) -> None:
    if records.shape != (meta.samples,):
        raise ValueError(f"a part holds {meta.samples} records, got {records.shape}")
    with atomic_path(part_path(root, epoch, rank)) as tmp:
        records.tofile(tmp)


def part_state(root: Path, meta: CacheMeta, epoch: int, rank: int) -> str:
    """"ok", "missing" or "truncated" (a file of the wrong size)."""
    path = part_path(root, epoch, rank)
    if not path.is_file():
        return "missing"
    return "ok" if path.stat().st_size == meta.samples * meta.bytes_per_sample else "truncated"


def missing_epochs(root: Path, meta: CacheMeta, epochs: int, rank: int | None = None) -> list[int]:
    """The epochs below ``epochs`` with a part missing (for ``rank``, or for any rank); a truncated part is an
    error naming the file and the fix."""
    missing = []
    for e in range(epochs):
        for r in range(meta.ranks) if rank is None else (rank,):
            state = part_state(root, meta, e, r)
            if state == "truncated":
                path = part_path(root, e, r)
                raise ConfigError(f"teacher cache part {path} is truncated ({path.stat().st_size} bytes, expected "
                                  f"{meta.samples * meta.bytes_per_sample}): delete it and run `deit teacher-cache "
                                  "build` again (it resumes at the missing parts)")
            if state == "missing":
                missing.append(e)
                break
    return missing


def check_compatible(root: Path, meta: CacheMeta, key: dict, distillation_type: str) -> None:
    """The cache's stream is the run's, and it stores what the run's distillation needs."""
    diffs = dict_differences(meta.key, key)
    if diffs:
        shown = "; ".join(diffs[:8]) + (f"; and {len(diffs) - 8} more" if len(diffs) > 8 else "")
        raise ConfigError(f"teacher cache {root} was built for another data stream ({shown}): use a cache built "
                          "for this run's data, augmentation, seed, batch and world size (deit teacher-cache build "
                          "with this run's config), or another distillation.teacher_cache directory")
    if distillation_type == "soft" and meta.outputs == "argmax":
        raise ConfigError(f"teacher cache {root} holds the teacher's argmax only (built for hard distillation); "
                          "soft distillation needs its logits: build a cache with --outputs logits (or topk)")


def format_bytes(n: int) -> str:
    """``n`` bytes in the largest binary unit that keeps it at or above 1 (``512 B``, ``3.4 KiB``, ``1.2 GiB``)."""
    size, unit = float(n), "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            break
        size /= 1024
    return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"


def describe_cache(root: str | Path) -> dict:
    """What ``deit teacher-cache info`` prints: what the cache stores, its size, the parts it has and lacks."""
    root = Path(root)
    meta = read_meta(root)
    if meta is None:
        raise FileNotFoundError(f"{root} is not a teacher cache (no cache.json)")
    parts = {(e, r): part_state(root, meta, e, r) for e in range(meta.epochs) for r in range(meta.ranks)}
    done = sorted({e for (e, _), s in parts.items() if s == "ok"})
    return {
        "cache": str(root), "outputs": meta.outputs, "storage": meta.storage, "top_k": meta.top_k,
        "num_classes": meta.num_classes, "epochs": meta.epochs, "student_world_size": meta.ranks,
        "batch_size": meta.batch_size, "batches_per_epoch": meta.batches, "filled_by": meta.filled_by,
        "bytes_per_image_view": meta.bytes_per_sample, "mib_per_epoch": round(meta.bytes_per_epoch / 2**20, 3),
        "parts_done": sum(s == "ok" for s in parts.values()), "parts_total": len(parts),
        "epochs_complete": len([e for e in done if all(parts[(e, r)] == "ok" for r in range(meta.ranks))]),
        "truncated_parts": [str(part_path(root, e, r)) for (e, r), s in parts.items() if s == "truncated"],
        "key": meta.key,
    }


class CachedTeacher:
    """The teacher source of a run from a cache: ``logits(x, epoch, batch)`` reads the part of (epoch, this
    rank); ``live`` (a Teacher), when given, computes the parts the cache lacks and adds them to it."""

    def __init__(self, root: Path, meta: CacheMeta, rank: int, live=None) -> None:
        self.root, self.meta, self.rank, self.live = root, meta, rank, live
        self._epoch, self._records = -1, None
        self._buffer: list[np.ndarray] | None = None

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        if self.live is None:
            raise ValueError("cached teacher outputs are read by stream position: use logits(x, epoch, batch)")
        return self.live(inputs)

    def _open(self, epoch: int, batch: int) -> None:
        self._epoch, self._buffer = epoch, None
        if part_state(self.root, self.meta, epoch, self.rank) == "ok":
            self._records = np.memmap(part_path(self.root, epoch, self.rank), dtype=self.meta.record_dtype(),
                                      mode="r", shape=(self.meta.samples,))
        else:
            self._records = None
            # Filling on the fly needs the whole epoch; a run resumed mid-epoch computes that epoch without it.
            self._buffer = [] if batch == 0 else None

    def logits(self, inputs: torch.Tensor, epoch: int, batch: int) -> torch.Tensor:
        if epoch != self._epoch:
            self._open(epoch, batch)
        b = self.meta.batch_size
        if self._records is not None:
            return decode(self.meta, self._records[batch * b:(batch + 1) * b], inputs.device)
        if self.live is None:
            raise ConfigError(f"teacher cache {self.root} has no part for epoch {epoch + 1} and no teacher is loaded")
        out = self.live(inputs)
        if self._buffer is not None:
            self._buffer.append(encode(self.meta, out))
            if batch == self.meta.batches - 1:
                write_part(self.root, self.meta, epoch, self.rank, np.concatenate(self._buffer))
                self._buffer = None
        return out


__all__ = [
    "OUTPUTS",
    "CacheMeta",
    "CachedTeacher",
    "check_compatible",
    "describe_cache",
    "decode",
    "encode",
    "missing_epochs",
    "part_path",
    "read_meta",
    "stream_key",
    "write_meta",
    "write_part",
]
