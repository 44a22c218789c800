"""The label store: every judgement, by people, an AI judge or a simulated panel, in one SQLite file.

SQLite in WAL mode with ``synchronous=FULL``: a label is on disk when ``add_label`` returns,
so an acknowledged label survives a crash. Tables:

- ``items``: id, prompt, responses (JSON list), whether it is a gold question and its gold answer
- ``labels``: who (annotator or judge), which item, the choice (index into the item's
  responses; NULL for a tie or skip), the full ranking when the annotator ranked K responses
  (response indices, best first; its first entry is the choice), tie / skip flags,
  confidence, rationale, the order the responses were shown in, seconds spent, and when
"""

from __future__ import annotations

import hashlib
import json
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
  UNIQUE (annotator, item_id)
);
"""
LABEL_COLUMNS = ("annotator, item_id, choice, tie, skipped, confidence, rationale, shown_order, seconds, created, "
                 "ranking")


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass
class Item:
    item_id: str
    prompt: str
    responses: list[str]
    is_gold: bool = False
    gold_choice: int | None = None
    source: str = ""


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


class LabelStore:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(self.path), timeout=30, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("PRAGMA busy_timeout=30000")
        self.db.executescript(SCHEMA)
        columns = {row[1] for row in self.db.execute("PRAGMA table_info(labels)")}
        if "ranking" not in columns:  # a store written before rankings existed
            with self.db:
                self.db.execute("ALTER TABLE labels ADD COLUMN ranking TEXT")

    def close(self) -> None:
        self.db.close()

    def add_items(self, items: list[Item]) -> int:
        """Insert items (existing ids are kept unchanged); returns how many were new."""
        with self.db:
            before = self.db.total_changes
            self.db.executemany(
                "INSERT OR IGNORE INTO items VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(i.item_id, i.prompt, json.dumps(i.responses), int(i.is_gold), i.gold_choice, i.source, time.time())
                 for i in items])
            return self.db.total_changes - before

    def add_label(self, label: StoredLabel) -> bool:
        """Commit one label; False if this annotator already labelled the item (nothing changes)."""
        return self.add_labels([label]) == 1

    def add_labels(self, labels: list[StoredLabel]) -> int:
        with self.db:
            before = self.db.total_changes
            self.db.executemany(
                f"INSERT OR IGNORE INTO labels ({LABEL_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(lab.annotator, lab.item_id, lab.choice, int(lab.tie), int(lab.skipped), lab.confidence,
                  lab.rationale, json.dumps(lab.shown_order) if lab.shown_order is not None else None, lab.seconds,
                  lab.created or time.time(), json.dumps(lab.ranking) if lab.ranking is not None else None)
                 for lab in labels])
            return self.db.total_changes - before

    def set_annotator(self, name: str, token: str, role: str = "annotator") -> None:
        """Register (or re-key) an annotator; only the token's sha256 is stored."""
        with self.db:
            self.db.execute("INSERT OR REPLACE INTO annotators VALUES (?, ?, ?, ?)",
                            (name, token_digest(token), role, time.time()))

    def annotator_for_token(self, token: str) -> tuple[str, str] | None:
        """(name, role) of the token's owner, or None."""
        row = self.db.execute("SELECT name, role FROM annotators WHERE token_sha256 = ?",
                              (token_digest(token),)).fetchone()
        return (row[0], row[1]) if row else None

    def next_item(self, annotator: str, seed: int = 0) -> Item | None:
        """An item this annotator has not labelled yet (a stable per-annotator shuffle), or None."""
        rows = self.db.execute(
            "SELECT item_id FROM items WHERE item_id NOT IN (SELECT item_id FROM labels WHERE annotator = ?)",
            (annotator,)).fetchall()
        if not rows:
            return None
        ids = sorted(r[0] for r in rows)
        pick = min(ids, key=lambda i: hashlib.sha256(f"{annotator}:{seed}:{i}".encode()).hexdigest())
        return self.item(pick)

    def item(self, item_id: str) -> Item | None:
        row = self.db.execute("SELECT item_id, prompt, responses, is_gold, gold_choice, source FROM items "
                              "WHERE item_id = ?", (item_id,)).fetchone()
        return Item(row[0], row[1], json.loads(row[2]), bool(row[3]), row[4], row[5] or "") if row else None

    def progress(self, annotator: str) -> tuple[int, int]:
        done = self.db.execute("SELECT COUNT(*) FROM labels WHERE annotator = ?", (annotator,)).fetchone()[0]
        total = self.db.execute("SELECT COUNT(*) FROM items").fetchone()[0]
        return done, total

    def items(self) -> list[Item]:
        rows = self.db.execute("SELECT item_id, prompt, responses, is_gold, gold_choice, source FROM items "
                               "ORDER BY rowid").fetchall()
        return [Item(r[0], r[1], json.loads(r[2]), bool(r[3]), r[4], r[5] or "") for r in rows]

    def labels(self) -> list[StoredLabel]:
        rows = self.db.execute(f"SELECT {LABEL_COLUMNS} FROM labels ORDER BY id").fetchall()
        return [StoredLabel(r[0], r[1], r[2], bool(r[3]), bool(r[4]), r[5], r[6], json.loads(r[7]) if r[7] else None,
                            r[8], r[9], json.loads(r[10]) if r[10] else None) for r in rows]
