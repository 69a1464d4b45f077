"""localq: train image classifiers by vector search, offline."""

from localq import runtime as _runtime  # noqa: F401  (must run before numpy/faiss/torch load)

__version__ = "0.1.0"
