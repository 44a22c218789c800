"""Crash-safe file writes with the permissions the umask gives (never ``mkstemp``'s private 0o600 / ``mkdtemp``'s
0o700); the encoding of users' text files."""

from __future__ import annotations

import codecs
import contextlib
import os
import stat
import tempfile
from pathlib import Path

from tether.utils.distributed import Dist


def _umask_from_proc() -> int | None:
    """The process's umask as Linux reports it (/proc/self/status, Linux 4.7+), read without changing it."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return None


def _umask_at_import() -> int:
    mask = _umask_from_proc()
    if mask is None:  # elsewhere the umask can only be read by setting it: once, here, and restored at once
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


_IMPORT_UMASK = _umask_at_import()


def current_umask() -> int:
    """The umask now (Linux), else the one this process had when tether was imported."""
    mask = _umask_from_proc()
    return _IMPORT_UMASK if mask is None else mask


def file_mode() -> int:
    """The mode ``open()`` gives a new file under the current umask (0o644 under the usual 0o022)."""
    return 0o666 & ~current_umask()


def dir_mode() -> int:
    """The mode ``mkdir`` gives a new directory under the current umask (0o755 under the usual 0o022)."""
    return 0o777 & ~current_umask()


def apply_umask(folder: Path) -> None:
    """Give ``folder`` and everything in it the modes ``mkdir`` / ``open`` give under the umask: for a folder about
    to be renamed into place, made by ``mkdtemp`` (0o700) and filled by writers that make private files
    (safetensors' ``save_file`` writes 0o600)."""
    os.chmod(folder, dir_mode())
    for path in Path(folder).rglob("*"):
        if not path.is_symlink():
            os.chmod(path, dir_mode() if path.is_dir() else file_mode())


def atomic_write_text(path: Path, text: str, mode: int | None = None) -> None:
    """Write ``path`` through a temporary file, fsync and rename (by the main process of a data-parallel run).

    The file gets the permissions any new file gets (0o666 less the umask: ``mkstemp``'s private 0o600 is not
    kept), narrowed to those of the file it replaces, so a file made private stays private. ``mode`` (e.g.
    0o600 for a file of secrets) sets them exactly; either way they are set before the rename."""
    if not Dist.current().is_main:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fchmod(handle.fileno(), _replacing_mode(path) if mode is None else mode)
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _replacing_mode(path: Path) -> int:
    """A new file's mode, no wider than that of the file at ``path`` if there is one."""
    try:
        return file_mode() & stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return file_mode()


BYTE_ORDER_MARKS = ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"))


def text_codec(head: bytes) -> tuple[str, int]:
    """(codec, length of the byte-order mark) of a text file that starts with ``head``: UTF-8 unless a mark says
    UTF-16 (Excel's "CSV UTF-8", Notepad and PowerShell write marks; the mark says which, so nothing is guessed)."""
    for mark, codec in BYTE_ORDER_MARKS:
        if head.startswith(mark):
            return codec, len(mark)
    return "utf-8", 0
