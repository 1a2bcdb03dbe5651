"""Keep freed large blocks in the process instead of handing them back to the kernel.

glibc's malloc serves every block above its mmap threshold (at most 32 MB by default)
with a fresh ``mmap`` and returns it with ``munmap`` when freed. A CNN's activations on a
batch are such blocks (EfficientNet-Lite2 at 224 px, 64 pictures: about 100 MB each), so
every batch maps them again and the kernel zero-fills every page on first touch. In
``clipsearch train`` that cost a third of the run in system time (1,091 s of 3,502 s,
736 million minor page faults). Raising the mmap and trim thresholds lets freed blocks
be reused from the heap: same numbers, a fraction of the faults, eager PyTorch 1.2-2x
faster (``bench/bench_allocator.py``, figures in docs/benchmarks.md; OpenVINO has its own
allocator and gains nothing). The price is that the heap is never trimmed: freed memory
stays with the process up to its peak (the lite2 training's maximum RSS went from 7.1 to
10.6 GB), which suits batch jobs, so the batch commands call it (``clipsearch train``,
``clipsearch index``, ``bench/bench_memory.py``), not library code and not a
long-lived server that idles; and only the main thread's arena gains (a thread's arena
is at most 64 MB, so its large blocks are still mapped).

Elsewhere than glibc (musl, macOS, Windows) this does nothing.
"""
from __future__ import annotations

import ctypes
import logging

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
GiB = 1 << 30
NEVER = -1  # as a trim threshold: glibc reads it as SIZE_MAX


def keep_freed_memory(mmap_threshold: int = GiB) -> bool:
    """Raise glibc's mmap threshold to ``mmap_threshold`` (a C int) and stop trimming the
    heap, for this process; True when glibc took both."""
    try:  # the process's own symbols: libc is loaded already (find_library would run ldconfig)
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, TypeError):
        mallopt = None
    if mallopt is None:
        log.debug("no glibc mallopt here; allocator left as it is")
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = bool(mallopt(M_MMAP_THRESHOLD, mmap_threshold)) and bool(mallopt(M_TRIM_THRESHOLD, NEVER))
    log.debug("glibc mmap threshold %d, no trimming: %s", mmap_threshold,
              "set" if ok else "refused")
    return ok
