"""A first-time annotator in headless Chromium: login, guidelines, pairwise and ranking items, a key that needs
confirming, undo, skip and return, both bad, logout — with the layout checks of issue 28 point 11 (a 20,000-character
token wraps, long answers collapse, bidi overrides are shown, not applied) and screenshots for docs/feedback.md.

Set TETHER_DOCS_SCREENSHOTS=1 to refresh docs/img/labeling*.png from this run (needs Pillow, to keep them small).
"""

import hashlib
import json
import os
import shutil

import pytest

pytest.importorskip("fastapi")

from tests.feedback.app_helpers import browser_login, make_store, next_page, serve, stored_labels  # noqa: E402
from tests.helpers import EXAMPLES, ROOT, chromium_driver, have_chromium  # noqa: E402
from tether.feedback.store import Item  # noqa: E402

pytestmark = pytest.mark.skipif(not have_chromium(),
                                reason="Debian chromium + chromium-driver not installed (.ci/run installs them)")

GUIDELINES = """## Judging helpfulness

Pick the answer a careful gardener would find **more useful**: correct first, then practical, then concise.

- Prefer concrete steps over general advice.
- A confident wrong answer is worse than a short correct one.
- Use **Both bad** when neither answer is safe to follow.
"""
LONG = "\n".join(f"Step {n}: check the soil with a finger; water only when the top 2 cm are dry." for n in range(1, 41))
TOKEN = "0x" + "deadbeef" * 2500  # 20,002 characters, no place to break
OVERRIDE = "Send the deposit to account \u202e1234-5678\u202c today."


def _ids_in_queue_order(annotator, n):
    ids = [f"item-{k}" for k in range(n)]
    return sorted(ids, key=lambda i: hashlib.sha256(f"{annotator}:0:{i}".encode()).hexdigest())


def _campaign(tmp_path):
    first, hostile, ranked = _ids_in_queue_order("alice", 3)
    return make_store(tmp_path / "labels.sqlite", [
        Item(first, "How often should I water basil on a windowsill?",
             ["Whenever the top of the soil feels dry, usually every 2-3 days; water until it drains.", LONG]),
        Item(hostile, "What should I do next?", [f"Paste this: {TOKEN}", OVERRIDE]),
        Item(ranked, "Name a herb that grows well indoors.",
             ["Basil: bright window, moist soil.", "Mint, in its own pot.", "Cactus.", "Parsley; it likes some shade."]),
    ], {"alice": "tok-alice"}), (first, hostile, ranked)


def _keep(driver, tmp_path, name):
    """Screenshot to tmp_path (checked as a PNG) and, when asked, a small copy for the docs."""
    path = tmp_path / name
    driver.save_screenshot(str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("TETHER_DOCS_SCREENSHOTS"):
        from PIL import Image

        Image.open(path).convert("RGB").quantize(colors=48).save(ROOT / "docs" / "img" / name, optimize=True)


def _js(driver, script, *args):
    return driver.execute_script(script, *args)


def _wait(driver, condition):
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, 10, ignored_exceptions=(WebDriverException,)).until(condition)


def _item_id(driver):
    from selenium.webdriver.common.by import By

    return driver.find_element(By.NAME, "item_id").get_attribute("value")


def _press(driver, *keys):
    from selenium.webdriver.common.by import By

    body = driver.find_element(By.TAG_NAME, "body")
    for key in keys:
        body.send_keys(key)


def _submit(driver, action, *args):
    """Do ``action`` (keys or a click) and wait for the next page; its item id, or None on the done page."""
    from selenium.webdriver.common.by import By

    next_page(driver, lambda: action(driver, *args))
    return None if driver.find_elements(By.ID, "done") else _item_id(driver)


def _click(driver, element_id):
    from selenium.webdriver.common.by import By

    driver.find_element(By.ID, element_id).click()


def _toast(driver):
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, "toast").text


def _digit_positions(driver, needle):
    """x positions of the first and last character of ``needle`` as rendered (left to right, unless reordered)."""
    return _js(driver, """
        var needle = arguments[0], texts = document.querySelectorAll('.text');
        for (var t = 0; t < texts.length; t++) {
          var walker = document.createTreeWalker(texts[t], NodeFilter.SHOW_TEXT), node;
          while ((node = walker.nextNode())) {
            var at = node.data.indexOf(needle);
            if (at < 0) continue;
            var range = document.createRange();
            range.setStart(node, at); range.setEnd(node, at + 1);
            var first = range.getBoundingClientRect().left;
            range.setStart(node, at + needle.length - 1); range.setEnd(node, at + needle.length);
            return [first, range.getBoundingClientRect().left];
          }
        }
        return null;""", needle)


def _check_layout(driver):
    """Every response card is on screen (a 20,000-character token wraps) and nothing scrolls sideways."""
    width = _js(driver, "return window.innerWidth")
    assert _js(driver, "return document.documentElement.scrollWidth") <= width + 1
    for left, right in _js(driver, "return Array.from(document.querySelectorAll('.resp')).map(function (e) {"
                                   " var r = e.getBoundingClientRect(); return [r.left, r.right]; })"):
        assert 0 <= left and right <= width + 1


def test_a_first_time_annotator_walks_through_a_campaign(tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    db, (first, hostile, ranked) = _campaign(tmp_path)
    with serve(db, guidelines=GUIDELINES) as url:
        driver = chromium_driver("--window-size=1280,1000", "--force-device-scale-factor=1")
        try:
            # login → the guidelines come first
            browser_login(driver, url, "tok-alice", read_guidelines=False)
            assert "Judging helpfulness" in driver.find_element(By.ID, "guidelines-full").text
            _keep(driver, tmp_path, "labeling-guidelines.png")
            next_page(driver, driver.find_element(By.ID, "start").click)

            # a pair with a long answer: collapsed with "Show all"; the guidelines beside it
            assert _item_id(driver) == first and "Judging helpfulness" in driver.find_element(By.ID, "guidelines").text
            more = [b for b in driver.find_elements(By.CSS_SELECTOR, "button.more") if b.is_displayed()]
            assert len(more) == 1 and more[0].text == "Show all"
            _keep(driver, tmp_path, "labeling.png")
            more[0].click()
            assert more[0].text == "Show less" and "Step 40" in driver.find_element(By.CLASS_NAME, "responses").text
            _check_layout(driver)

            # a stray key submits nothing: it arms a choice that Enter confirms and Esc cancels
            _press(driver, "a")
            confirm = driver.find_element(By.ID, "confirm")
            assert confirm.is_displayed() and "A is better" in confirm.text
            assert "armed" in driver.find_element(By.ID, "choice-0").get_attribute("class")
            assert stored_labels(db) == []
            _press(driver, Keys.ESCAPE)
            assert not confirm.is_displayed()
            assert _submit(driver, _press, "b", Keys.ENTER) == hostile and _toast(driver) == "Saved."
            assert [lab.item_id for lab in stored_labels(db)] == [first]

            # undo (u, then Enter): the answer is taken back and the item comes back
            assert _submit(driver, _press, "u", Keys.ENTER) == first and _toast(driver).startswith("Undone")
            assert stored_labels(db) == []
            assert _submit(driver, _click, "choice-0") == hostile  # a click on a button is deliberate: no confirmation

            # a 20,000-character token wraps inside its card; a bidi override is shown, not applied
            _check_layout(driver)
            first_digit, last_digit = _digit_positions(driver, "1234-5678")
            assert first_digit < last_digit  # read left to right, as stored
            assert "RLO" in driver.find_element(By.CLASS_NAME, "responses").text
            assert _submit(driver, _press, "s", Keys.ENTER) == ranked and "comes back" in _toast(driver)  # skip
            assert "1 skipped" in driver.find_element(By.ID, "progress").text

            # rank four responses with keys: d, a, c (the last is placed automatically), Enter submits
            _press(driver, "d", "a")
            _keep(driver, tmp_path, "labeling-ranking.png")
            _press(driver, "c")
            assert [driver.find_element(By.ID, f"rank-{s}").text for s in range(4)] == ["#2", "#4", "#3", "#1"]
            assert _submit(driver, _press, Keys.ENTER) == hostile  # the skipped item, back at the end

            # both bad (x, then Enter)
            assert _submit(driver, _press, "x", Keys.ENTER) is None
            assert "3 of 3 labelled" in driver.find_element(By.ID, "progress").text

            # logout ends the session
            next_page(driver, driver.find_element(By.ID, "logout").click)
            assert driver.find_elements(By.ID, "token") and "Logged out" in _toast(driver)
            driver.get(url + "/")
            assert driver.find_elements(By.ID, "token")
        finally:
            driver.quit()
    labels = {lab.item_id: lab for lab in stored_labels(db)}
    assert set(labels) == {first, hostile, ranked}
    assert labels[hostile].both_bad and labels[ranked].ranking is not None and labels[first].choice is not None


def test_the_admin_page_in_a_browser(tmp_path):
    from selenium.webdriver.common.by import By

    from tether.config import LabelSimulateConfig
    from tether.recipes.label import run_label_simulate

    rows = [json.loads(line) for line in (EXAMPLES / "data" / "preferences.jsonl").read_text().splitlines()][:60]
    samples = tmp_path / "samples.jsonl"
    samples.write_text("".join(json.dumps({"prompt": r["prompt"], "responses": [r["chosen"], r["rejected"]]}) + "\n"
                               for r in rows))
    db = tmp_path / "labels.sqlite"
    run_label_simulate(LabelSimulateConfig(samples=str(samples), db=str(db), panel_size=4, labels_per_item=3,
                                           adversarial=1, gold_fraction=0.25))
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    with serve(db, admin="the-admin-token") as url:
        driver = chromium_driver("--window-size=1280,700", "--force-device-scale-factor=1")
        try:
            driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow",
                                                                   "downloadPath": str(downloads)})
            driver.get(url + "/admin")
            driver.find_element(By.ID, "token").send_keys("the-admin-token")
            driver.find_element(By.ID, "login").click()
            _wait(driver, lambda d: d.find_elements(By.ID, "annotators"))
            table = driver.find_element(By.ID, "annotators").text
            assert "annotator-4" in table and "of 10" not in table  # enough overlap: every number is shown
            _keep(driver, tmp_path, "labeling-admin.png")
            driver.find_element(By.ID, "export").click()  # the link works as it is
            _wait(driver, lambda d: (downloads / "preferences.jsonl").is_file())
        finally:
            driver.quit()
    exported = [json.loads(line) for line in (downloads / "preferences.jsonl").read_text().splitlines()]
    assert exported and all("item_id" in row for row in exported)
    shutil.rmtree(downloads)
