"""The label store: every judgement, by people, an AI judge or a simulated panel, in one SQLite file.

SQLite in WAL mode with ``synchronous=FULL``: a label is on disk when ``add_label`` returns,
so an acknowledged label survives a crash. Tables:

- ``items``: id, prompt, responses (JSON list), whether it is a gold question and its gold answer.
  Items loaded from samples files are keyed by :func:`content_id` (a hash of the prompt and the
  set of responses), so the same comparison loaded twice is one item and different files never collide;
- ``labels``: who (annotator or judge), which item, the choice (index into the item's
  responses; NULL for a tie, "both bad" or a skip), the full ranking when the annotator ranked K
  responses (response indices, best first; its first entry is the choice), tie / both-bad / skip
  flags, confidence, rationale, the order the responses were shown in, seconds spent, and when.
  A skip is not a judgement: the item comes back at the end of the annotator's queue, and a later
  judgement replaces the skip;
- ``retracted_labels``: labels taken back (an annotator's undo) or replaced (a skip followed by a
  judgement), kept with the reason and the time — nothing an annotator submitted is deleted;
- ``annotators``: name, sha256 of the personal token, role, and which guidelines they have read;
- ``sessions``: browser sessions (sha256 of the session cookie, who, its CSRF token, expiry);
- ``settings``: the sha256 of the admin token, so a restarted server keeps it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import secrets
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
  item_id TEXT PRIMARY KEY,
  prompt TEXT NOT NULL,
  responses TEXT NOT NULL,
  is_gold INTEGER NOT NULL DEFAULT 0,
  gold_choice INTEGER,
  source TEXT,
  created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS annotators (
  name TEXT PRIMARY KEY,
  token_sha256 TEXT NOT NULL UNIQUE,
  role TEXT NOT NULL DEFAULT 'annotator',
  created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS labels (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  annotator TEXT NOT NULL,
  item_id TEXT NOT NULL REFERENCES items(item_id),
  choice INTEGER,
  tie INTEGER NOT NULL DEFAULT 0,
  skipped INTEGER NOT NULL DEFAULT 0,
  confidence REAL,
  rationale TEXT,
  shown_order TEXT,
  seconds REAL,
  created REAL NOT NULL,
  ranking TEXT,
  both_bad INTEGER NOT NULL DEFAULT 0,
  UNIQUE (annotator, item_id)
);
CREATE TABLE IF NOT EXISTS retracted_labels (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  annotator TEXT NOT NULL,
  item_id TEXT NOT NULL,
  choice INTEGER,
  tie INTEGER NOT NULL DEFAULT 0,
  skipped INTEGER NOT NULL DEFAULT 0,
  confidence REAL,
  rationale TEXT,
  shown_order TEXT,
  seconds REAL,
  created REAL NOT NULL,
  ranking TEXT,
  both_bad INTEGER NOT NULL DEFAULT 0,
  reason TEXT NOT NULL,
  retracted REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
  session_sha256 TEXT PRIMARY KEY,
  name TEXT NOT NULL,
  role TEXT NOT NULL,
  csrf TEXT NOT NULL,
  expires REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS settings (
  key TEXT PRIMARY KEY,
  value TEXT NOT NULL
);
"""
LABEL_COLUMNS = ("annotator, item_id, choice, tie, skipped, confidence, rationale, shown_order, seconds, created, "
                 "ranking, both_bad")
MIGRATIONS = (("labels", "ranking", "TEXT"), ("labels", "both_bad", "INTEGER NOT NULL DEFAULT 0"),
              ("annotators", "guidelines_seen", "TEXT"))
MAX_SECONDS = 86400.0  # a judgement that took longer than a day was not timed (a tab left open)
MAX_RATIONALE = 500
SESSION_SECONDS = 12 * 3600
ADMIN_KEY = "admin_token_sha256"


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def content_id(prompt: str, responses: list[str]) -> str:
    """A stable item id from the prompt and the *set* of responses (the order they are stored in does not matter)."""
    payload = json.dumps([prompt, sorted(responses)], ensure_ascii=False, separators=(",", ":"))
    return "c" + hashlib.sha256(payload.encode("utf-8")).hexdigest()[:24]


@dataclass
class Item:
    item_id: str
    prompt: str
    responses: list[str]
    is_gold: bool = False
    gold_choice: int | None = None
    source: str = ""

    def problem(self) -> str | None:
        """Why this item cannot be shown to an annotator, or None."""
        if not isinstance(self.item_id, str) or not self.item_id:
            return "the item id must be non-empty text"
        if not isinstance(self.prompt, str):
            return f"the prompt must be text, not {type(self.prompt).__name__}"
        if not isinstance(self.responses, list) or len(self.responses) < 2:
            return "needs a list of at least two responses"
        for n, response in enumerate(self.responses):
            if not isinstance(response, str):
                return f"response {n} must be text, not {type(response).__name__}"
        if self.gold_choice is not None and (not _is_int(self.gold_choice)
                                             or not 0 <= self.gold_choice < len(self.responses)):
            return f"gold_choice {self.gold_choice!r} is not a response index"
        return None

    def content_key(self) -> str:
        return content_id(self.prompt, self.responses)


@dataclass
class StoredLabel:
    annotator: str
    item_id: str
    choice: int | None
    tie: bool = False
    skipped: bool = False
    confidence: float | None = None
    rationale: str | None = None
    shown_order: list[int] | None = None
    seconds: float | None = None
    created: float = 0.0
    ranking: list[int] | None = None  # response indices, best first (K-way ranking); ranking[0] == choice
    both_bad: bool = False            # no response is acceptable (excluded from preference exports by default)

    def problem(self) -> str | None:
        """Why this label must not be stored (a wrong type or a value out of range), or None."""
        if not isinstance(self.annotator, str) or not self.annotator or not isinstance(self.item_id, str):
            return "annotator and item_id must be text"
        if self.choice is not None and (not _is_int(self.choice) or self.choice < 0):
            return f"choice {self.choice!r} is not a response index"
        if sum(map(bool, (self.tie, self.skipped, self.both_bad, self.choice is not None))) != 1:
            return "a label is exactly one of: a choice, a tie, both bad, or a skip"
        for name in ("shown_order", "ranking"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, list) or not value or not all(map(_is_int, value))
                                      or sorted(value) != list(range(len(value)))):
                return f"{name} must be a permutation of response indices"
        if self.ranking is not None and self.ranking[0] != self.choice:
            return "a ranking's first entry must be the choice"
        if self.confidence is not None and not (_is_number(self.confidence) and 0.0 <= self.confidence <= 1.0):
            return f"confidence {self.confidence!r} is not a number between 0 and 1"
        if self.seconds is not None and not (_is_number(self.seconds) and 0.0 <= self.seconds <= MAX_SECONDS):
            return f"seconds {self.seconds!r} is not a duration between 0 and {MAX_SECONDS:g}"
        if self.rationale is not None and not isinstance(self.rationale, str):
            return f"rationale must be text, not {type(self.rationale).__name__}"
        return None


@dataclass
class Added:
    """What :meth:`LabelStore.add_items` did.

    ``ids`` maps each given id to the id the item has in the store, and ``orders`` maps a given id
    to the stored index of each of its responses where the store holds them in another order;
    :meth:`remap` applies both to a label written against the given item.
    """

    new: list[str]
    existing: list[str]
    ids: dict[str, str]
    orders: dict[str, list[int]]

    def remap(self, label: StoredLabel) -> StoredLabel:
        order = self.orders.get(label.item_id)
        label.item_id = self.ids.get(label.item_id, label.item_id)
        if order is not None:
            label.choice = None if label.choice is None else order[label.choice]
            label.ranking = None if label.ranking is None else [order[r] for r in label.ranking]
            label.shown_order = None if label.shown_order is None else [order[r] for r in label.shown_order]
        return label


@dataclass
class Progress:
    done: int      # judgements (skips do not count)
    skipped: int   # skipped items, waiting at the end of the queue
    total: int     # items that can be shown


@dataclass
class Session:
    name: str
    role: str  # 'annotator' or 'admin'
    csrf: str


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _rank_key(annotator: str, seed: int, item_id: str) -> str:
    return hashlib.sha256(f"{annotator}:{seed}:{item_id}".encode()).hexdigest()


class LabelStore:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(self.path), timeout=30, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("PRAGMA busy_timeout=30000")
        self.db.executescript(SCHEMA)
        self._migrate()
        self._unservable_cache: tuple = (None, 0)

    def _migrate(self) -> None:
        """Columns added since a store was written (an older store gains them when opened)."""
        for table, column, declaration in MIGRATIONS:
            columns = {row[1] for row in self.db.execute(f"PRAGMA table_info({table})")}
            if column not in columns:
                with self.db:
                    self.db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")

    def close(self) -> None:
        self.db.close()

    # ------------------------------------------------------------------ items

    def add_items(self, items: list[Item], match_content: bool = False) -> Added:
        """Insert items; returns what was new and what the store already had.

        An item is already there when its id is stored with the same content (prompt + set of
        responses) or, with ``match_content``, when any stored item has its content (how samples
        and imports are loaded: a comparison is never added twice, whatever id an older version
        gave it). A new item whose id is taken by a different item gets its :func:`content_id`
        instead (see ``Added.ids``), so nothing is silently dropped or attached to the wrong item.
        Raises ValueError, storing nothing, when an item cannot be shown (:meth:`Item.problem`).
        """
        problems = [f"item {i.item_id!r}: {p}" for i in items if (p := i.problem())]
        if problems:
            raise ValueError("; ".join(problems))
        known, by_content = self._content_index()
        added = Added([], [], {}, {})
        rows = []
        for item in items:
            key = item.content_key()
            stored = _stored_match(item, key, known, by_content if match_content else {})
            if stored is not None:
                added.existing.append(item.item_id)
                added.ids[item.item_id] = stored.item_id
                if stored.responses != item.responses:
                    added.orders[item.item_id] = _order_in(item.responses, stored.responses)
                continue
            item_id = item.item_id if item.item_id not in known else content_id(item.prompt, item.responses)
            if item_id in known:
                raise ValueError(f"item {item.item_id!r}: its id and its content id {item_id!r} name other items")
            known[item_id] = Item(item_id, item.prompt, item.responses)
            by_content.setdefault(key, known[item_id])
            added.new.append(item.item_id)
            added.ids[item.item_id] = item_id
            rows.append((item_id, item.prompt, json.dumps(item.responses, ensure_ascii=False), int(item.is_gold),
                         item.gold_choice, item.source, time.time()))
        with self.db:
            self.db.executemany("INSERT INTO items VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
        return added

    def _content_index(self) -> tuple[dict[str, Item], dict[str, Item]]:
        """Stored items by id and by content key."""
        by_id, by_content = {}, {}
        for item in self.items():
            by_id[item.item_id] = item
            if item.problem() is None:
                by_content.setdefault(item.content_key(), item)
        return by_id, by_content

    def item(self, item_id: str) -> Item | None:
        row = self.db.execute("SELECT item_id, prompt, responses, is_gold, gold_choice, source FROM items "
                              "WHERE item_id = ?", (item_id,)).fetchone()
        return _item(row) if row else None

    def items(self) -> list[Item]:
        rows = self.db.execute("SELECT item_id, prompt, responses, is_gold, gold_choice, source FROM items "
                               "ORDER BY rowid").fetchall()
        return [_item(r) for r in rows]

    def unservable_items(self) -> list[tuple[str, str]]:
        """(item id, problem) of stored items that cannot be shown (written by an older version, or by hand)."""
        return [(i.item_id, p) for i in self.items() if (p := i.problem())]

    # ------------------------------------------------------------------ labels

    def add_label(self, label: StoredLabel) -> bool:
        """Commit one label; False if this annotator already judged the item (nothing changes).

        A judgement replaces the same annotator's earlier skip of the item (the skip is kept in
        ``retracted_labels``); skipping a skipped item again moves it to the end of the queue.
        """
        return self.add_labels([label]) == 1

    def add_labels(self, labels: list[StoredLabel]) -> int:
        """Commit labels in one transaction; returns how many were stored. ValueError (nothing stored) on a bad one."""
        problems = [f"label of {lab.annotator!r} on {lab.item_id!r}: {p}" for lab in labels if (p := lab.problem())]
        if problems:
            raise ValueError("; ".join(problems))
        stored = 0
        now = time.time()
        insert = f"INSERT OR IGNORE INTO labels ({LABEL_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        with self.db:
            for lab in labels:
                row = _label_row(lab, now)
                if self.db.execute(insert, row).rowcount == 1:
                    stored += 1
                    continue
                previous = self.db.execute("SELECT skipped FROM labels WHERE annotator = ? AND item_id = ?",
                                           (lab.annotator, lab.item_id)).fetchone()
                if previous is not None and previous[0]:  # a judgement (or a new skip) replaces a skip
                    self._retract(lab.annotator, lab.item_id, "replaced skip", now)
                    stored += self.db.execute(insert, row).rowcount
        return stored

    def _retract(self, annotator: str, item_id: str, reason: str, now: float) -> None:
        self.db.execute(f"INSERT INTO retracted_labels ({LABEL_COLUMNS}, reason, retracted) SELECT {LABEL_COLUMNS}, "
                        "?, ? FROM labels WHERE annotator = ? AND item_id = ?", (reason, now, annotator, item_id))
        self.db.execute("DELETE FROM labels WHERE annotator = ? AND item_id = ?", (annotator, item_id))

    def last_label(self, annotator: str) -> StoredLabel | None:
        row = self.db.execute(f"SELECT {LABEL_COLUMNS} FROM labels WHERE annotator = ? ORDER BY created DESC, id DESC "
                              "LIMIT 1", (annotator,)).fetchone()
        return _label(row) if row else None

    def undo_last(self, annotator: str, window: float) -> str | None:
        """Take back the annotator's most recent label if it is at most ``window`` seconds old; its item id or None.

        The label moves to ``retracted_labels`` (reason 'undone') and the item is the next one served.
        """
        now = time.time()
        with self.db:
            last = self.last_label(annotator)
            if last is None or now - last.created > window:
                return None
            self._retract(annotator, last.item_id, "undone", now)
        return last.item_id

    def retracted(self) -> list[tuple[StoredLabel, str, float]]:
        rows = self.db.execute(f"SELECT {LABEL_COLUMNS}, reason, retracted FROM retracted_labels ORDER BY id").fetchall()
        return [(_label(r[:12]), r[12], r[13]) for r in rows]

    def labels(self) -> list[StoredLabel]:
        rows = self.db.execute(f"SELECT {LABEL_COLUMNS} FROM labels ORDER BY id").fetchall()
        return [_label(r) for r in rows]

    # ------------------------------------------------------------------ the queue

    def next_item(self, annotator: str, seed: int = 0) -> Item | None:
        """The next item for this annotator, or None when nothing is left.

        First an item whose label the annotator just undid, then the items they have not seen (in
        a stable per-annotator shuffle), then the items they skipped, the oldest skip first.
        Items that cannot be shown are passed over, so one bad item never blocks the queue.
        """
        for item_id in self._queue(annotator, seed):
            item = self.item(item_id)
            if item is not None and item.problem() is None:
                return item
        return None

    def _queue(self, annotator: str, seed: int):
        judged = {r[0]: r[1] for r in self.db.execute("SELECT item_id, skipped FROM labels WHERE annotator = ?",
                                                     (annotator,))}
        undone = self.db.execute("SELECT item_id FROM retracted_labels WHERE annotator = ? AND reason = 'undone' "
                                 "ORDER BY retracted DESC LIMIT 1", (annotator,)).fetchone()
        if undone is not None and undone[0] not in judged:
            yield undone[0]
        unseen = [r[0] for r in self.db.execute("SELECT item_id FROM items") if r[0] not in judged]
        yield from sorted(unseen, key=lambda i: _rank_key(annotator, seed, i))
        yield from (r[0] for r in self.db.execute("SELECT item_id FROM labels WHERE annotator = ? AND skipped = 1 "
                                                  "ORDER BY created, id", (annotator,)))

    def progress(self, annotator: str) -> Progress:
        done, skipped = self.db.execute("SELECT COUNT(*) - COALESCE(SUM(skipped), 0), COALESCE(SUM(skipped), 0) "
                                        "FROM labels WHERE annotator = ?", (annotator,)).fetchone()
        return Progress(done, skipped, self.servable_count())

    def servable_count(self) -> int:
        """How many items can be shown (items are only ever added, so the count of bad ones is cached)."""
        count, last = self.db.execute("SELECT COUNT(*), MAX(rowid) FROM items").fetchone()
        if self._unservable_cache[0] != (count, last):
            self._unservable_cache = ((count, last), len(self.unservable_items()))
        return count - self._unservable_cache[1]

    # ------------------------------------------------------------------ people, sessions, tokens

    def set_annotator(self, name: str, token: str, role: str = "annotator") -> None:
        """Register (or re-key) an annotator; only the token's sha256 is stored. Re-keying ends their sessions."""
        with self.db:
            self.db.execute("INSERT INTO annotators (name, token_sha256, role, created) VALUES (?, ?, ?, ?) "
                            "ON CONFLICT(name) DO UPDATE SET token_sha256 = excluded.token_sha256, role = excluded.role",
                            (name, token_digest(token), role, time.time()))
            self.db.execute("DELETE FROM sessions WHERE name = ? AND role = ?", (name, role))

    def annotator_names(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT name FROM annotators ORDER BY name")]

    def annotator_for_token(self, token: str) -> tuple[str, str] | None:
        """(name, role) of the token's owner, or None."""
        row = self.db.execute("SELECT name, role FROM annotators WHERE token_sha256 = ?",
                              (token_digest(token),)).fetchone()
        return (row[0], row[1]) if row else None

    def set_admin_token(self, token: str) -> None:
        with self.db:
            self.db.execute("INSERT OR REPLACE INTO settings VALUES (?, ?)", (ADMIN_KEY, token_digest(token)))
            self.db.execute("DELETE FROM sessions WHERE role = 'admin'")

    def has_admin_token(self) -> bool:
        return self.db.execute("SELECT 1 FROM settings WHERE key = ?", (ADMIN_KEY,)).fetchone() is not None

    def is_admin_token(self, token: str) -> bool:
        row = self.db.execute("SELECT value FROM settings WHERE key = ?", (ADMIN_KEY,)).fetchone()
        return bool(token) and row is not None and hmac.compare_digest(row[0], token_digest(token))

    def guidelines_seen(self, name: str) -> str | None:
        row = self.db.execute("SELECT guidelines_seen FROM annotators WHERE name = ?", (name,)).fetchone()
        return row[0] if row else None

    def mark_guidelines_seen(self, name: str, version: str) -> None:
        with self.db:
            self.db.execute("UPDATE annotators SET guidelines_seen = ? WHERE name = ?", (version, name))

    def start_session(self, name: str, role: str, lifetime: float = SESSION_SECONDS) -> str:
        """A new browser session; returns the cookie value (only its sha256 is stored)."""
        token = secrets.token_urlsafe(32)
        with self.db:
            self.db.execute("DELETE FROM sessions WHERE expires < ?", (time.time(),))
            self.db.execute("INSERT INTO sessions VALUES (?, ?, ?, ?, ?)",
                            (token_digest(token), name, role, secrets.token_urlsafe(32), time.time() + lifetime))
        return token

    def session(self, token: str) -> Session | None:
        if not token:
            return None
        row = self.db.execute("SELECT name, role, csrf, expires FROM sessions WHERE session_sha256 = ?",
                              (token_digest(token),)).fetchone()
        if row is None or row[3] < time.time():
            return None
        return Session(row[0], row[1], row[2])

    def end_session(self, token: str) -> None:
        with self.db:
            self.db.execute("DELETE FROM sessions WHERE session_sha256 = ?", (token_digest(token),))


def _stored_match(item: Item, key: str, known: dict[str, Item], by_content: dict[str, Item]) -> Item | None:
    """The stored item that ``item`` is (same content under its id, its content id, or anywhere in ``by_content``)."""
    for candidate in (by_content.get(key), known.get(item.item_id), known.get(content_id(item.prompt, item.responses))):
        if candidate is not None and candidate.problem() is None and candidate.content_key() == key:
            return candidate
    return None


def _order_in(given: list[str], stored: list[str]) -> list[int]:
    """For each given response, its index among the stored ones (the same multiset, in another order)."""
    free = list(range(len(stored)))
    order = []
    for response in given:
        index = next(i for i in free if stored[i] == response)
        free.remove(index)
        order.append(index)
    return order


def _item(row) -> Item:
    try:
        responses = json.loads(row[2])
    except (TypeError, ValueError):
        responses = None  # Item.problem() reports it; the item is never served
    return Item(row[0], row[1], responses, bool(row[3]), row[4], row[5] or "")


def _label_row(lab: StoredLabel, now: float) -> tuple:
    return (lab.annotator, lab.item_id, lab.choice, int(lab.tie), int(lab.skipped), lab.confidence, lab.rationale,
            json.dumps(lab.shown_order) if lab.shown_order is not None else None, lab.seconds, lab.created or now,
            json.dumps(lab.ranking) if lab.ranking is not None else None, int(lab.both_bad))


def _label(r) -> StoredLabel:
    return StoredLabel(r[0], r[1], r[2], bool(r[3]), bool(r[4]), r[5], r[6], json.loads(r[7]) if r[7] else None,
                       r[8], r[9], json.loads(r[10]) if r[10] else None, bool(r[11]))
