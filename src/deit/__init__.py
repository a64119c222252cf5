"""deit: data-efficient image transformers — train, distil through attention, evaluate, convert and serve."""

from deit.models import create_model, list_models

__version__ = "0.1.0"

__all__ = ["__version__", "create_model", "list_models", "load_checkpoint", "save_checkpoint"]


def __getattr__(name: str):
    # Checkpoint I/O is imported on first use so `import deit` stays light.
    if name in ("load_checkpoint", "save_checkpoint"):
        from deit import checkpoints

        return getattr(checkpoints, name)
    raise AttributeError(f"module 'deit' has no attribute {name!r}")
