"""The conversations of `macsql serve`, on disk: a small SQLite file in the cache folder, so that a page
reload or a server restart keeps the history and every answer's link (`/#c=<id>&t=<turn>`).

A turn keeps what is needed to show the answer again (the question, its evidence, the SQL, the one-line
summary); its rows are not stored: opening an old answer runs its SQL again, read-only as always.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from pathlib import Path

from macsql.cache import cache_root
from macsql.errors import InputError

MAX_CONVERSATIONS = 5000  # the least recently used beyond this are deleted
MAX_TURNS = 50  # per conversation (the agents see only the last few: agents/prompting.py)

SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    id TEXT PRIMARY KEY, db TEXT NOT NULL, created REAL NOT NULL, updated REAL NOT NULL);
CREATE TABLE IF NOT EXISTS turns (
    conversation TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE, n INTEGER NOT NULL,
    question TEXT NOT NULL, evidence TEXT NOT NULL DEFAULT '', sql TEXT NOT NULL,
    summary TEXT NOT NULL DEFAULT '', created REAL NOT NULL, PRIMARY KEY (conversation, n));
CREATE INDEX IF NOT EXISTS conversations_updated ON conversations(updated);
"""


class UnknownConversation(InputError):
    pass


class ConversationMismatch(InputError):
    pass


def default_store_path() -> Path:
    return cache_root() / "serve" / "conversations.sqlite"


class ConversationStore:
    """Turns per conversation id, in one SQLite file; safe across threads (one connection, one lock) and
    across processes (SQLite's own locking, WAL)."""

    def __init__(self, path: str | Path | None = None, *, max_conversations: int = MAX_CONVERSATIONS):
        self.path = Path(path) if path is not None else default_store_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max = max_conversations
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(self.path, check_same_thread=False, timeout=10, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        # history, not ledger: a power cut may lose the last turns, a question never waits for an fsync
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute("PRAGMA foreign_keys=ON")
        self._conn.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _write(self, sql: str, params=()):
        with self._lock, self._conn:
            return self._conn.execute(sql, params)

    def open(self, conversation: str | None, db: str) -> tuple[str, list[dict]]:
        """A new conversation (None) or an existing one about `db`: its id and its turns so far."""
        if conversation is None:
            conversation, now = uuid.uuid4().hex, time.time()
            with self._lock, self._conn:
                self._conn.execute("INSERT INTO conversations VALUES (?, ?, ?, ?)", (conversation, db, now, now))
                self._conn.execute("DELETE FROM conversations WHERE id IN (SELECT id FROM conversations "
                                   "ORDER BY updated DESC LIMIT -1 OFFSET ?)", (self.max,))
            return conversation, []
        with self._lock:
            row = self._conn.execute("SELECT db FROM conversations WHERE id = ?", (conversation,)).fetchone()
        if row is None:
            raise UnknownConversation(f"unknown conversation {conversation!r}; leave it out to start one")
        if row[0] != db:
            raise ConversationMismatch(f"conversation {conversation!r} is about database {row[0]!r}, not "
                                       f"{db!r}; leave it out to start a new one")
        self._write("UPDATE conversations SET updated = ? WHERE id = ?", (time.time(), conversation))
        return conversation, self.turns(conversation)

    def record(self, conversation: str, question: str, sql: str, *, evidence: str = "",
               summary: str = "") -> int | None:
        """Append a turn; returns its number (what an answer's link names), None for a forgotten conversation."""
        now = time.time()
        with self._lock, self._conn:
            if self._conn.execute("SELECT 1 FROM conversations WHERE id = ?", (conversation,)).fetchone() is None:
                return None
            n = self._conn.execute("SELECT COALESCE(MAX(n) + 1, 0) FROM turns WHERE conversation = ?",
                                   (conversation,)).fetchone()[0]
            self._conn.execute("INSERT INTO turns VALUES (?, ?, ?, ?, ?, ?, ?)",
                               (conversation, n, question, evidence, sql, summary, now))
            self._conn.execute("DELETE FROM turns WHERE conversation = ? AND n <= ?", (conversation, n - MAX_TURNS))
            self._conn.execute("UPDATE conversations SET updated = ? WHERE id = ?", (now, conversation))
        return n

    def replace_last_sql(self, conversation: str, db: str, sql: str, summary: str | None = None) -> None:
        """An edited query replaces the last turn's SQL, so a follow-up builds on the edit."""
        with self._lock, self._conn:
            row = self._conn.execute("SELECT MAX(t.n) FROM turns t JOIN conversations c ON c.id = t.conversation "
                                     "WHERE c.id = ? AND c.db = ?", (conversation, db)).fetchone()
            if row is None or row[0] is None:
                return
            self._conn.execute("UPDATE turns SET sql = ?, summary = COALESCE(?, summary) "
                               "WHERE conversation = ? AND n = ?", (sql, summary, conversation, row[0]))

    def turns(self, conversation: str) -> list[dict]:
        """The turns as the agents see them: {"question", "sql"}, oldest first."""
        with self._lock:
            rows = self._conn.execute("SELECT question, sql FROM turns WHERE conversation = ? ORDER BY n",
                                      (conversation,)).fetchall()
        return [{"question": q, "sql": s} for q, s in rows]

    def get(self, conversation: str) -> dict | None:
        """A conversation with its turns in full (number, question, evidence, SQL, summary, time)."""
        with self._lock:
            head = self._conn.execute("SELECT id, db, created, updated FROM conversations WHERE id = ?",
                                      (conversation,)).fetchone()
            if head is None:
                return None
            rows = self._conn.execute("SELECT n, question, evidence, sql, summary, created FROM turns "
                                      "WHERE conversation = ? ORDER BY n", (conversation,)).fetchall()
        keys = ("n", "question", "evidence", "sql", "summary", "created")
        return {"id": head[0], "db": head[1], "created": head[2], "updated": head[3],
                "turns": [dict(zip(keys, r, strict=True)) for r in rows]}

    def recent(self, dbs: list[str], limit: int = 50) -> list[dict]:
        """The latest conversations about these databases that have a turn, newest first: id, db, the
        first question (its title), how many turns, when last used."""
        if not dbs:
            return []
        marks = ", ".join("?" * len(dbs))
        with self._lock:
            rows = self._conn.execute(
                f"SELECT c.id, c.db, c.updated, COUNT(t.n), (SELECT question FROM turns WHERE conversation = c.id "
                f"ORDER BY n LIMIT 1) FROM conversations c JOIN turns t ON t.conversation = c.id "
                f"WHERE c.db IN ({marks}) GROUP BY c.id ORDER BY c.updated DESC LIMIT ?", (*dbs, limit)).fetchall()
        return [{"id": i, "db": d, "updated": u, "turns": n, "title": q} for i, d, u, n, q in rows]
