"""Process tuning that has to happen before numpy, faiss or torch are imported.

Imported for its side effects by ``localq/__init__.py``. Each setting uses
``setdefault`` so a user's explicit environment always wins.
"""

import ctypes
import os
import sys

# numpy's OpenBLAS pool and faiss's OpenMP pool spin-wait for work by default; on a
# 2-core machine a faiss search right after a numpy product then ran ~1.8x slower
# (docs/faiss-notes.md, pitfall 4). Passive waiting removes the collision.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

# localq never downloads anything at run time: weights come from local files only.
for _flag in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ.setdefault(_flag, "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# glibc's malloc returns large activation buffers to the kernel after every batch and
# page-faults them back in on the next one; measured here this more than halved batched
# CPU inference. These are the runtime equivalents of MALLOC_MMAP_THRESHOLD_ /
# MALLOC_TRIM_THRESHOLD_ and only affect allocations made after this point.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_TOP_PAD = -2


def _tame_glibc_malloc() -> bool:
    if not sys.platform.startswith("linux") or os.environ.get("LOCALQ_KEEP_MALLOC"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # musl or another libc: nothing to tune
        return False
    ok = libc.mallopt(_M_MMAP_MAX, 0)  # serve big blocks from the heap, not fresh mmaps
    ok &= libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30)  # keep freed heap memory for reuse
    ok &= libc.mallopt(_M_TOP_PAD, 64 << 20)
    return bool(ok)


MALLOC_TUNED = _tame_glibc_malloc()
