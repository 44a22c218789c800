"""The web labeling app: annotators compare responses in a browser; every label lands in the label store.

FastAPI over :class:`tether.feedback.store.LabelStore` (SQLite, WAL, ``synchronous=FULL``):
a label is committed before the browser is answered. Security:

- annotators log in with a personal token (only its sha256 is stored); the session is an
  HttpOnly, SameSite=Strict cookie; API clients send ``Authorization: Bearer <token>``;
- every form post carries a CSRF token derived from the session (checked server-side);
- the admin page and the export need the admin token;
- model text is always HTML-escaped, and a Content-Security-Policy lets only the page's own
  script (by nonce) run, so injected markup could not execute even if escaping failed;
- the server binds to 127.0.0.1 unless told otherwise (``tether label serve host=...``).

Pages: ``/`` (login or the next comparison: pick the better of two responses, or rank K > 2
responses by clicking them in order), ``/label`` (form post), ``/api/labels`` (JSON post),
``/admin`` (per-annotator throughput, agreement and gold accuracy), ``/admin/export``.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import json
import random
import secrets
import threading
import time
from collections import defaultdict, deque

from fastapi import FastAPI, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse

from tether.feedback.store import LabelStore, StoredLabel

COOKIE = "tether_session"

STYLE = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
.prompt{background:#f4f4f8;padding:1em;border-radius:8px;white-space:pre-wrap}
.pair{display:flex;gap:1em;margin:1em 0}.resp{flex:1;border:2px solid #ccc;border-radius:8px;padding:1em;
white-space:pre-wrap}.resp h3{margin-top:0}button{font-size:1em;padding:.5em 1em;margin:.2em;cursor:pointer}
.progress{color:#666}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:right}
.ranking .resp{cursor:pointer}.resp.picked{border-color:#2a7;background:#f3fbf6}
.rank{color:#2a7;font-weight:bold;margin-left:.5em}
"""

KEYS_SCRIPT = """
(function () {
  var form = document.getElementById('label-form');
  var k = parseInt(form.dataset.k, 10), rankMode = form.dataset.mode === 'rank', ranked = [];
  function render() {
    for (var s = 0; s < k; s++) {
      var place = ranked.indexOf(s);
      document.getElementById('rank-' + s).textContent = place < 0 ? '' : '#' + (place + 1);
      document.getElementById('resp-' + s).classList.toggle('picked', place >= 0);
    }
    document.getElementById('ranking').value = JSON.stringify(ranked);
    document.getElementById('submit-ranking').disabled = ranked.length !== k;
  }
  function pick(s) {
    if (s >= k || ranked.indexOf(s) >= 0) return;
    ranked.push(s);
    if (ranked.length === k - 1) { for (var r = 0; r < k; r++) { if (ranked.indexOf(r) < 0) ranked.push(r); } }
    render();
  }
  function undo() { if (ranked.length === k) ranked.pop(); ranked.pop(); render(); }
  if (rankMode) {
    for (var s = 0; s < k; s++) {
      (function (slot) { document.getElementById('resp-' + slot).addEventListener('click', function () { pick(slot); }); })(s);
    }
    document.getElementById('undo').addEventListener('click', undo);
    render();
  }
  document.addEventListener('keydown', function (e) {
    if (e.target.tagName === 'TEXTAREA' || e.target.tagName === 'INPUT' || e.target.tagName === 'SELECT') {
      if (e.key === 'Enter') e.preventDefault();  // never submit a choice by accident
      return;
    }
    var key = e.key.toLowerCase(), digit = parseInt(key, 10);
    if (key === 't') { document.getElementById('tie').click(); return; }
    if (key === 's') { document.getElementById('skip').click(); return; }
    if (rankMode) {
      if (digit >= 1 && digit <= 9) pick(digit - 1);
      else if (key === 'u' || key === 'backspace') undo();
      else if (key === 'enter' && ranked.length === k) document.getElementById('submit-ranking').click();
      return;
    }
    var id = {'1': 'choice-0', 'a': 'choice-0', '2': 'choice-1', 'b': 'choice-1'}[key];
    if (id) document.getElementById(id).click();
  });
})();
"""


def _slot_name(slot: int) -> str:
    return "AB"[slot] if slot < 2 else str(slot + 1)


def _page(title: str, body: str, nonce: str = "", status: int = 200) -> HTMLResponse:
    """A page with a strict Content-Security-Policy: only our own script (by nonce) may run."""
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>{body}</body></html>")
    script = f"'nonce-{nonce}'" if nonce else "'none'"
    policy = (f"default-src 'none'; style-src 'unsafe-inline'; script-src {script}; form-action 'self'; "
              "base-uri 'none'; frame-ancestors 'none'")
    return HTMLResponse(page, status_code=status, headers={"Content-Security-Policy": policy,
                                                           "X-Content-Type-Options": "nosniff"})


def csrf_token(session_token: str, secret: bytes) -> str:
    return hmac.new(secret, session_token.encode(), hashlib.sha256).hexdigest()


class RateLimiter:
    """At most ``limit`` requests per ``window`` seconds per key (a sliding window)."""

    def __init__(self, limit: int, window: float = 60.0):
        self.limit, self.window = limit, window
        self.hits: dict[str, deque] = defaultdict(deque)
        self.lock = threading.Lock()

    def allow(self, key: str) -> bool:
        if self.limit <= 0:
            return True
        now = time.monotonic()
        with self.lock:
            hits = self.hits[key]
            while hits and now - hits[0] > self.window:
                hits.popleft()
            if len(hits) >= self.limit:
                return False
            hits.append(now)
            return True


def create_app(db_path: str, admin_token: str, rate_limit: int = 600):
    """The FastAPI app; ``admin_token`` guards /admin; annotators are the store's ``annotators`` rows."""
    store = LabelStore(db_path)
    secret = secrets.token_bytes(32)
    limiter = RateLimiter(rate_limit)
    store_lock = threading.Lock()
    app = FastAPI(title="tether labeling", docs_url=None, redoc_url=None, openapi_url=None)

    def who(request: Request) -> tuple[str, str, str] | None:
        """(name, role, token) of the caller, from the session cookie or a Bearer header."""
        token = request.cookies.get(COOKIE, "")
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            token = auth[7:].strip()
        if not token:
            return None
        with store_lock:
            found = store.annotator_for_token(token)
        return (found[0], found[1], token) if found else None

    def login_page(message: str = "", status: int = 200) -> HTMLResponse:
        note = f"<p style='color:#b00'>{html.escape(message)}</p>" if message else ""
        body = ("<h1>tether labeling</h1>" + note +
                "<form method='post' action='/login'><label>Your token <input name='token' id='token' "
                "type='password' autofocus></label> <button type='submit' id='login'>Log in</button></form>")
        return _page("Log in", body, status=status)

    @app.get("/", response_class=HTMLResponse)
    def index(request: Request):
        caller = who(request)
        if caller is None:
            return login_page()
        name, _, token = caller
        with store_lock:
            item = store.next_item(name)
            done, total = store.progress(name)
        header = (f"<p class='progress' id='progress'>Logged in as <b>{html.escape(name)}</b> — "
                  f"{done} of {total} labelled</p>")
        if item is None:
            return _page("Done", header + "<h2 id='done'>All done — thank you!</h2>")
        order = list(range(len(item.responses)))
        random.Random(f"{name}:{item.item_id}").shuffle(order)
        rank_mode = len(order) > 2
        cards = "".join(
            f"<div class='resp' id='resp-{slot}'><h3>Response {_slot_name(slot)} <span class='rank' id='rank-{slot}'>"
            f"</span></h3><div class='text'>{html.escape(item.responses[index])}</div></div>"
            for slot, index in enumerate(order))
        if rank_mode:
            question = ("Rank the responses, best first: click them (or press 1–"
                        f"{len(order)}) in order; u undoes, Enter submits.")
            buttons = ("<input type='hidden' name='ranking' id='ranking' value='[]'>"
                       "<button type='submit' name='slot' value='rank' id='submit-ranking' disabled>"
                       "Submit ranking (Enter)</button><button type='button' id='undo'>Undo (u)</button>")
        else:
            question = "Which response is better?"
            buttons = "".join(f"<button type='submit' name='slot' value='{slot}' id='choice-{slot}'>"
                              f"{_slot_name(slot)} is better ({slot + 1})</button>" for slot in range(len(order)))
        nonce = secrets.token_urlsafe(16)
        body = (header + f"<h2>{question}</h2>"
                f"<div class='prompt' id='prompt'>{html.escape(item.prompt)}</div>"
                f"<div class='pair{' ranking' if rank_mode else ''}'>{cards}</div>"
                f"<form method='post' action='/label' id='label-form' data-k='{len(order)}' "
                f"data-mode='{'rank' if rank_mode else 'pick'}'>"
                f"<input type='hidden' name='item_id' value='{html.escape(item.item_id)}'>"
                f"<input type='hidden' name='shown_order' value='{html.escape(json.dumps(order))}'>"
                f"<input type='hidden' name='started' value='{time.time():.3f}'>"
                f"<input type='hidden' name='csrf' value='{csrf_token(token, secret)}'>"
                "<p><label>Confidence <select name='confidence'><option value=''>–</option>"
                "<option value='0.5'>unsure</option><option value='0.75'>fairly sure</option>"
                "<option value='1.0'>sure</option></select></label> "
                "<label>Why (optional) <input name='rationale' maxlength='500' size='50'></label></p>"
                f"{buttons}<button type='submit' name='slot' value='tie' id='tie'>Tie (t)</button>"
                "<button type='submit' name='slot' value='skip' id='skip'>Skip (s)</button></form>"
                f"<script nonce='{nonce}'>{KEYS_SCRIPT}</script>")
        return _page("Label", body, nonce)

    @app.post("/login")
    def login(token: str = Form("")):
        with store_lock:
            found = store.annotator_for_token(token) if token else None
        if found is None:
            return login_page("Unknown token.", status=401)
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(COOKIE, token, httponly=True, samesite="strict")
        return response

    def _store_label(name: str, item_id: str, slot: str, shown_order: list[int], confidence: float | None,
                     rationale: str | None, seconds: float | None, ranking: list | None = None) -> tuple[bool, str]:
        """Validate and commit one label; ``slot``/``ranking`` are positions in the order shown."""
        with store_lock:
            item = store.item(item_id)
        if item is None:
            return False, "unknown item"
        if sorted(shown_order) != list(range(len(item.responses))):
            return False, "shown_order is not a permutation of the item's responses"
        tie, skipped, choice, ranked = slot == "tie", slot == "skip", None, None
        if slot == "rank":
            if not isinstance(ranking, list) or sorted(ranking) != list(range(len(shown_order))):
                return False, f"ranking must list every shown position 0..{len(shown_order) - 1} once, best first"
            ranked = [shown_order[position] for position in ranking]
            choice = ranked[0]
        elif not (tie or skipped):
            if not slot.isdigit() or int(slot) >= len(shown_order):
                return False, "slot must be a response position, 'rank', 'tie' or 'skip'"
            choice = shown_order[int(slot)]
        if confidence is not None and not 0.0 <= confidence <= 1.0:
            return False, "confidence must be between 0 and 1"
        label = StoredLabel(name, item_id, choice, tie=tie, skipped=skipped, confidence=confidence,
                            rationale=(rationale or None) and str(rationale)[:500], shown_order=shown_order,
                            seconds=seconds, ranking=ranked)
        with store_lock:
            stored = store.add_label(label)  # committed (fsync'd) before we answer
        return stored, "" if stored else "already labelled"

    @app.post("/label")
    def label_form(request: Request, item_id: str = Form(...), slot: str = Form(...), shown_order: str = Form(...),
                   csrf: str = Form(""), confidence: str = Form(""), rationale: str = Form(""),
                   started: str = Form(""), ranking: str = Form("")):
        caller = who(request)
        if caller is None:
            return PlainTextResponse("log in first", status_code=401)
        name, _, token = caller
        if not hmac.compare_digest(csrf, csrf_token(token, secret)):
            return PlainTextResponse("bad or missing CSRF token", status_code=403)
        if not limiter.allow(name):
            return PlainTextResponse("too many requests", status_code=429)
        try:
            order = json.loads(shown_order)
            ranked = json.loads(ranking) if ranking else None
            conf = float(confidence) if confidence else None
            seconds = max(0.0, time.time() - float(started)) if started else None
        except (ValueError, TypeError):
            return PlainTextResponse("malformed form", status_code=422)
        ok, problem = _store_label(name, item_id, slot, order if isinstance(order, list) else [], conf, rationale,
                                   seconds, ranked)
        if not ok and problem != "already labelled":
            return PlainTextResponse(problem, status_code=422)
        return RedirectResponse("/", status_code=303)

    @app.post("/api/labels")
    async def label_api(request: Request):
        caller = who(request)
        if caller is None:
            return JSONResponse({"error": "missing or invalid bearer token"}, status_code=401)
        name = caller[0]
        if not limiter.allow(name):
            return JSONResponse({"error": "too many requests"}, status_code=429)
        try:
            body = await request.json()
            item_id, slot = str(body["item_id"]), str(body["slot"])
            order = body.get("shown_order") or [0, 1]
            confidence = float(body["confidence"]) if body.get("confidence") is not None else None
            seconds = float(body["seconds"]) if body.get("seconds") is not None else None
            ranking = body.get("ranking")
            if not isinstance(order, list) or not all(isinstance(i, int) for i in order):
                raise ValueError("shown_order")
            if ranking is not None and not (isinstance(ranking, list) and all(isinstance(i, int) for i in ranking)):
                raise ValueError("ranking")
        except (ValueError, KeyError, TypeError, AttributeError, json.JSONDecodeError):
            return JSONResponse({"error": "expected JSON {item_id, slot (position, 'rank', 'tie' or 'skip'), "
                                          "shown_order?, ranking? (positions best first), confidence?, rationale?, "
                                          "seconds?}"}, status_code=422)
        ok, problem = _store_label(name, item_id, slot, order, confidence, body.get("rationale"), seconds, ranking)
        if not ok:
            return JSONResponse({"error": problem}, status_code=409 if problem == "already labelled" else 422)
        return JSONResponse({"stored": True}, status_code=201)

    def _is_admin(request: Request) -> bool:
        supplied = request.headers.get("authorization", "")[7:].strip() or request.query_params.get("token", "")
        return bool(supplied) and hmac.compare_digest(supplied, admin_token)

    @app.get("/admin", response_class=HTMLResponse)
    def admin(request: Request):
        if not _is_admin(request):
            return PlainTextResponse("admin token required", status_code=403)
        from tether.feedback.stats import label_stats

        with store_lock:
            report = label_stats(store.items(), store.labels())
        fmt = lambda v: "–" if v is None else f"{v:.3f}"  # noqa: E731
        rows = "".join(f"<tr><td>{html.escape(n)}</td><td>{a['labels']}</td><td>{a['ties']}</td><td>{a['skips']}</td>"
                       f"<td>{fmt(a['gold_accuracy'])}</td><td>{fmt(a['estimated_accuracy'])}</td>"
                       f"<td>{fmt(a['mean_seconds'])}</td></tr>" for n, a in report["annotators"].items())
        body = (f"<h1>Annotators</h1><p>{report['labels']} labels on {report['items']} items; pairwise agreement "
                f"{fmt(report['pairwise_agreement'])}, Krippendorff's α {fmt(report['krippendorff_alpha'])}</p>"
                "<table id='annotators'><tr><th>annotator</th><th>labels</th><th>ties</th><th>skips</th>"
                f"<th>gold accuracy</th><th>estimated accuracy</th><th>mean seconds</th></tr>{rows}</table>"
                "<p>Export: <code>/admin/export</code> (preferences.jsonl)</p>")
        return _page("Admin", body)

    @app.get("/admin/export")
    def export(request: Request):
        if not _is_admin(request):
            return PlainTextResponse("admin token required", status_code=403)
        from tether.feedback.stats import preference_rows

        with store_lock:
            items, labels = store.items(), store.labels()
        rows, _ = preference_rows(items, labels, "majority")
        lines = [json.dumps(row, ensure_ascii=False) for row in rows]
        return PlainTextResponse("\n".join(lines) + ("\n" if lines else ""), media_type="application/x-ndjson")

    app.state.store = store
    return app
