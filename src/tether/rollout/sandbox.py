"""Run untrusted Python (a model's candidate program) in a resource-limited subprocess.

:func:`run_untrusted` runs ``source`` with ``sys.executable -I -S -B`` (isolated mode: no user site, no
``PYTHON*`` variables, no site-packages: the standard library only) in a fresh scratch directory that is its
working directory, ``HOME`` and ``TMPDIR``, with a minimal environment (``PATH=/usr/bin:/bin``, ``LANG=C.UTF-8``,
nothing of the caller's: no tokens, no proxies), no stdin, and in a session of its own so that the whole process
group is killed (``SIGKILL``) when the wall-clock limit passes and again when the program ends. Its stdout and
stderr go to files outside the scratch directory and only ``max_output_bytes`` of each (the head and the tail) are
read back, so a program that prints gigabytes costs the caller nothing. The scratch directory is removed afterwards.

What contains it, in two layers:

1. **Operating-system limits** (the layer that matters): before any untrusted line runs, the child sets its own
   rlimits — ``RLIMIT_CPU`` (CPU seconds; ``SIGXCPU`` then ``SIGKILL``), ``RLIMIT_AS`` (address space),
   ``RLIMIT_FSIZE`` (the largest file it may write, its stdout included), ``RLIMIT_NOFILE``, ``RLIMIT_CORE=0``
   and ``RLIMIT_NPROC`` (relative to the processes the user already has) — plus the wall clock, the separate
   session, the clean environment and the scratch directory. The limits are set in the child rather than in a
   ``preexec_fn``, which is unsafe in a multithreaded caller (a trainer with a thread pool of verifiers); nothing
   untrusted runs before they are in place.
2. **A Python-level prelude** (defence in depth): before the program runs, process creation (``os.fork``,
   ``os.system``, ``os.exec*``, ``os.spawn*``, ``os.posix_spawn*``, ``subprocess``, ``multiprocessing``),
   signalling other processes (``os.kill``, ``os.killpg``), leaving the session (``os.setsid``, ``os.setpgid``)
   and the network (``socket``, ``ssl``, ...) are disabled, ``ctypes`` and ``resource`` cannot be imported, and
   ``open``/``io.open``/``io.FileIO``/``os.open``/``os.listdir``/``os.scandir``/``os.chdir`` and the functions
   that change files (``os.remove``, ``os.rename``, ``os.symlink``, ...) refuse paths outside the scratch directory
   (reads of the standard library excepted). ``os.stat`` is left alone: a program can see whether a path exists.

The prelude is **not a security boundary**. Code running inside the interpreter can undo Python-level patches (by
introspection, by loading a built-in module anew, ...), and ``RLIMIT_NPROC`` is not enforced for root (as root, a
program that gets past the prelude can fork freely and leave the process group). The prelude stops the mistakes
and the common reward hacks a policy discovers (reading the answer file, forking, connecting out), and the OS
limits stop resource abuse (loops, memory, output, the size of each file; not the number of files written before
the wall clock runs out); a determined adversary is not stopped from reading what the user running tether can
read. To execute adversarial
code at scale, run the verifier inside a container, nsjail, bubblewrap or gVisor, as an unprivileged user, without
network.
"""

from __future__ import annotations

import math
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

WALL_TIMEOUT, CPU_LIMIT, KILLED = "wall_timeout", "cpu_limit", "killed"

# The child's first code: rlimits, then read (and delete) the program, then the guards, then the program as
# __main__. Formatted with the config as a Python literal (__CONFIG__).
_RUNNER = r'''
import sys


def _tether_prelude(cfg):
    import builtins, io, _io, os, posix, resource

    def limit(name, soft, hard=None):
        if hasattr(resource, name):
            try:
                resource.setrlimit(getattr(resource, name), (soft, soft if hard is None else hard))
            except (ValueError, OSError):
                pass

    def user_tasks():
        count, uid = 0, str(os.getuid())
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open("/proc/" + entry + "/status") as f:
                        fields = dict(line.split(":", 1) for line in f if ":" in line)
                except OSError:
                    continue
                if fields.get("Uid", "").split()[:1] == [uid]:
                    count += int(fields.get("Threads", "1"))
        return count

    limit("RLIMIT_CPU", cfg["cpu_seconds"], cfg["cpu_seconds"] + 1)
    limit("RLIMIT_AS", cfg["memory_bytes"])
    limit("RLIMIT_FSIZE", cfg["file_size_bytes"])
    limit("RLIMIT_NOFILE", cfg["max_open_files"])
    limit("RLIMIT_CORE", 0)
    if os.getuid() != 0 and os.path.isdir("/proc"):  # the kernel does not enforce RLIMIT_NPROC for root
        limit("RLIMIT_NPROC", user_tasks() + cfg["max_processes"])

    with open(cfg["source"], "rb") as f:
        source = f.read()
    os.unlink(cfg["source"])

    scratch = os.path.realpath(cfg["scratch"])
    write_roots = (scratch,)
    read_roots = (scratch, "/dev/null", "/dev/urandom") + tuple(os.path.realpath(p) for p in sys.path if p)
    fspath, fsdecode, realpath, join, isabs, readlink = (
        os.fspath, os.fsdecode, os.path.realpath, os.path.join, os.path.isabs, os.readlink)

    def check(path, write, dir_fd=None):
        if isinstance(path, int):
            return  # an open file descriptor: it was checked when opened
        name = fsdecode(fspath(path))
        if dir_fd is not None and not isabs(name):
            name = join(readlink("/proc/self/fd/%d" % dir_fd), name)
        real = realpath(name)
        if not any(real == root or real.startswith(root.rstrip("/") + "/") for root in
                   (write_roots if write else read_roots)):
            raise PermissionError("the tether sandbox allows no file access outside its scratch directory: %r"
                                  % (name,))

    def writes(mode):
        return any(c in mode for c in "wax+")

    real_open, real_open_code, RealFileIO = _io.open, _io.open_code, _io.FileIO

    def guarded_open(file, mode="r", *args, **kwargs):
        check(file, writes(mode) if isinstance(mode, str) else True)
        return real_open(file, mode, *args, **kwargs)

    def guarded_open_code(path):
        check(path, False)
        return real_open_code(path)

    class FileIO(RealFileIO):
        def __init__(self, file, mode="r", *args, **kwargs):
            check(file, writes(mode) if isinstance(mode, str) else True)
            super().__init__(file, mode, *args, **kwargs)

    builtins.open = io.open = _io.open = guarded_open
    io.open_code = _io.open_code = guarded_open_code
    io.FileIO = _io.FileIO = FileIO

    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

    def guard_os(name, write, arity=1, flags=False):
        real = getattr(posix, name, None)
        if real is None:
            return

        def guarded(*args, **kwargs):
            paths = list(args[:arity]) or ["."]
            paths += [kwargs[k] for k in ("path", "src", "dst") if k in kwargs]
            if flags:
                is_write = bool((args[1] if len(args) > 1 else kwargs.get("flags", 0)) & write_flags)
            else:
                is_write = write
            for path in paths:
                check(path, is_write, kwargs.get("dir_fd"))
            if any(kwargs.get(k) is not None for k in ("src_dir_fd", "dst_dir_fd")):
                raise PermissionError("the tether sandbox refuses src_dir_fd/dst_dir_fd")
            return real(*args, **kwargs)

        setattr(posix, name, guarded)
        setattr(os, name, guarded)

    guard_os("open", None, flags=True)
    for name in ("listdir", "scandir", "chdir"):
        guard_os(name, False)
    for name in ("mkdir", "rmdir", "remove", "unlink", "chmod", "chown", "lchown", "truncate", "utime", "mkfifo",
                 "mknod", "removexattr", "setxattr", "chflags", "lchflags", "lchmod"):
        guard_os(name, True)
    for name in ("rename", "replace", "link", "symlink"):
        guard_os(name, True, arity=2)

    def refuse(name):
        def refused(*args, **kwargs):
            raise PermissionError("%s is disabled in the tether sandbox" % name)
        return refused

    for name in list(vars(posix)):
        if name in ("fork", "forkpty", "system", "popen", "kill", "killpg", "setsid", "setpgid", "setpgrp",
                    "chroot", "pidfd_open", "plock") or name.startswith(("exec", "spawn", "posix_spawn")):
            setattr(posix, name, refuse("os." + name))
            if hasattr(os, name):
                setattr(os, name, refuse("os." + name))
    for name in ("spawnl", "spawnle", "spawnlp", "spawnlpe", "spawnv", "spawnve", "spawnvp", "spawnvpe",
                 "execl", "execle", "execlp", "execlpe", "execvp", "execvpe", "popen"):
        if hasattr(os, name):
            setattr(os, name, refuse("os." + name))

    blocked = tuple(cfg["blocked_modules"])

    def is_blocked(fullname):
        return any(fullname == b or fullname.startswith(b + ".") for b in blocked)

    class ImportBlocker:
        @classmethod
        def find_spec(cls, fullname, path=None, target=None):
            if is_blocked(fullname):
                raise ImportError("import of %r is blocked in the tether sandbox" % fullname, name=fullname)
            return None

    sys.meta_path.insert(0, ImportBlocker)
    for name in list(sys.modules):
        if is_blocked(name):
            del sys.modules[name]
    return source


# The program runs as a fresh __main__ module; no global here keeps its source.
_tether_main = type(sys)("__main__")
_tether_main.__builtins__ = __builtins__
sys.modules["__main__"] = _tether_main
exec(compile(_tether_prelude(__CONFIG__), "<untrusted>", "exec"), _tether_main.__dict__)
'''

# Modules a candidate program may not import: the network, process creation, raw memory, raising its limits.
# A blocked name blocks its submodules too.
BLOCKED_MODULES = ("socket", "_socket", "ssl", "_ssl", "ctypes", "_ctypes", "subprocess", "_posixsubprocess",
                   "multiprocessing", "_multiprocessing", "pty", "resource", "urllib.request", "http.client",
                   "http.server", "ftplib", "smtplib", "poplib", "imaplib", "telnetlib", "xmlrpc", "socketserver")


@dataclass(frozen=True)
class SandboxResult:
    """What an untrusted run did. ``stdout``/``stderr`` hold at most ``max_output_bytes`` each (head and tail,
    with a note of what was cut); ``timed_out`` covers both the wall clock and the CPU limit, and
    ``killed_reason`` says which (``wall_timeout``, ``cpu_limit``) or ``killed`` for another fatal signal."""

    returncode: int
    stdout: str
    stderr: str
    timed_out: bool
    killed_reason: str | None
    wall_seconds: float
    cpu_seconds: float = 0.0


def clean_env(scratch: str) -> dict[str, str]:
    """The whole environment of an untrusted run: nothing of the caller's."""
    return {"PATH": "/usr/bin:/bin", "HOME": scratch, "TMPDIR": scratch, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}


def run_untrusted(source: str, *, cpu_seconds: float = 5, wall_seconds: float = 10, memory_mb: int = 512,
                  max_output_bytes: int = 64_000, max_processes: int = 16, file_size_mb: int = 16,
                  max_open_files: int = 64) -> SandboxResult:
    """Run ``source`` as ``__main__`` in a fresh, limited, isolated interpreter (see the module docstring).

    ``max_processes`` is how many processes/threads the program may add to those its user already runs (not
    enforced for root; process creation is also disabled in Python). ``file_size_mb`` bounds every file it
    writes, stdout and stderr included."""
    if not sys.executable:
        raise RuntimeError("run_untrusted needs sys.executable to start a Python interpreter")
    limits = {"cpu_seconds": max(1, math.ceil(cpu_seconds)), "memory_bytes": int(memory_mb) << 20,
              "file_size_bytes": int(file_size_mb) << 20, "max_open_files": int(max_open_files),
              "max_processes": int(max_processes)}
    with tempfile.TemporaryDirectory(prefix="tether-sandbox-", ignore_cleanup_errors=True) as root:
        private, scratch = Path(root, "private"), Path(root, "scratch")
        runner = _write_runner(private, scratch, source, limits)
        out_path, err_path = private / "stdout", private / "stderr"
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            start = time.monotonic()
            proc = subprocess.Popen([sys.executable, "-I", "-S", "-B", str(runner)], cwd=scratch,
                                    env=clean_env(str(scratch)), stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                    start_new_session=True, close_fds=True)
            try:
                finished = _wait_unreaped(proc, wall_seconds)
            finally:  # on a timeout, after a normal exit, and if the wait is interrupted: nothing outlives it
                _kill_group(proc.pid)
                returncode, used_cpu = _reap(proc)
            wall = time.monotonic() - start
        reason = _killed_reason(finished, returncode, used_cpu, limits["cpu_seconds"])
        return SandboxResult(returncode=returncode, stdout=read_capped(out_path, max_output_bytes),
                             stderr=read_capped(err_path, max_output_bytes),
                             timed_out=reason in (WALL_TIMEOUT, CPU_LIMIT), killed_reason=reason,
                             wall_seconds=wall, cpu_seconds=used_cpu)


def _write_runner(private: Path, scratch: Path, source: str, limits: dict[str, int]) -> Path:
    """Make the private and the scratch directory, write the program and the runner (which reads and deletes
    it) into the private one, and return the runner's path."""
    private.mkdir(mode=0o700)
    scratch.mkdir(mode=0o700)
    config = {"source": str(private / "source.py"), "scratch": str(scratch), **limits,
              "blocked_modules": list(BLOCKED_MODULES)}
    Path(config["source"]).write_text(source, encoding="utf-8", errors="surrogatepass")
    runner = private / "runner.py"
    runner.write_text(_RUNNER.replace("__CONFIG__", repr(config)), encoding="utf-8")
    return runner


def _wait_unreaped(proc: subprocess.Popen, wall_seconds: float) -> bool:
    """Wait until ``proc`` exits (True) or ``wall_seconds`` pass (False), without reaping it: while it is an
    unreaped zombie its pid, which is also its process group's id, cannot be reused, so killing the group is safe.
    A pidfd (Linux 5.3+) wakes the wait the moment it exits; elsewhere it polls."""
    deadline = time.monotonic() + wall_seconds
    try:
        pidfd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):
        pidfd = None
    if pidfd is not None:
        with selectors.DefaultSelector() as selector:
            selector.register(pidfd, selectors.EVENT_READ)
            try:
                while (remaining := deadline - time.monotonic()) > 0:
                    if selector.select(remaining):
                        return True
                return False
            finally:
                os.close(pidfd)
    delay = 0.002
    while True:
        try:
            if hasattr(os, "waitid"):
                if os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                    return True
            elif proc.poll() is not None:  # no waitid (macOS): reaped, a tiny pid-reuse window remains
                return True
        except ChildProcessError:  # reaped by someone else
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        time.sleep(min(delay, remaining))
        delay = min(delay * 2, 0.05)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _reap(proc: subprocess.Popen) -> tuple[int, float]:
    """Reap ``proc``: its exit code (``-signal`` when a signal ended it) and the CPU seconds it used."""
    if proc.returncode is not None:
        return proc.returncode, 0.0
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    except ChildProcessError:  # reaped by someone else: the exit code is lost
        proc.returncode = -signal.SIGKILL
        return proc.returncode, 0.0
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_utime + usage.ru_stime


def _killed_reason(finished: bool, returncode: int, used_cpu: float, cpu_limit: int) -> str | None:
    if not finished:
        return WALL_TIMEOUT
    if returncode == -signal.SIGXCPU or (returncode == -signal.SIGKILL and used_cpu >= cpu_limit - 0.05):
        return CPU_LIMIT
    if returncode in (-signal.SIGKILL, -signal.SIGSEGV, -signal.SIGBUS, -signal.SIGABRT, -signal.SIGXFSZ):
        return KILLED
    return None


def read_capped(path: Path, max_bytes: int) -> str:
    """At most ``max_bytes`` characters of the file: all of it, or its head and its tail with a note of how many
    bytes were cut between them (the tail keeps the end: a traceback, a final report line)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        if size <= max_bytes:
            return f.read().decode("utf-8", errors="replace")
        note = f"\n[... {size} bytes in all; cut to {max_bytes} ...]\n"
        keep = max(0, max_bytes - len(note))
        head = f.read(keep // 2)
        f.seek(size - (keep - keep // 2))
        tail = f.read(keep - keep // 2)
    text = head.decode("utf-8", errors="replace") + note + tail.decode("utf-8", errors="replace")
    return text[:max_bytes]
