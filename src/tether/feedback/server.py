"""The web labeling app: annotators compare responses in a browser; every label lands in the label store.

FastAPI over :class:`tether.feedback.store.LabelStore` (SQLite, WAL, ``synchronous=FULL``):
a label is committed before the browser is answered. Security:

- annotators log in with a personal token (only its sha256 is stored) and get a session: an
  HttpOnly, SameSite=Strict cookie naming a server-side session (stored as a sha256, ended by
  ``/logout``); failed logins are rate-limited per client address;
- every form post carries the session's CSRF token (checked server-side);
- the JSON API (``/api/labels``, ``/api/undo``) takes only ``Authorization: Bearer <token>``
  (never the cookie) and only ``application/json``, so another page cannot post as the annotator;
- the admin page and the export need the admin token: a Bearer header, or the admin login form
  (never a query string); the admin token's sha256 is kept in the store, so a restart keeps it;
- model text is always HTML-escaped; a Content-Security-Policy lets only the page's own script
  (by nonce) run; every response says ``Cache-Control: no-store``, ``Referrer-Policy: no-referrer``,
  ``X-Frame-Options: DENY`` and ``X-Content-Type-Options: nosniff``;
- every malformed request gets a 4xx with a message naming the problem;
- the server binds to 127.0.0.1 unless told otherwise (``tether label serve host=...``).

Pages: ``/`` (login, or the next item: pick the better of two responses, or rank K > 2 by
clicking them in order), ``/guidelines`` (shown at first login and beside every item),
``/label`` (form post), ``/undo``, ``/logout``, ``/api/labels`` and ``/api/undo`` (JSON),
``/admin`` (progress, time per item, agreement, gold accuracy) and ``/admin/export``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import secrets
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders

from tether.feedback import pages
from tether.feedback.store import Item, LabelStore, Session
from tether.feedback.submission import USAGE, BadSubmission, Submission, from_form, from_json, to_label

COOKIE = "tether_session"
MAX_BODY = 64 * 1024
UNDO_SECONDS = 120
SECURITY_HEADERS = {"cache-control": "no-store", "referrer-policy": "no-referrer", "x-frame-options": "DENY",
                    "x-content-type-options": "nosniff", "content-security-policy": "default-src 'none'; "
                    "frame-ancestors 'none'"}
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


class RateLimiter:
    """At most ``limit`` requests per ``window`` seconds per key (a sliding window)."""

    def __init__(self, limit: int, window: float = 60.0):
        self.limit, self.window = limit, window
        self.hits: dict[str, deque] = defaultdict(deque)
        self.lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque:
        hits = self.hits[key]
        while hits and now - hits[0] > self.window:
            hits.popleft()
        return hits

    def allow(self, key: str) -> bool:
        """Count one request; False when the key is over its limit."""
        if self.limit <= 0:
            return True
        now = time.monotonic()
        with self.lock:
            hits = self._recent(key, now)
            if len(hits) >= self.limit:
                return False
            hits.append(now)
            return True

    def blocked(self, key: str) -> bool:
        """Whether the key is over its limit, without counting a request (count failures with :meth:`allow`)."""
        if self.limit <= 0:
            return False
        with self.lock:
            return len(self._recent(key, time.monotonic())) >= self.limit


class SecurityHeaders:
    """ASGI middleware: the headers of :data:`SECURITY_HEADERS` on every response (a route's own CSP wins)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)


def bearer_token(request: Request) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (the scheme is case-insensitive), or None."""
    scheme, _, token = request.headers.get("authorization", "").strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token and " " not in token else None


def declared_length(request: Request) -> int:
    """The Content-Length the client declared (a malformed one counts as too large)."""
    try:
        return int(request.headers.get("content-length") or 0)
    except ValueError:
        return MAX_BODY + 1


def guidelines_version(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def guidelines_from_principles(principles) -> str:
    """Guidelines (markdown) from a constitution: its principles, and what each button means."""
    listed = "\n".join(f"- {p}" for p in principles)
    return f"""Read the prompt, then each response in full (**Show all** opens a long one).

**Pick the response a careful user would find more helpful.** Judge by these principles, in order:

{listed}

**When you cannot pick one:**

- **Tie** (`t`): both are about equally good.
- **Both bad** (`x`): no response is acceptable (wrong, harmful, off-topic or empty).
  It is recorded as such and kept out of the training data.
- **Skip** (`s`): you cannot judge this item (e.g. it needs expertise you lack). It comes back at the end of your queue.

Keys pick an answer; **Enter** confirms it, **Esc** cancels. **Undo** (`u`) takes back your last answer for
{UNDO_SECONDS // 60} minutes after you give it. Confidence and a short reason are optional but help.
"""


def default_guidelines() -> str:
    """The guidelines when a campaign gives none: the AI judge's built-in constitution."""
    from tether.feedback.judge import DEFAULT_CONSTITUTION

    return guidelines_from_principles(DEFAULT_CONSTITUTION)


@dataclass
class Outcome:
    """What storing one submission did: HTTP status for the API, toast key for the page, message."""

    status: int
    toast: str
    message: str


class Labeling:
    """One labeling app's state: the store (one connection behind one lock), the limits, the guidelines.

    Route handlers stay thin: they read the request, ask this object, and pick the response.
    """

    def __init__(self, db_path: str, admin_token: str | None, rate_limit: int, guidelines: str, login_limit: int,
                 undo_seconds: int):
        self.store = LabelStore(db_path)
        if admin_token:
            self.store.set_admin_token(admin_token)
        guidelines = guidelines.strip() or default_guidelines()
        self.version = guidelines_version(guidelines)
        self.guidelines_html = pages.render_markdown(guidelines)
        self.limiter, self.login_limiter = RateLimiter(rate_limit), RateLimiter(login_limit)
        self.undo_seconds = undo_seconds
        self.lock = threading.Lock()

    def locked(self, fn, *args):
        with self.lock:
            return fn(*args)

    # who is asking

    def session_of(self, request: Request) -> tuple[Session, str] | None:
        """(session, cookie value) of a logged-in browser, or None."""
        token = request.cookies.get(COOKIE, "")
        found = self.locked(self.store.session, token) if token else None
        return (found, token) if found else None

    def annotator_session(self, request: Request) -> Session | None:
        found = self.session_of(request)
        return found[0] if found and found[0].role == "annotator" else None

    def api_caller(self, request: Request) -> str | None:
        """The annotator named by the Bearer header (the API never takes the cookie), or None."""
        token = bearer_token(request)
        found = self.locked(self.store.annotator_for_token, token) if token else None
        return found[0] if found else None

    def is_admin(self, request: Request) -> bool:
        token = bearer_token(request)
        if token is not None:
            return self.locked(self.store.is_admin_token, token)
        found = self.session_of(request)
        return found is not None and found[0].role == "admin"

    def has_read_guidelines(self, name: str) -> bool:
        return self.locked(self.store.guidelines_seen, name) == self.version

    def start_session(self, request: Request, response: Response, name: str, role: str) -> None:
        token = self.locked(self.store.start_session, name, role)
        response.set_cookie(COOKIE, token, httponly=True, samesite="strict", path="/",
                            secure=request.url.scheme == "https")

    # labels

    def store_submission(self, name: str, submission: Submission) -> Outcome:
        """Check a submission against its item and commit it (fsync'd before the caller answers)."""
        item = self.locked(self.store.item, submission.item_id)
        if item is None:
            return Outcome(422, "", "unknown item")
        if item.problem():
            return Outcome(422, "", f"this item cannot be labelled: {item.problem()}")
        try:
            label = to_label(submission, item, name)
        except BadSubmission as exc:
            return Outcome(422, "", str(exc))
        if not self.locked(self.store.add_label, label):
            return Outcome(409, "already", "already labelled")
        return Outcome(201, "skipped" if label.skipped else "saved", "stored")

    def undo(self, name: str) -> str | None:
        return self.locked(self.store.undo_last, name, self.undo_seconds)

    # pages

    def header(self, s: Session) -> pages.Header:
        with self.lock:
            progress, last = self.store.progress(s.name), self.store.last_label(s.name)
        can_undo = last is not None and time.time() - last.created <= self.undo_seconds
        return pages.Header(s.name, s.csrf, progress, can_undo)

    def queue_page(self, s: Session, done: str) -> Response:
        item = self.locked(self.store.next_item, s.name)
        nonce = secrets.token_urlsafe(16)
        if item is None:
            return pages.done_page(self.header(s), self.guidelines_html, done, nonce)
        return pages.item_page(self.header(s), item, shown_order(s.name, item), self.guidelines_html, done, nonce)

    def admin_page(self, request: Request) -> Response:
        from tether.feedback.stats import DEFAULT_AGGREGATION, label_stats

        with self.lock:
            items, labels = self.store.items(), self.store.labels()
            unservable = self.store.unservable_items()
            names = {lab.annotator for lab in labels} | set(self.store.annotator_names())
            progress = {name: self.store.progress(name) for name in names}
            total = self.store.servable_count()
        found = self.session_of(request)
        csrf = found[0].csrf if found and found[0].role == "admin" else None
        return pages.admin_page(label_stats(items, labels), progress, total, unservable, csrf, DEFAULT_AGGREGATION)


def shown_order(name: str, item: Item) -> list[int]:
    """The order an annotator sees an item's responses in (a stable per-annotator shuffle)."""
    order = list(range(len(item.responses)))
    random.Random(f"{name}:{item.item_id}").shuffle(order)
    return order


def client_key(request: Request) -> str:
    return request.client.host if request.client else "unknown"


async def read_form(request: Request) -> dict[str, str] | None:
    """The posted form's text fields; None when the body is not a small form."""
    if request.headers.get("content-type", "").split(";")[0].strip().lower() not in FORM_TYPES:
        return None
    if declared_length(request) > MAX_BODY:
        return None
    form = await request.form(max_files=0, max_fields=20)
    return {k: v for k, v in form.items() if isinstance(v, str)}


async def read_json(request: Request):
    """The JSON body, or a JSONResponse saying what is wrong with it."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "application/json":
        return JSONResponse({"error": "send Content-Type: application/json"}, status_code=415)
    if declared_length(request) > MAX_BODY:
        return JSONResponse({"error": f"body larger than {MAX_BODY} bytes"}, status_code=413)
    raw = await request.body()
    if len(raw) > MAX_BODY:
        return JSONResponse({"error": f"body larger than {MAX_BODY} bytes"}, status_code=413)
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        return JSONResponse({"error": f"not valid JSON; {USAGE}"}, status_code=422)


def csrf_ok(s: Session, fields: dict[str, str]) -> bool:
    return hmac.compare_digest(fields.get("csrf", "").encode(), s.csrf.encode())


def bad_csrf(title: str) -> Response:
    return pages.message_page(title, "bad or missing CSRF token; reload the page", 403)


def create_app(db_path: str, admin_token: str | None = None, rate_limit: int = 600, guidelines: str = "",
               login_limit: int = 10, undo_seconds: int = UNDO_SECONDS):
    """The FastAPI app over the label store at ``db_path``.

    ``admin_token``: when given, it becomes the store's admin token (its sha256 is kept); otherwise
    the admin token stored by an earlier run is used. ``guidelines``: markdown for annotators
    (default: :func:`default_guidelines`). ``rate_limit``: labels per annotator per minute;
    ``login_limit``: failed logins per client address per minute (0 = unlimited); ``undo_seconds``:
    how long an annotator can take back their last answer.
    """
    lab = Labeling(db_path, admin_token, rate_limit, guidelines, login_limit, undo_seconds)
    app = FastAPI(title="tether labeling", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(SecurityHeaders)
    _session_routes(app, lab)
    _labeling_routes(app, lab)
    _api_routes(app, lab)
    _admin_routes(app, lab)
    app.state.store = lab.store
    return app


def _session_routes(app: FastAPI, lab: Labeling) -> None:
    """Login (rate-limited), logout, and the guidelines every annotator reads first."""

    @app.post("/login")
    async def login(request: Request):
        fields = await read_form(request) or {}
        key = client_key(request)
        if lab.login_limiter.blocked(key):
            return pages.login_page("Too many failed logins; wait a minute and try again.", status=429)
        token = fields.get("token", "")
        found = lab.locked(lab.store.annotator_for_token, token) if token else None
        if found is None:
            lab.login_limiter.allow(key)  # count the failure
            return pages.login_page("Unknown token.", status=401)
        response = RedirectResponse("/" if lab.has_read_guidelines(found[0]) else "/guidelines", status_code=303)
        lab.start_session(request, response, found[0], "annotator")
        return response

    @app.post("/logout")
    async def logout(request: Request):
        found = lab.session_of(request)
        fields = await read_form(request) or {}
        if found is not None:
            if not csrf_ok(found[0], fields):
                return bad_csrf("Not logged out")
            lab.locked(lab.store.end_session, found[1])
        response = RedirectResponse("/?done=logged_out", status_code=303)
        response.delete_cookie(COOKIE, path="/")
        return response

    @app.get("/guidelines")
    def guidelines_get(request: Request):
        s = lab.annotator_session(request)
        if s is None:
            return RedirectResponse("/", status_code=303)
        first_time = not lab.has_read_guidelines(s.name)
        return pages.guidelines_page(lab.header(s), lab.guidelines_html, first_time, secrets.token_urlsafe(16))

    @app.post("/guidelines")
    async def guidelines_post(request: Request):
        s = lab.annotator_session(request)
        if s is None:
            return pages.login_page("Log in first.", status=401)
        if not csrf_ok(s, await read_form(request) or {}):
            return bad_csrf("Not saved")
        lab.locked(lab.store.mark_guidelines_seen, s.name, lab.version)
        return RedirectResponse("/", status_code=303)


def _labeling_routes(app: FastAPI, lab: Labeling) -> None:
    """The page with the next item, its form post, and undo."""

    @app.get("/")
    def index(request: Request, done: str = ""):
        found = lab.session_of(request)
        if found is None:
            return pages.login_page(done=done if done == "logged_out" else "")
        s = found[0]
        if s.role == "admin":
            return RedirectResponse("/admin", status_code=303)
        if not lab.has_read_guidelines(s.name):
            return RedirectResponse("/guidelines", status_code=303)
        return lab.queue_page(s, done)

    @app.post("/label")
    async def label_form(request: Request):
        s = lab.annotator_session(request)
        if s is None:
            return pages.login_page("Log in first: your answer was not saved.", status=401)
        fields = await read_form(request)
        if fields is None:
            return pages.message_page("Not saved", "expected a small form post from the labeling page", 415)
        if not csrf_ok(s, fields):
            return bad_csrf("Not saved")
        if not lab.limiter.allow(s.name):
            return pages.message_page("Not saved", "too many answers in a minute; slow down", 429)
        try:
            submission = from_form(fields)
        except BadSubmission as exc:
            return pages.message_page("Not saved", str(exc), 422)
        outcome = await run_in_threadpool(lab.store_submission, s.name, submission)
        if outcome.status >= 400 and outcome.status != 409:
            return pages.message_page("Not saved", outcome.message, outcome.status)
        return RedirectResponse(f"/?done={outcome.toast}", status_code=303)

    @app.post("/undo")
    async def undo_form(request: Request):
        s = lab.annotator_session(request)
        if s is None:
            return pages.login_page("Log in first.", status=401)
        if not csrf_ok(s, await read_form(request) or {}):
            return bad_csrf("Not undone")
        undone = await run_in_threadpool(lab.undo, s.name)
        return RedirectResponse(f"/?done={'undone' if undone else 'too_late'}", status_code=303)


def _api_routes(app: FastAPI, lab: Labeling) -> None:
    """The JSON API for scripts: ``Authorization: Bearer <token>`` and ``application/json`` only."""

    @app.post("/api/labels")
    async def label_api(request: Request):
        name = await run_in_threadpool(lab.api_caller, request)
        if name is None:
            return JSONResponse({"error": "missing or invalid bearer token (Authorization: Bearer <token>)"},
                                status_code=401)
        body = await read_json(request)
        if isinstance(body, Response):
            return body
        if not lab.limiter.allow(name):
            return JSONResponse({"error": "too many requests"}, status_code=429)
        try:
            submission = from_json(body)
        except BadSubmission as exc:
            return JSONResponse({"error": str(exc)}, status_code=422)
        outcome = await run_in_threadpool(lab.store_submission, name, submission)
        if outcome.status >= 400:
            return JSONResponse({"error": outcome.message}, status_code=outcome.status)
        return JSONResponse({"stored": True, "skipped": outcome.toast == "skipped"}, status_code=201)

    @app.post("/api/undo")
    async def undo_api(request: Request):
        name = await run_in_threadpool(lab.api_caller, request)
        if name is None:
            return JSONResponse({"error": "missing or invalid bearer token"}, status_code=401)
        undone = await run_in_threadpool(lab.undo, name)
        if undone is None:
            return JSONResponse({"error": f"nothing to undo in the last {lab.undo_seconds} s"}, status_code=409)
        return JSONResponse({"undone": undone})


def _admin_routes(app: FastAPI, lab: Labeling) -> None:
    """The admin page (a login form or a Bearer header, never a query string) and the export it links to."""

    @app.get("/admin")
    def admin(request: Request):
        if not lab.is_admin(request):
            return pages.login_page("The admin page needs the admin token.", status=403, admin=True)
        return lab.admin_page(request)

    @app.post("/admin/login")
    async def admin_login(request: Request):
        fields = await read_form(request) or {}
        key = client_key(request)
        if lab.login_limiter.blocked(key):
            return pages.login_page("Too many failed logins; wait a minute and try again.", status=429, admin=True)
        if not lab.locked(lab.store.is_admin_token, fields.get("token", "")):
            lab.login_limiter.allow(key)
            return pages.login_page("Wrong admin token.", status=401, admin=True)
        response = RedirectResponse("/admin", status_code=303)
        lab.start_session(request, response, "admin", "admin")
        return response

    @app.get("/admin/export")
    def export(request: Request, method: str = ""):
        if not lab.is_admin(request):
            return PlainTextResponse("admin token required", status_code=403)
        from tether.feedback.stats import DEFAULT_AGGREGATION, preference_rows

        method = method or DEFAULT_AGGREGATION
        if method not in ("dawid_skene", "majority"):
            return PlainTextResponse("method must be dawid_skene or majority", status_code=422)
        with lab.lock:
            items, labels = lab.store.items(), lab.store.labels()
        rows, _ = preference_rows(items, labels, method)
        lines = [json.dumps(row, ensure_ascii=False) for row in rows]
        return PlainTextResponse("\n".join(lines) + ("\n" if lines else ""), media_type="application/x-ndjson",
                                 headers={"Content-Disposition": "attachment; filename=preferences.jsonl"})
