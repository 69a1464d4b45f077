"""localq: train image classifiers by vector search, offline.

The public API is three names, loaded on first use so that ``import localq`` stays cheap
(no numpy, faiss or torch until a collection is opened)::

    from localq import Collection, Settings, Trainer
"""

from localq import runtime as _runtime  # noqa: F401  (must run before numpy/faiss/torch load)

__version__ = "0.1.0"
__all__ = ["Collection", "Settings", "Trainer", "__version__"]

_PUBLIC = {
    "Collection": "localq.collection.collection",
    "Settings": "localq.loop.trainer_types",
    "Trainer": "localq.loop.trainer",
}


def __getattr__(name: str):
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'localq' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))
