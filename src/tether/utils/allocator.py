"""Keep freed CPU memory for reuse instead of handing it back to the kernel at every free (glibc on Linux).

glibc's ``malloc`` serves every request above 32 MiB with a fresh ``mmap`` and returns it with ``munmap`` on
free. A training step on the CPU allocates and frees tensors of that size many times (SmolLM2's gradients: a
113 MB embedding gradient and 540 MB in all each step, the vocabulary-sized logits, the activations), so every
step page-faults all of that memory in again: on the benchmark VMs a fresh 113 MB tensor costs ~40 ms in page
faults before any arithmetic, and a SmolLM2 SFT step spent ~1 s of ~5 s that way.

:func:`keep_freed_memory` sets two glibc options (``mallopt``): ``M_MMAP_MAX = 0`` (large blocks come from the
heap like small ones) and ``M_TRIM_THRESHOLD`` at its maximum (freed memory at the heap's top is kept). Freed
blocks are then reused without faults. The cost is that the process's resident memory stays at its high-water
mark instead of shrinking between steps (the peak itself moves little; docs/performance.md has the numbers).

It is applied by every recipe when this process computes on the CPU (``TETHER_DEVICE``), and is a no-op
elsewhere: off Linux, with another C library or allocator (a ``jemalloc`` / ``tcmalloc`` preload keeps its own
behaviour), and on a GPU, where host memory is not the hot path and a model loaded on the host before moving to
the device should be given back. ``TETHER_CPU_ALLOCATOR=system`` turns it off.

Multi-process runs (torchrun, accelerate launch, MPI: ``launched_world_size`` > 1) keep glibc's defaults for now: one CI run
saw a rank of the 2-process FSDP tests abort (SIGABRT) with the setting on, which five reruns did not
reproduce; until that is understood the setting is limited to single-process runs.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from collections.abc import Mapping

from tether.utils.launcher import launched_world_size

ENV = "TETHER_CPU_ALLOCATOR"  # "keep" (default) or "system"
M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
M_MMAP_MAX = -4
_INT_MAX = 2**31 - 1

_applied: bool | None = None  # None: not tried yet in this process


def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    # gnu_get_libc_version: only glibc has it (musl does not)
    return libc if hasattr(libc, "gnu_get_libc_version") and hasattr(libc, "mallopt") else None


def keep_freed_memory(env: Mapping[str, str] | None = None) -> bool:
    """Tell glibc to keep freed memory for reuse (see the module docstring); True when it is in effect.

    Idempotent: the options are set once per process."""
    global _applied
    env = os.environ if env is None else env
    choice = env.get(ENV, "keep").strip().lower()
    if choice not in ("keep", "system"):
        raise ValueError(f"{ENV}={env[ENV]!r}: expected 'keep' or 'system'")
    if choice == "system" or launched_world_size(env) > 1:
        return False
    if _applied is None:
        libc = _glibc()
        _applied = bool(libc is not None and libc.mallopt(M_MMAP_MAX, 0) == 1
                        and libc.mallopt(M_TRIM_THRESHOLD, _INT_MAX) == 1)
    return _applied
