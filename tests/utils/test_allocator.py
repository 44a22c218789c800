"""glibc keeps freed CPU memory for reuse once the recipes have set it up (tether.utils.allocator)."""

import ctypes
import os
import subprocess
import sys

import pytest

from tether.utils.allocator import ENV, keep_freed_memory


def _has_mallinfo2() -> bool:
    try:
        return sys.platform.startswith("linux") and hasattr(ctypes.CDLL(None), "mallinfo2")
    except OSError:
        return False


# A 64 MiB tensor, allocated and freed, as glibc's own counters see it: bytes in mmap'ed blocks while it lives,
# and free bytes kept in the heap after it is gone.
PROBE = """
import ctypes, torch
from tether.utils.allocator import keep_freed_memory

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
applied = keep_freed_memory()
before = libc.mallinfo2()
block = torch.empty(16 << 20, dtype=torch.float32)
block.fill_(1.0)
during = libc.mallinfo2()
del block
after = libc.mallinfo2()
print(applied, during.hblkhd - before.hblkhd, after.fordblks - before.fordblks)
"""


def _probe(choice: str) -> tuple[bool, int, int]:
    env = {**os.environ, ENV: choice}
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    applied, mapped, kept = out.stdout.split()
    return applied == "True", int(mapped), int(kept)


@pytest.mark.skipif(not _has_mallinfo2(), reason="needs glibc >= 2.33 (mallinfo2) on Linux")
def test_freed_blocks_stay_in_the_heap_instead_of_being_unmapped():
    size = 64 << 20
    applied, mapped, kept = _probe("keep")
    assert applied
    assert mapped < size  # served from the heap, not by a fresh mmap
    assert kept > 0.9 * size  # and kept there for the next step once freed (less what the heap's free list reused)

    applied, mapped, kept = _probe("system")
    assert not applied
    assert mapped >= size  # glibc's default: a block this large is its own mapping ...
    assert kept < 0.5 * size  # ... handed back to the kernel when freed


def test_the_switch_is_checked():
    assert keep_freed_memory({ENV: "system"}) is False
    assert keep_freed_memory({"WORLD_SIZE": "2"}) is False  # multi-process runs keep glibc's defaults
    assert keep_freed_memory({"PMI_SIZE": "4"}) is False  # (an MPI launch too)
    with pytest.raises(ValueError, match=f"{ENV}='sometimes'"):
        keep_freed_memory({ENV: "sometimes"})
