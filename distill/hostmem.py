"""Host memory for training on a CPU: freed blocks stay in the process instead of going back to the OS.

Reads the environment variable DISTILL_HOST_MALLOC: `keep` (the default) or `system` (leave the C
library as it is). Writes nothing; `session.setup` calls `keep_freed_memory` when training on a CPU.

glibc serves each request over its mmap threshold (128 KiB, rising to at most 32 MiB) with a fresh
mmap and unmaps it on free, and returns the free top of its heap to the OS once over 128 KiB. A
training step allocates and frees buffers over that (ZeRO's flat fp32 gradient partition is 4 bytes
per parameter: ~70 MB for the 17 M-parameter student), so every step page-faults them in again. On
the 2-core VMs here that was 0.035 s of the 3x384 student's 0.08 s optimizer step
(benchmarks/host_memory.py) and 10% of the CPU quickstart's teacher and student training time
(docs/training.md). With mmap and trimming off, the heap keeps its high-water mark and the next step
reuses it, as PyTorch's caching allocator does on a GPU. Other C libraries (musl, macOS) are left alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util

from distill.errors import env_choice

ENV = "DISTILL_HOST_MALLOC"
CHOICES = ("keep", "system")
# mallopt(3) parameters
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
TRIM_NEVER = 2**31 - 1  # mallopt takes an int: trim only a free top of heap over 2 GiB

_applied = False


def choice() -> str:
    """DISTILL_HOST_MALLOC's value, checked: `keep` (the default) or `system`."""
    return env_choice(ENV, CHOICES)


def keep_freed_memory() -> bool:
    """Turn off glibc's mmap for large blocks and its heap trimming, once per process.

    True where it is in effect (glibc, and DISTILL_HOST_MALLOC not `system`); an InputError for a bad value.
    """
    global _applied
    if choice() == "system":
        return False
    if _applied:
        return True
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # glibc only: musl's mallopt does nothing, macOS has none
    except (OSError, AttributeError):
        return False
    # mallopt returns 1 on success
    _applied = bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_NEVER))
    return _applied
