"""deit: data-efficient image transformers — train, distil through attention, evaluate, convert and serve."""

from deit.models import list_models

__version__ = "0.1.0"

__all__ = ["__version__", "create_model", "list_models", "load_checkpoint", "save_checkpoint"]


_LAZY = ("create_model", "load_checkpoint", "save_checkpoint")


def __getattr__(name: str):
    # Models with weights and checkpoint I/O come from deit.checkpoints, imported on first use so that
    # `import deit` stays light.
    if name in _LAZY:
        from deit import checkpoints

        return getattr(checkpoints, name)
    raise AttributeError(f"module 'deit' has no attribute {name!r}")


def __dir__() -> list[str]:
    # What dir(deit) and tab completion show: the public API too, not only what is imported so far.
    return sorted(set(globals()) | set(__all__))
