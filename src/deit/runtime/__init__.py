"""The process a model runs in: its device, numeric precision, process group, and crash-safe file writes.

The lowest layer of the package: it imports only torch and the standard library, so every other package
(models excepted, which need none of it) may use it.
"""

from deit.runtime.device import resolve_device
from deit.runtime.distributed import DistEnv, all_reduce_sum, barrier, cleanup, init_distributed
from deit.runtime.files import atomic_path, atomic_torch_save, atomic_write_text
from deit.runtime.precision import AMP_MODES, AmpMode, autocast

__all__ = [
    "AMP_MODES",
    "AmpMode",
    "DistEnv",
    "all_reduce_sum",
    "atomic_path",
    "atomic_torch_save",
    "atomic_write_text",
    "autocast",
    "barrier",
    "cleanup",
    "init_distributed",
    "resolve_device",
]
