"""A label acknowledged to a client survives `kill -9` of the server in the middle of a load."""

import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

pytest.importorskip("fastapi")
import httpx  # noqa: E402

from tether.feedback.store import Item, LabelStore  # noqa: E402


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _start(db, port):
    proc = subprocess.Popen([sys.executable, "-m", "tether.cli", "label", "serve", f"db={db}", "admin_token=adm",
                             f"port={port}", "rate_limit=0"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    for _ in range(300):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the labeling server did not start")


def test_acknowledged_labels_survive_kill_9(tmp_path):
    db = tmp_path / "labels.sqlite"
    store = LabelStore(db)
    store.add_items([Item(f"i{k}", f"question {k}", ["a", "b"]) for k in range(2000)])
    for c in range(4):
        store.set_annotator(f"ann{c}", f"tok{c}")
    store.close()
    port = _free_port()
    server = _start(db, port)
    acknowledged: set[tuple[str, str]] = set()
    lock = threading.Lock()

    def client(c):
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer tok{c}"},
                          timeout=5) as http:
            for k in range(2000):
                try:
                    response = http.post("/api/labels", json={"item_id": f"i{k}", "slot": str(k % 2)})
                except httpx.HTTPError:
                    return  # the server is gone
                if response.status_code == 201:
                    with lock:
                        acknowledged.add((f"ann{c}", f"i{k}"))

    threads = [threading.Thread(target=client, args=(c,)) for c in range(4)]
    for t in threads:
        t.start()
    deadline = time.time() + 60
    while len(acknowledged) < 150 and time.time() < deadline:
        time.sleep(0.05)
    server.send_signal(signal.SIGKILL)  # mid-load: clients are still posting
    server.wait(timeout=30)
    for t in threads:
        t.join(timeout=60)
    assert 150 <= len(acknowledged) < 8000  # the kill did land in the middle of the load
    restarted = _start(db, port)  # the server comes back on the same store
    try:
        check = LabelStore(db)
        stored = {(lab.annotator, lab.item_id) for lab in check.labels()}
        assert check.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        check.close()
        assert acknowledged <= stored  # every acknowledged label is there
        assert len(stored) - len(acknowledged) <= 4  # at most the in-flight request per client was unacknowledged
        response = httpx.get(f"http://127.0.0.1:{port}/admin/export", headers={"Authorization": "Bearer adm"})
        assert response.status_code == 200
    finally:
        restarted.send_signal(signal.SIGTERM)
        restarted.wait(timeout=30)
