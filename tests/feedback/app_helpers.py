"""Helpers for the labeling app's tests: a store, a test client, a logged-in annotator, a live server, a browser."""

from __future__ import annotations

import contextlib
import html
import re
import socket
import threading
import time

from tether.feedback.store import Item, LabelStore

XSS = "<img src=x onerror=\"document.title='pwned'\"><script>document.title='pwned'</script>"


def make_store(path, items=None, annotators=None):
    """A label store with ``items`` (default: one pair 'i0') and annotators {name: token} (default: ann/tok)."""
    store = LabelStore(path)
    store.add_items(items if items is not None else [Item("i0", "q", ["a", "b"])])
    for name, token in (annotators if annotators is not None else {"ann": "tok"}).items():
        store.set_annotator(name, token)
    store.close()
    return path


def stored_labels(db):
    store = LabelStore(db)
    try:
        return store.labels()
    finally:
        store.close()


def client_for(db, admin="adm", **kwargs):
    from fastapi.testclient import TestClient

    from tether.feedback.server import create_app

    return TestClient(create_app(str(db), admin_token=admin, **kwargs), raise_server_exceptions=False)


def hidden_fields(page: str, form_id: str = "label-form") -> dict[str, str]:
    """The hidden inputs of a form on a page (values unescaped)."""
    start = page.find(f"id='{form_id}'")
    part = page[start:page.find("</form>", start)] if start >= 0 else page
    return {m.group(1): html.unescape(m.group(2)) for m in re.finditer(r"name='(\w+)' value='([^']*)'", part)}


def csrf_of(page: str) -> str:
    match = re.search(r"name='csrf' value='([^']*)'", page)
    return html.unescape(match.group(1)) if match else ""


def login(client, token: str, read_guidelines: bool = True):
    """Log in through the form; accept the guidelines when the app asks for them first."""
    response = client.post("/login", data={"token": token}, follow_redirects=False)
    if read_guidelines and response.headers.get("location") == "/guidelines":
        page = client.get("/guidelines").text
        client.post("/guidelines", data={"csrf": csrf_of(page)}, follow_redirects=False)
    return response


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def serve(db, admin="admin-secret", **kwargs):
    """The app on a free 127.0.0.1 port in a thread; yields its base URL."""
    import uvicorn

    from tether.feedback.server import create_app

    port = free_port()
    kwargs.setdefault("rate_limit", 0)
    server = uvicorn.Server(uvicorn.Config(create_app(str(db), admin, **kwargs), host="127.0.0.1", port=port,
                                           log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            break
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def browser_login(driver, url: str, token: str, read_guidelines: bool = True):
    """Log in through the form (and click through the guidelines, unless asked not to)."""
    from selenium.webdriver.common.by import By

    driver.get(url + "/")
    driver.find_element(By.ID, "token").send_keys(token)
    next_page(driver, driver.find_element(By.ID, "login").click)
    if read_guidelines and driver.find_elements(By.ID, "start"):
        next_page(driver, driver.find_element(By.ID, "start").click)


def next_page(driver, action) -> None:
    """Run ``action()`` (a click or keys that submit) and wait until the browser shows the page that follows."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.execute_script("window.__before_submit = true;")
    action()
    wait = WebDriverWait(driver, 10, ignored_exceptions=(WebDriverException,))
    wait.until(lambda d: d.execute_script("return document.readyState === 'complete' && !window.__before_submit"))
    wait.until(lambda d: d.find_elements(By.ID, "progress") or d.find_elements(By.ID, "token"))
