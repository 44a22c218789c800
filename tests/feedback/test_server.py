"""The labeling app: auth, CSRF, escaping, labels committed, a real browser, and a concurrent load."""

import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from tests.feedback.app_helpers import XSS, browser_login, hidden_fields, login, next_page, serve  # noqa: E402
from tests.helpers import chromium_driver, have_chromium  # noqa: E402
from tether.feedback.server import create_app  # noqa: E402
from tether.feedback.store import Item, LabelStore  # noqa: E402


def _store(tmp_path, n_items=3):
    db = tmp_path / "labels.sqlite"
    store = LabelStore(db)
    store.add_items([Item(f"i{k}", f"Question {k}?", [f"Answer A{k}. {XSS}", f"Answer B{k}."]) for k in range(n_items)])
    store.set_annotator("alice", "tok-alice")
    store.set_annotator("bob", "tok-bob")
    store.close()
    return db


def test_auth_csrf_and_escaping(tmp_path):
    db = _store(tmp_path)
    client = TestClient(create_app(str(db), admin_token="admin-secret"))
    assert "Log in" in client.get("/").text
    assert login(client, "wrong").status_code == 401
    assert client.post("/api/labels", json={"item_id": "i0", "slot": "0"}).status_code == 401
    assert client.get("/admin").status_code == 403
    assert client.get("/admin?token=nope").status_code == 403
    assert login(client, "tok-alice").status_code == 303
    page = client.get("/").text
    assert "<script>document.title" not in page and "&lt;script&gt;" in page and "&lt;img src=x" in page
    form = hidden_fields(page)
    no_csrf = {**form, "slot": "0", "csrf": "forged"}
    assert client.post("/label", data=no_csrf, follow_redirects=False).status_code == 403
    ok = client.post("/label", data={**form, "slot": "1", "confidence": "1.0", "rationale": "clearer"},
                     follow_redirects=False)
    assert ok.status_code == 303
    store = LabelStore(db)
    (label,) = store.labels()
    order = json.loads(form["shown_order"])
    assert label.annotator == "alice" and label.choice == order[1] and label.confidence == 1.0
    assert label.rationale == "clearer" and label.seconds is not None and label.seconds >= 0
    # only the token's hash is stored
    assert "tok-alice" not in json.dumps(store.db.execute("SELECT * FROM annotators").fetchall())
    store.close()
    assert "alice" in client.get("/admin", headers={"Authorization": "Bearer admin-secret"}).text


def test_api_labels_and_duplicates(tmp_path):
    db = _store(tmp_path)
    client = TestClient(create_app(str(db), admin_token="admin-secret"))
    headers = {"Authorization": "Bearer tok-bob"}
    assert client.post("/api/labels", json={"item_id": "i0", "slot": "0", "shown_order": [1, 0]},
                       headers=headers).status_code == 201
    assert client.post("/api/labels", json={"item_id": "i0", "slot": "1"}, headers=headers).status_code == 409
    assert client.post("/api/labels", json={"item_id": "nope", "slot": "0"}, headers=headers).status_code == 422
    assert client.post("/api/labels", json={"item_id": "i1", "slot": "7"}, headers=headers).status_code == 422
    assert client.post("/api/labels", content=b"{not json",
                       headers={**headers, "Content-Type": "application/json"}).status_code == 422
    store = LabelStore(db)
    (label,) = store.labels()
    assert label.choice == 1  # slot 0 showed response index 1
    store.close()
    export = client.get("/admin/export", headers={"Authorization": "Bearer admin-secret"})
    row = json.loads(export.text.splitlines()[0])
    assert export.status_code == 200 and row["chosen"] == "Answer B0." and row["item_id"] == "i0"


def test_twenty_concurrent_clients_store_exactly_1000_labels(tmp_path):
    import httpx

    db = tmp_path / "load.sqlite"
    store = LabelStore(db)
    store.add_items([Item(f"i{k}", "q", ["a", "b"]) for k in range(50)])
    for c in range(20):
        store.set_annotator(f"client{c}", f"tok{c}")
    store.close()
    with serve(db) as url:
        def client(c):
            with httpx.Client(base_url=url, headers={"Authorization": f"Bearer tok{c}"}, timeout=30) as http:
                return [http.post("/api/labels", json={"item_id": f"i{k}", "slot": str(k % 2)}).status_code
                        for k in range(50)]

        with ThreadPoolExecutor(20) as pool:
            codes = [code for result in pool.map(client, range(20)) for code in result]
    assert codes.count(201) == 1000
    check = LabelStore(db)
    rows = check.db.execute("SELECT COUNT(*), COUNT(DISTINCT annotator || '/' || item_id) FROM labels").fetchone()
    check.close()
    assert rows == (1000, 1000)


@pytest.mark.skipif(not have_chromium(), reason="Debian chromium + chromium-driver not installed (.ci/run installs them)")
def test_two_annotators_label_in_a_real_browser(tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    db = _store(tmp_path, n_items=2)
    with serve(db) as url:
        driver = chromium_driver()
        try:  # keys pick an answer and Enter confirms it (a stray key alone submits nothing)
            for token, keys in (("tok-alice", ["1", "t"]), ("tok-bob", ["b", "click"])):
                driver.delete_all_cookies()
                browser_login(driver, url, token)
                for key in keys:
                    WebDriverWait(driver, 10).until(lambda d: d.find_elements(By.ID, "prompt"))  # an item is shown
                    time.sleep(2.0)  # give any injected onerror handler time to fire (it must not)
                    assert driver.title != "pwned"
                    texts = driver.find_element(By.ID, "resp-0").text + driver.find_element(By.ID, "resp-1").text
                    assert "<script>" in texts
                    if key == "click":
                        next_page(driver, driver.find_element(By.ID, "choice-0").click)
                    else:
                        driver.find_element(By.TAG_NAME, "body").send_keys(key)
                        assert driver.find_element(By.ID, "confirm").is_displayed()
                        next_page(driver, lambda: driver.find_element(By.TAG_NAME, "body").send_keys(Keys.ENTER))
                WebDriverWait(driver, 10).until(lambda d: d.find_elements(By.ID, "done"))
                assert "All done" in driver.find_element(By.ID, "done").text
        finally:
            driver.quit()
    store = LabelStore(db)
    labels = store.labels()
    store.close()
    assert len(labels) == 4 and {lab.annotator for lab in labels} == {"alice", "bob"}
    assert sum(lab.tie for lab in labels) == 1 and sum(lab.choice is not None for lab in labels) == 3


@pytest.mark.skipif(not have_chromium(), reason="Debian chromium + chromium-driver not installed (.ci/run installs them)")
def test_rank_three_responses_with_clicks_and_keys_in_a_real_browser(tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    db = tmp_path / "rank.sqlite"
    store = LabelStore(db)
    store.add_items([Item("k1", "Rank these", [f"zero {XSS}", "one", "two"])])
    store.set_annotator("alice", "tok-alice")
    store.set_annotator("bob", "tok-bob")
    store.close()
    with serve(db) as url:
        driver = chromium_driver()
        try:
            for token in ("tok-alice", "tok-bob"):
                driver.delete_all_cookies()
                browser_login(driver, url, token)
                WebDriverWait(driver, 10).until(lambda d: d.find_elements(By.ID, "submit-ranking"))
                submit = driver.find_element(By.ID, "submit-ranking")
                assert not submit.is_enabled()
                if token == "tok-alice":  # mouse: a wrong first click, take it back, then shown positions 2 and 0
                    driver.find_element(By.ID, "resp-1").click()
                    assert driver.find_element(By.ID, "rank-1").text == "#1"
                    driver.find_element(By.ID, "unpick").click()
                    assert driver.find_element(By.ID, "rank-1").text == ""
                    driver.find_element(By.ID, "resp-2").click()
                    driver.find_element(By.ID, "resp-0").click()  # the last one is placed automatically
                    assert [driver.find_element(By.ID, f"rank-{s}").text for s in range(3)] == ["#2", "#3", "#1"]
                    submit.click()
                else:  # keyboard: c then 1 (the last is placed automatically), Backspace takes back the 1, a, Enter
                    body = driver.find_element(By.TAG_NAME, "body")
                    body.send_keys("c")
                    body.send_keys("1")
                    assert submit.is_enabled()
                    body.send_keys(Keys.BACKSPACE)
                    assert [driver.find_element(By.ID, f"rank-{s}").text for s in range(3)] == ["", "", "#1"]
                    assert not submit.is_enabled()
                    body.send_keys("a")
                    body.send_keys(Keys.ENTER)
                WebDriverWait(driver, 10).until(lambda d: d.find_elements(By.ID, "done"))
                assert driver.title != "pwned"
        finally:
            driver.quit()
    store = LabelStore(db)
    labels = store.labels()
    store.close()
    assert len(labels) == 2
    for label in labels:  # positions 2, 0, 1 of the order each annotator saw
        shown = label.shown_order
        assert label.ranking == [shown[2], shown[0], shown[1]] and label.choice == shown[2]
