"""The code checker and its sandbox: hand-worked verdicts, then hostile programs, each of which must end quickly in
a clean, non-correct outcome without harming the process that checks it.

Which test catches which broken guard (each guard was broken on purpose, one at a time, and the test failed):
- the process-group kill at the wall clock → test_a_program_that_sleeps_forever_is_stopped_by_the_wall_clock
- RLIMIT_CPU                               → test_an_infinite_loop_times_out
- the output cap                           → test_output_is_capped_however_much_is_printed
- the network block (socket importable)    → test_the_network_is_unreachable
- the file-open guard                      → test_files_outside_the_scratch_directory_cannot_be_read
- the nonce on the report line             → test_a_forged_report_line_is_not_believed
- deleting the harness source              → test_the_harness_source_is_gone_before_the_program_runs
- the clean environment                    → test_the_environment_is_clean
- os.system refused                        → test_a_fork_bomb_is_refused_and_leaves_no_process_behind
- os.kill refused                          → test_other_processes_cannot_be_signalled
(The fork, memory and file-size guards were not broken on purpose: as root that would fork-bomb or exhaust the
machine running the tests.)
"""

from __future__ import annotations

import ast
import os
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time

import pytest

from tether.rollout.sandbox import CPU_LIMIT, WALL_TIMEOUT, clean_env, run_untrusted
from tether.rollout.verifiers import (
    CORRECT,
    TIMEOUT,
    UNPARSEABLE,
    VERIFIERS,
    WRONG,
    VerifierError,
    check_code,
    extract_code,
    verify_code,
)

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the sandbox's process handling is Linux-specific")

ADD_TESTS = ["assert add(2, 3) == 5", "assert add(-1, 1) == 0"]


# A hostile program's last line, and the test that passes exactly when the program got there: CORRECT would mean
# the hostile step ran to its end unstopped, so each verdict below names what stopped it instead.
RAN_TO_THE_END = "\nran_to_the_end = True"
ENDED = ["assert ran_to_the_end is True"]


def fenced(code: str, tag: str = "python") -> str:
    return f"Here is my solution.\n```{tag}\n{textwrap.dedent(code).strip()}\n```\n"


def descendants() -> set[int]:
    """The pids of this process's descendants (psutil when installed, else /proc)."""
    try:
        import psutil
    except ImportError:
        parents: dict[int, int] = {}
        for entry in os.listdir("/proc"):
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
        found, frontier = set(), {os.getpid()}
        while frontier:
            frontier = {pid for pid, ppid in parents.items() if ppid in frontier} - found
            found |= frontier
        return found
    return {p.pid for p in psutil.Process().children(recursive=True)}


# ----------------------------------------------------------------------------------------------- hand-worked


def test_a_correct_function_passes_every_test():
    outcome = check_code(fenced("def add(a, b):\n    return a + b"), ADD_TESTS, entry_point="add")
    assert (outcome.verdict, outcome.reward) == (CORRECT, 1.0)
    assert outcome.extracted.startswith("def add(a, b):") and outcome.detail == "2/2 tests passed"


def test_a_wrong_answer_fails_and_says_which_test():
    outcome = check_code(fenced("def add(a, b):\n    return a * b"), ADD_TESTS)  # 2*3 != 5; -1*1 != 0
    assert (outcome.verdict, outcome.reward) == (WRONG, 0.0)
    assert outcome.detail.startswith("0/2 tests passed; test 0: AssertionError")
    half = check_code(fenced("def add(a, b):\n    return 5"), ADD_TESTS)
    assert half.verdict == WRONG and half.detail.startswith("1/2 tests passed; test 1")


def test_a_syntax_error_or_an_exception_is_wrong():
    syntax = check_code(fenced("def add(a, b)\n    return a + b"), ADD_TESTS)
    assert syntax.verdict == WRONG and "SyntaxError" in syntax.detail
    raises = check_code(fenced("raise RuntimeError('nope')\ndef add(a, b):\n    return a + b"), ADD_TESTS)
    assert raises.verdict == WRONG and raises.detail == "RuntimeError: nope"
    exits = check_code(fenced("import sys\nsys.exit(0)"), ADD_TESTS)  # exiting early is not passing
    assert exits.verdict == WRONG


def test_no_code_is_unparseable():
    assert check_code("", ADD_TESTS).verdict == UNPARSEABLE
    assert check_code("   \n ", ADD_TESTS).extracted is None
    prose = check_code("I would add the two numbers, of course.", ADD_TESTS)
    assert prose.verdict == UNPARSEABLE


def test_unfenced_code_is_the_whole_response():
    assert check_code("def add(a, b):\n    return a + b\n", ADD_TESTS).verdict == CORRECT


def test_the_last_python_block_is_the_program():
    first_wrong = fenced("def add(a, b):\n    return 0") + "Wait, fixed:\n" + fenced("def add(a, b):\n    return a + b", "")
    assert check_code(first_wrong, ADD_TESTS).verdict == CORRECT
    last_wrong = fenced("def add(a, b):\n    return a + b") + "Or shorter:\n" + fenced("def add(a, b):\n    return 0")
    assert check_code(last_wrong, ADD_TESTS).verdict == WRONG
    then_output = fenced("def add(a, b):\n    return a + b") + "Output:\n" + fenced(">>> add(2, 3)\n5", "text")
    assert extract_code(then_output) == ("def add(a, b):\n    return a + b\n", True)


def test_tests_may_be_one_script_and_main_blocks_do_not_run():
    program = fenced("""
        def add(a, b):
            return a + b

        if __name__ == "__main__":
            print(add(int(input()), int(input())))  # stdin is empty: running this would fail
    """)
    assert check_code(program, "for a in range(5):\n    assert add(a, a) == 2 * a\n").verdict == CORRECT


def test_a_missing_entry_point_is_wrong():
    # the tests pass (plus is right): the missing entry point alone makes it wrong
    outcome = check_code(fenced("def plus(a, b):\n    return a + b"), ["assert plus(1, 2) == 3"], entry_point="add")
    assert outcome.verdict == WRONG and "add" in outcome.detail


def test_verify_code_reads_the_row():
    assert VERIFIERS["code"] is verify_code
    row = {"tests": ADD_TESTS, "entry_point": "add", "timeout_s": 2}
    assert verify_code(fenced("def add(a, b):\n    return a + b"), row).verdict == CORRECT
    with pytest.raises(VerifierError, match="'tests' field"):
        verify_code("x = 1", {"prompt": "p", "_row": 7})
    with pytest.raises(VerifierError, match="non-empty list"):
        verify_code("x = 1", {"tests": []})
    with pytest.raises(VerifierError, match="timeout_s"):
        verify_code("x = 1", {"tests": ["assert x == 1"], "timeout_s": -1})
    with pytest.raises(VerifierError, match="entry_point"):
        verify_code("x = 1", {"tests": ["assert x == 1"], "entry_point": "not a name"})
    with pytest.raises(VerifierError, match="test 1 does not compile"):  # a broken row, not a wrong response
        verify_code("x = 1", {"tests": ["assert x == 1", "assert x =="]})


# ------------------------------------------------------------------------------------------------- hostile


def test_an_infinite_loop_times_out():
    start = time.monotonic()
    outcome = check_code(fenced("x = 0\nwhile True:\n    x += 1"), ["assert x > 0"], timeout_s=1)
    assert outcome.verdict == TIMEOUT and outcome.reward == 0.0
    assert time.monotonic() - start < 10
    result = run_untrusted("while True:\n    pass", cpu_seconds=1, wall_seconds=10)
    assert result.timed_out and result.killed_reason == CPU_LIMIT


def test_a_program_that_sleeps_forever_is_stopped_by_the_wall_clock():
    start = time.monotonic()
    result = run_untrusted("import time\ntime.sleep(30)", cpu_seconds=5, wall_seconds=1)  # (sleeping uses no CPU)
    assert result.timed_out and result.killed_reason == WALL_TIMEOUT and result.returncode == -signal.SIGKILL
    assert time.monotonic() - start < 8
    outcome = check_code(fenced("import time\ntime.sleep(30)" + RAN_TO_THE_END), ENDED, timeout_s=0.5)
    assert outcome.verdict == TIMEOUT


def test_the_wait_without_a_pidfd_polls(monkeypatch):
    monkeypatch.delattr(os, "pidfd_open", raising=False)
    assert run_untrusted("print('hi')").stdout == "hi\n"
    result = run_untrusted("import time\ntime.sleep(30)", wall_seconds=0.5)
    assert result.killed_reason == WALL_TIMEOUT and result.wall_seconds < 5


def test_a_fork_bomb_is_refused_and_leaves_no_process_behind():
    before = descendants()
    outcome = check_code(fenced("import os\nwhile True:\n    os.fork()" + RAN_TO_THE_END), ENDED, timeout_s=2)
    assert outcome.verdict != CORRECT
    assert outcome.verdict == WRONG and "fork" in outcome.detail  # refused at the first fork, not timed out
    for attempt in ("import subprocess", "import multiprocessing", "import os\nos.system('true')",
                    "import os\nos.execv('/bin/true', ['true'])", "import os\nos.posix_spawn('/bin/true', ['t'], {})",
                    "import pty\npty.fork()"):
        refused = check_code(attempt + RAN_TO_THE_END, ENDED)  # passes whenever the program runs: only a refusal fails it
        assert refused.verdict == WRONG and "in the tether sandbox" in refused.detail, (attempt, refused.detail)
    assert descendants() <= before


def test_output_is_capped_however_much_is_printed():
    huge_line = run_untrusted("print('x' * 10**9)", max_output_bytes=1000)
    assert huge_line.returncode != 0 and len(huge_line.stdout) <= 1000
    endless = run_untrusted("while True:\n    print('y' * 1000)", max_output_bytes=1000, wall_seconds=20)
    assert len(endless.stdout) <= 1000 and len(endless.stderr) <= 1000
    assert endless.stdout.startswith("yyy") and "bytes in all" in endless.stdout
    # the test passes whenever the program gets to its end; what stops each one is named
    huge = check_code(fenced("print('x' * 10**9)" + RAN_TO_THE_END), ENDED)
    assert huge.verdict == WRONG and huge.detail == "MemoryError"
    flood = check_code(fenced("while True:\n    print('y' * 1000)" + RAN_TO_THE_END), ENDED)
    assert flood.verdict == WRONG and flood.detail.startswith("no test report")


def test_files_outside_the_scratch_directory_cannot_be_read(tmp_path):
    secret = tmp_path / "answers.txt"
    secret.write_text("hunter2")
    system = check_code(fenced("data = open('/etc/passwd').read()"), ["assert len(data) > 0"])
    assert system.verdict == WRONG and "PermissionError" in system.detail
    for read in (f"data = open({str(secret)!r}).read()", f"import io\ndata = io.open({str(secret)!r}).read()",
                 f"import io\ndata = io.FileIO({str(secret)!r}).read().decode()",
                 f"import os\ndata = os.read(os.open({str(secret)!r}, os.O_RDONLY), 100).decode()",
                 f"import pathlib\ndata = pathlib.Path({str(secret)!r}).read_text()",
                 f"import os\nos.chdir({str(tmp_path)!r})\ndata = open('answers.txt').read()",
                 f"import os\nos.symlink({str(secret)!r}, 'link')\ndata = open('link').read()"):
        assert check_code(fenced(read), ["assert data == 'hunter2'"]).verdict == WRONG, read
    writes = check_code(fenced(f"open({str(tmp_path / 'planted.txt')!r}, 'w').write('x')" + RAN_TO_THE_END), ENDED)
    assert writes.verdict == WRONG and not (tmp_path / "planted.txt").exists()
    assert "allows no file access outside its scratch directory" in writes.detail
    # its own scratch directory is usable
    scratch = "import tempfile\nopen('a.txt', 'w').write('ok')\ndata = open('a.txt').read()\ntempfile.mkstemp()"
    assert check_code(fenced(scratch), ["assert data == 'ok'"]).verdict == CORRECT


def test_the_network_is_unreachable():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        server.settimeout(0.2)
        port = server.getsockname()[1]
        program = f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2).close()\nreached = True"
        outcome = check_code(fenced(program), ["assert reached"])
        assert outcome.verdict == WRONG and "blocked" in outcome.detail
        with pytest.raises(socket.timeout):
            server.accept()  # nobody connected
    for attempt in ("import _socket", "import ssl", "import urllib.request", "import http.client", "import ctypes"):
        refused = check_code(attempt + RAN_TO_THE_END, ENDED)  # passes whenever the program runs: only a refusal fails it
        assert refused.verdict == WRONG and "in the tether sandbox" in refused.detail, (attempt, refused.detail)


def test_a_memory_bomb_fails_cleanly():
    outcome = check_code(fenced("x = bytearray(10**10)" + RAN_TO_THE_END), ENDED)
    assert outcome.verdict == WRONG and "MemoryError" in outcome.detail


def test_a_huge_file_cannot_be_written():
    program = "with open('big', 'wb') as f:\n    while True:\n        f.write(b'x' * 2**20)"
    outcome = check_code(fenced(program + RAN_TO_THE_END), ENDED)
    assert outcome.verdict == WRONG and "File too large" in outcome.detail


def test_a_forged_report_line_is_not_believed():
    forged = ("import os, secrets\n"
              "report = ' {\"stage\": \"tests\", \"passed\": 1, \"total\": 1, \"error\": null}'\n"
              "print(secrets.token_hex(16) + report, flush=True)\n"
              "os._exit(0)")
    assert check_code(fenced(forged), ["assert False"]).verdict == WRONG
    claims = "print('1/1 tests passed')\nprint('ALL TESTS PASSED', flush=True)\nimport os\nos._exit(0)"
    assert check_code(fenced(claims), ["assert False"]).verdict == WRONG


def test_the_harness_source_is_gone_before_the_program_runs():
    # A program that looks for the harness (its cwd, the directory above, the sandbox's files) to copy the nonce.
    program = r"""
    import glob, os, re
    names = os.listdir('.') + glob.glob('/tmp/tether-sandbox-*/private/*') + glob.glob('../private/*')
    for name in names:
        try:
            text = open(name).read()
        except Exception:
            continue
        for nonce in set(re.findall(r"[0-9a-f]{32}", text)):
            print(nonce + ' {"stage": "tests", "passed": 1, "total": 1, "error": null}', flush=True)
    os._exit(0)
    """
    assert check_code(fenced(program), ["assert False"]).verdict == WRONG
    # the source file is deleted (not only unreadable: the file guard is one layer, this is another)
    found = run_untrusted("import os\nprint(os.path.exists('../private/runner.py'), os.path.exists('../private/source.py'))")
    assert found.stdout.split() == ["True", "False"]


def test_the_environment_is_clean(monkeypatch):
    monkeypatch.setenv("TETHER_SECRET", "x")
    monkeypatch.setenv("PYTHONPATH", "/somewhere")
    outcome = check_code(fenced("import os\nsecret = os.environ.get('TETHER_SECRET')"), ["assert secret == 'x'"])
    assert outcome.verdict == WRONG
    result = run_untrusted("import os, sys\nprint(sorted(os.environ.items()))\nprint(sys.flags.isolated)")
    environ, isolated = result.stdout.splitlines()
    assert ast.literal_eval(environ) == sorted(clean_env(dict(ast.literal_eval(environ))["HOME"]).items())
    assert isolated == "1"


def test_other_processes_cannot_be_signalled():
    victim = subprocess.Popen(["sleep", "30"])
    try:
        outcome = check_code(fenced(f"import os, signal\nos.kill({victim.pid}, signal.SIGKILL)" + RAN_TO_THE_END),
                             ENDED)
        assert outcome.verdict == WRONG
        assert victim.poll() is None
    finally:
        victim.kill()
        victim.wait()


def test_the_caller_is_unharmed(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    cwd = os.getcwd()
    run_untrusted("import os\nos.mkdir('d')\nos.chmod('d', 0)\nopen('f', 'w').write('x')")
    outcome = check_code(fenced("while True:\n    pass" + RAN_TO_THE_END), ENDED, timeout_s=0.5)
    assert outcome.verdict == TIMEOUT and outcome.reward == 0.0  # (stopped, and its scratch directory still removed)
    assert os.getcwd() == cwd
    assert list(tmp_path.iterdir()) == []  # every scratch directory was removed
