"""The labeling app as an attacker sees it (issue 28, points 1-3).

1. CSRF: a page on another port of the same host (cookies are shared across ports) must not be
   able to post a label as the logged-in annotator — checked in Chromium.
2. The admin check parses ``Authorization: Bearer <token>``; any other scheme is refused.
3. Headers (no-store, Referrer-Policy, X-Frame-Options), no admin token in query strings, an
   admin login form whose export link works, logout, and a rate limit on failed logins.
"""

import http.server
import threading
import time

import pytest

pytest.importorskip("fastapi")

from tests.feedback.app_helpers import (  # noqa: E402
    browser_login,
    client_for,
    csrf_of,
    free_port,
    login,
    make_store,
    serve,
    stored_labels,
)
from tests.helpers import chromium_driver, have_chromium  # noqa: E402
from tether.feedback.store import Item  # noqa: E402

ATTACK = """<!doctype html><title>a page on another port</title><script>
var label = 'http://127.0.0.1:%(port)d';
Promise.all([
  fetch(label + '/api/labels', {method: 'POST', mode: 'no-cors', credentials: 'include',
        headers: {'Content-Type': 'text/plain'}, body: JSON.stringify({item_id: 'i0', slot: '0'})}),
  fetch(label + '/label', {method: 'POST', mode: 'no-cors', credentials: 'include',
        headers: {'Content-Type': 'application/x-www-form-urlencoded'},
        body: 'item_id=i1&slot=0&shown_order=%%5B0%%2C1%%5D'})
]).then(function () { document.title = 'sent'; }, function () { document.title = 'sent'; });
</script>"""


def _attacker(port_of_app: int):
    """A plain HTTP server on another port whose page posts to the labeling app; returns (server, url)."""
    page = (ATTACK % {"port": port_of_app}).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the stdlib's name
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


@pytest.mark.skipif(not have_chromium(), reason="Debian chromium + chromium-driver not installed (.ci/run installs them)")
def test_a_page_on_another_port_cannot_post_labels_as_the_annotator(tmp_path):
    from selenium.webdriver.support.ui import WebDriverWait

    db = make_store(tmp_path / "labels.sqlite", [Item("i0", "q0", ["a", "b"]), Item("i1", "q1", ["c", "d"])])
    with serve(db) as url:
        attacker, attack_url = _attacker(int(url.rsplit(":", 1)[1]))
        driver = chromium_driver()
        try:
            browser_login(driver, url, "tok")  # the annotator is logged in: the session cookie is set
            assert driver.get_cookies(), "the login set no cookie"
            driver.get(attack_url)
            WebDriverWait(driver, 10).until(lambda d: d.title == "sent")
            time.sleep(0.5)  # let the app finish any request it accepted
        finally:
            driver.quit()
            attacker.shutdown()
    assert stored_labels(db) == []  # neither the JSON API nor the form accepted the cross-site posts


def test_the_api_takes_only_a_bearer_header_and_only_json(tmp_path):
    db = make_store(tmp_path / "labels.sqlite")
    client = client_for(db)
    login(client, "tok")  # a session cookie alone does not authenticate API calls
    assert client.post("/api/labels", json={"item_id": "i0", "slot": "0"}).status_code == 401
    as_text = client.post("/api/labels", content=b'{"item_id": "i0", "slot": "0"}',
                          headers={"Authorization": "Bearer tok", "Content-Type": "text/plain"})
    assert as_text.status_code == 415 and "application/json" in as_text.json()["error"]
    assert stored_labels(db) == []
    assert client.post("/api/labels", json={"item_id": "i0", "slot": "0"},
                       headers={"Authorization": "Bearer tok"}).status_code == 201


@pytest.mark.parametrize("header", ["XXXXXXXadm", "Basic adm", "Token adm", "Bearer", "Bearer  ", "adm",
                                    "Bearer adm extra"])
def test_the_admin_check_parses_the_bearer_scheme(header, tmp_path):
    client = client_for(make_store(tmp_path / "labels.sqlite"))
    assert client.get("/admin", headers={"Authorization": header}).status_code == 403
    assert client.get("/admin/export", headers={"Authorization": header}).status_code == 403


def test_a_real_bearer_header_is_accepted_in_any_case(tmp_path):
    client = client_for(make_store(tmp_path / "labels.sqlite"))
    for header in ("Bearer adm", "bearer adm", "BEARER  adm "):
        assert client.get("/admin", headers={"Authorization": header}).status_code == 200, header


def test_no_store_referrer_and_frame_headers(tmp_path):
    client = client_for(make_store(tmp_path / "labels.sqlite"))
    admin = {"Authorization": "Bearer adm"}
    for response in (client.get("/admin", headers=admin), client.get("/admin/export", headers=admin),
                     client.get("/"), client.post("/api/labels", json={}, headers={"Authorization": "Bearer tok"})):
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["referrer-policy"] == "no-referrer"
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["x-content-type-options"] == "nosniff"
    assert "frame-ancestors 'none'" in client.get("/").headers["content-security-policy"]


def test_the_admin_token_is_not_taken_from_a_query_string(tmp_path):
    client = client_for(make_store(tmp_path / "labels.sqlite"))
    assert client.get("/admin?token=adm").status_code == 403
    assert client.get("/admin/export?token=adm").status_code == 403


def test_admin_login_form_and_a_working_export_link(tmp_path):
    client = client_for(make_store(tmp_path / "labels.sqlite"))
    page = client.get("/admin")
    assert page.status_code == 403 and "action='/admin/login'" in page.text  # a login form, not a URL to edit
    assert client.post("/admin/login", data={"token": "wrong"}).status_code == 401
    client.post("/admin/login", data={"token": "adm"})
    page = client.get("/admin")
    assert page.status_code == 200 and "href='/admin/export'" in page.text
    export = client.get("/admin/export")  # the link as it is, with the admin's session
    assert export.status_code == 200 and "attachment" in export.headers["content-disposition"]
    annotator = client_for(tmp_path / "labels.sqlite")
    login(annotator, "tok")  # an annotator's session is not an admin's
    assert annotator.get("/admin").status_code == 403 and annotator.get("/admin/export").status_code == 403


def test_logout_ends_the_session_on_the_server(tmp_path):
    client = client_for(make_store(tmp_path / "labels.sqlite"))
    login(client, "tok")
    page = client.get("/").text
    assert "id='logout'" in page
    cookie = client.cookies.get("tether_session")
    response = client.post("/logout", data={"csrf": csrf_of(page)}, follow_redirects=False)
    assert response.status_code == 303
    assert "id='token'" in client.get("/").text  # back at the login form
    replay = client_for(tmp_path / "labels.sqlite")
    replay.cookies.set("tether_session", cookie)  # the old cookie, replayed, no longer works
    assert "id='token'" in replay.get("/").text


def test_failed_logins_are_rate_limited(tmp_path):
    client = client_for(make_store(tmp_path / "labels.sqlite"), login_limit=10)
    for _ in range(10):
        assert client.post("/login", data={"token": "guess"}).status_code == 401
    assert client.post("/login", data={"token": "guess"}).status_code == 429
    assert client.post("/login", data={"token": "tok"}).status_code == 429  # blocked for the minute
    assert client.post("/admin/login", data={"token": "adm"}).status_code == 429


def test_failed_logins_are_rate_limited_by_default(tmp_path):
    client = client_for(make_store(tmp_path / "labels.sqlite"))
    codes = [client.post("/login", data={"token": "guess"}).status_code for _ in range(30)]
    assert 429 in codes
