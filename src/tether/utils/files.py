"""Crash-safe file writes; the encoding of users' text files."""

from __future__ import annotations

import codecs
import os
import tempfile
from pathlib import Path


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``path`` through a temporary file, fsync and rename (by the main process of a data-parallel run)."""
    from tether.utils.distributed import Dist

    if not Dist.current().is_main:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


BYTE_ORDER_MARKS = ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"))


def text_codec(head: bytes) -> tuple[str, int]:
    """(codec, length of the byte-order mark) of a text file that starts with ``head``: UTF-8 unless a mark says
    UTF-16 (Excel's "CSV UTF-8", Notepad and PowerShell write marks; the mark says which, so nothing is guessed)."""
    for mark, codec in BYTE_ORDER_MARKS:
        if head.startswith(mark):
            return codec, len(mark)
    return "utf-8", 0
