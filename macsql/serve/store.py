"""The conversations of `macsql serve`, kept so that a page reload or a server restart keeps the history and
every answer's link (`/#c=<id>&t=<turn>`). One interface, `ConversationStore`, and two places to keep them:

- `SQLiteStore`: a small SQLite file in the cache folder (the default); one server, or a few on one machine.
- `PostgresStore`: tables in a PostgreSQL database the operator names (`macsql serve --store
  postgresql://...`), so that several replicas behind a load balancer share one history.

Either is the server's own state, written by the server: never one of the databases users ask about (those
are only ever read). A turn keeps what is needed to show the answer again (the question, its evidence, the
SQL, the one-line summary); its rows are not stored: opening an old answer runs its SQL again, read-only.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from macsql.cache import cache_root
from macsql.errors import InputError, MacSQLError

MAX_CONVERSATIONS = 5000  # the least recently used beyond this are deleted
MAX_TURNS = 50  # per conversation (the agents see only the last few: agents/prompting.py)
POSTGRES_SCHEMA = "macsql"  # the PostgreSQL schema the tables live in, apart from anything else there
POSTGRES_CONNECT_TIMEOUT_S = 10
STORE_ENV = "MACSQL_STORE"


class UnknownConversation(InputError):
    pass


class ConversationMismatch(InputError):
    pass


class StoreUnavailable(MacSQLError):
    """The store cannot be reached or written (a PostgreSQL server down, a locked file): 503, try again."""


def default_store_path() -> Path:
    return cache_root() / "serve" / "conversations.sqlite"


def is_postgres_url(spec) -> bool:
    return isinstance(spec, str) and spec.lower().startswith(("postgresql://", "postgres://"))


def open_store(spec: ConversationStore | str | Path | None = None, **options) -> ConversationStore:
    """The store `spec` names: a store as it is, a postgresql:// URL, a SQLite file, or None (the cache
    folder's file)."""
    if isinstance(spec, ConversationStore):
        return spec
    if is_postgres_url(spec):
        return PostgresStore(spec, **options)
    return SQLiteStore(spec, **options)


Run = Callable[..., list]  # run(sql, params=()) -> the rows it returned ([] for a write)


class ConversationStore:
    """Turns per conversation id. The queries are written once, here, with `?` parameters and the table
    names as `{c}` (conversations) and `{t}` (turns); an implementation supplies `_transaction`, which runs
    a function in one transaction, and the few lines of SQL its dialect writes otherwise. Safe across
    threads and across processes (and, for PostgreSQL, across machines)."""

    CONVERSATIONS, TURNS = "conversations", "turns"
    SCHEMA: str = ""  # the DDL, with {c} and {t}
    # the least recently used conversations beyond the cap (the parameter); SQLite needs a LIMIT to OFFSET
    TRIM = "DELETE FROM {c} WHERE id IN (SELECT id FROM {c} ORDER BY updated DESC OFFSET ?)"
    LOCK = ""  # locks the conversation's row until the end of the transaction, where the dialect needs it

    def __init__(self, *, max_conversations: int = MAX_CONVERSATIONS):
        self.max = max_conversations

    @property
    def where(self) -> str:
        """Where the conversations are, for people: a file, or a URL without its password."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def _transaction(self, work: Callable[[Run], object], *, write: bool = False):
        """`work(run)` in one transaction; its return value. StoreUnavailable when the store is out of reach."""
        raise NotImplementedError

    def _sql(self, text: str) -> str:
        return text.format(c=self.CONVERSATIONS, t=self.TURNS)

    def open(self, conversation: str | None, db: str) -> tuple[str, list[dict]]:
        """A new conversation (None) or an existing one about `db`: its id and its turns so far."""
        if conversation is None:
            conversation, now = uuid.uuid4().hex, time.time()

            def create(run: Run) -> None:
                run(self._sql("INSERT INTO {c} (id, db, created, updated) VALUES (?, ?, ?, ?)"),
                    (conversation, db, now, now))
                run(self._sql(self.TRIM), (self.max,))

            self._transaction(create, write=True)
            return conversation, []

        def touch(run: Run):
            row = run(self._sql("SELECT db FROM {c} WHERE id = ?"), (conversation,))
            if not row:
                raise UnknownConversation(f"unknown conversation {conversation!r}; leave it out to start one")
            if row[0][0] != db:
                raise ConversationMismatch(f"conversation {conversation!r} is about database {row[0][0]!r}, not "
                                           f"{db!r}; leave it out to start a new one")
            run(self._sql("UPDATE {c} SET updated = ? WHERE id = ?"), (time.time(), conversation))
            return self._turns(run, conversation)

        return conversation, self._transaction(touch, write=True)

    def record(self, conversation: str, question: str, sql: str, *, evidence: str = "",
               summary: str = "") -> int | None:
        """Append a turn; returns its number (what an answer's link names), None for a forgotten conversation."""
        now = time.time()

        def append(run: Run) -> int | None:
            # the conversation's row is locked first, so two replicas recording at once number their turns apart
            if not run(self._sql("SELECT 1 FROM {c} WHERE id = ?" + self.LOCK), (conversation,)):
                return None
            n = run(self._sql("SELECT COALESCE(MAX(n) + 1, 0) FROM {t} WHERE conversation = ?"),
                    (conversation,))[0][0]
            run(self._sql("INSERT INTO {t} (conversation, n, question, evidence, sql, summary, created) "
                          "VALUES (?, ?, ?, ?, ?, ?, ?)"), (conversation, n, question, evidence, sql, summary, now))
            run(self._sql("DELETE FROM {t} WHERE conversation = ? AND n <= ?"), (conversation, n - MAX_TURNS))
            run(self._sql("UPDATE {c} SET updated = ? WHERE id = ?"), (now, conversation))
            return n

        return self._transaction(append, write=True)

    def replace_last_sql(self, conversation: str, db: str, sql: str, summary: str | None = None) -> None:
        """An edited query replaces the last turn's SQL, so a follow-up builds on the edit."""
        def replace(run: Run) -> None:
            row = run(self._sql("SELECT MAX(t.n) FROM {t} t JOIN {c} c ON c.id = t.conversation "
                                "WHERE c.id = ? AND c.db = ?"), (conversation, db))
            if not row or row[0][0] is None:
                return
            run(self._sql("UPDATE {t} SET sql = ?, summary = COALESCE(?, summary) WHERE conversation = ? AND n = ?"),
                (sql, summary, conversation, row[0][0]))

        self._transaction(replace, write=True)

    def _turns(self, run: Run, conversation: str) -> list[dict]:
        rows = run(self._sql("SELECT question, sql FROM {t} WHERE conversation = ? ORDER BY n"), (conversation,))
        return [{"question": q, "sql": s} for q, s in rows]

    def turns(self, conversation: str) -> list[dict]:
        """The turns as the agents see them: {"question", "sql"}, oldest first."""
        return self._transaction(lambda run: self._turns(run, conversation))

    def get(self, conversation: str) -> dict | None:
        """A conversation with its turns in full (number, question, evidence, SQL, summary, time)."""
        def read(run: Run):
            head = run(self._sql("SELECT id, db, created, updated FROM {c} WHERE id = ?"), (conversation,))
            if not head:
                return None
            return head[0], run(self._sql("SELECT n, question, evidence, sql, summary, created FROM {t} "
                                          "WHERE conversation = ? ORDER BY n"), (conversation,))

        found = self._transaction(read)
        if found is None:
            return None
        head, rows = found
        keys = ("n", "question", "evidence", "sql", "summary", "created")
        return {"id": head[0], "db": head[1], "created": head[2], "updated": head[3],
                "turns": [dict(zip(keys, r, strict=True)) for r in rows]}

    def recent(self, dbs: list[str], limit: int = 50) -> list[dict]:
        """The latest conversations about these databases that have a turn, newest first: id, db, the
        first question (its title), how many turns, when last used."""
        if not dbs:
            return []
        marks = ", ".join("?" * len(dbs))
        sql = self._sql(
            "SELECT c.id, c.db, c.updated, COUNT(t.n), (SELECT question FROM {t} WHERE conversation = c.id "
            "ORDER BY n LIMIT 1) FROM {c} c JOIN {t} t ON t.conversation = c.id "
            f"WHERE c.db IN ({marks}) GROUP BY c.id ORDER BY c.updated DESC LIMIT ?")
        rows = self._transaction(lambda run: run(sql, (*dbs, limit)))
        return [{"id": i, "db": d, "updated": u, "turns": n, "title": q} for i, d, u, n, q in rows]


class SQLiteStore(ConversationStore):
    """The conversations in one SQLite file (default: serve/conversations.sqlite in the cache folder): one
    connection behind a lock for the threads, SQLite's own locking (WAL) for other processes."""

    SCHEMA = """
    CREATE TABLE IF NOT EXISTS {c} (
        id TEXT PRIMARY KEY, db TEXT NOT NULL, created REAL NOT NULL, updated REAL NOT NULL);
    CREATE TABLE IF NOT EXISTS {t} (
        conversation TEXT NOT NULL REFERENCES {c}(id) ON DELETE CASCADE, n INTEGER NOT NULL,
        question TEXT NOT NULL, evidence TEXT NOT NULL DEFAULT '', sql TEXT NOT NULL,
        summary TEXT NOT NULL DEFAULT '', created REAL NOT NULL, PRIMARY KEY (conversation, n));
    CREATE INDEX IF NOT EXISTS conversations_updated ON {c}(updated);
    """
    TRIM = "DELETE FROM {c} WHERE id IN (SELECT id FROM {c} ORDER BY updated DESC LIMIT -1 OFFSET ?)"

    def __init__(self, path: str | Path | None = None, *, max_conversations: int = MAX_CONVERSATIONS):
        super().__init__(max_conversations=max_conversations)
        self.path = Path(path) if path is not None else default_store_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            self._conn = sqlite3.connect(self.path, check_same_thread=False, timeout=10, isolation_level=None)
            self._conn.execute("PRAGMA journal_mode=WAL")
            # history, not ledger: a power cut may lose the last turns, a question never waits for an fsync
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute("PRAGMA foreign_keys=ON")
            self._conn.executescript(self._sql(self.SCHEMA))
        except sqlite3.Error as exc:
            raise InputError(f"cannot open the conversation store {self.path} ({exc}); pass --store with a "
                             "writable file, or a postgresql:// URL") from None

    @property
    def where(self) -> str:
        return str(self.path)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _transaction(self, work, *, write: bool = False):
        def run(sql: str, params=()) -> list:
            return self._conn.execute(sql, params).fetchall()

        with self._lock:
            try:
                # IMMEDIATE takes the write lock up front: another process cannot slip a turn in between
                self._conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            except sqlite3.OperationalError as exc:  # locked past the timeout by another process
                raise StoreUnavailable(f"the conversation store {self.path} is busy ({exc}); try again") from None
            try:
                out = work(run)
                self._conn.execute("COMMIT")
                return out
            except BaseException as exc:
                if self._conn.in_transaction:  # SQLite rolls back some failures (a full disk) itself
                    self._conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise StoreUnavailable(f"the conversation store {self.path} failed ({exc})") from None
                raise


class PostgresStore(ConversationStore):
    """The conversations in a PostgreSQL database that the operator names for the server's own state (never
    a database users ask about): tables `conversations` and `turns` in the schema `macsql`, made on first
    use. Several `macsql serve` replicas can share one; each holds one connection behind a lock, and makes a
    new one when the old one broke (a server restart)."""

    CONVERSATIONS, TURNS = f"{POSTGRES_SCHEMA}.conversations", f"{POSTGRES_SCHEMA}.turns"
    # DOUBLE PRECISION: PostgreSQL's REAL has 24 bits, a few minutes' resolution for a Unix time
    SCHEMA = """
    CREATE TABLE IF NOT EXISTS {c} (
        id TEXT PRIMARY KEY, db TEXT NOT NULL, created DOUBLE PRECISION NOT NULL,
        updated DOUBLE PRECISION NOT NULL);
    CREATE TABLE IF NOT EXISTS {t} (
        conversation TEXT NOT NULL REFERENCES {c}(id) ON DELETE CASCADE, n INTEGER NOT NULL,
        question TEXT NOT NULL, evidence TEXT NOT NULL DEFAULT '', sql TEXT NOT NULL,
        summary TEXT NOT NULL DEFAULT '', created DOUBLE PRECISION NOT NULL, PRIMARY KEY (conversation, n));
    CREATE INDEX IF NOT EXISTS conversations_updated ON {c}(updated)
    """
    LOCK = " FOR UPDATE"
    SCHEMA_LOCK = 0x6D616373716C  # "macsql": replicas starting together create the tables one at a time

    def __init__(self, url: str, *, max_conversations: int = MAX_CONVERSATIONS):
        super().__init__(max_conversations=max_conversations)
        try:
            import psycopg
        except ModuleNotFoundError:
            raise InputError('--store postgresql://... needs psycopg 3; install it with '
                             'pip install -e ".[postgres]"') from None
        from macsql.engines.postgres import redact_url

        self._psycopg = psycopg
        self.url = url
        self.shown = redact_url(url)  # for messages and the start-up line
        self._lock = threading.Lock()
        self._conn = None
        try:
            self._transaction(self._create_schema, write=True)
        except StoreUnavailable as exc:
            raise InputError(f"{exc}; check --store (or ${STORE_ENV}): the PostgreSQL database that keeps the "
                             "conversations") from None

    @property
    def where(self) -> str:
        return self.shown

    def _create_schema(self, run: Run) -> None:
        run("SELECT pg_advisory_xact_lock(?)", (self.SCHEMA_LOCK,))
        # looked up first: CREATE SCHEMA IF NOT EXISTS needs the CREATE right even when the schema is there
        if not run("SELECT 1 FROM pg_namespace WHERE nspname = ?", (POSTGRES_SCHEMA,)):
            run(f"CREATE SCHEMA {POSTGRES_SCHEMA}")
        for statement in self._sql(self.SCHEMA).split(";"):
            run(statement)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _connect(self):
        from psycopg.conninfo import conninfo_to_dict

        from macsql.engines.postgres import redact_message

        try:
            given = conninfo_to_dict(self.url)
        except self._psycopg.ProgrammingError as exc:
            why = redact_message(" ".join(str(exc).split()), self.url)[:300]  # libpq quotes the URL
            raise InputError(f"--store {self.shown}: not a PostgreSQL URL ({why})") from None
        extra = {key: value for key, value in (("connect_timeout", POSTGRES_CONNECT_TIMEOUT_S),
                                               ("application_name", "macsql serve")) if key not in given}
        # autocommit: each `transaction()` block is the whole transaction, none is left open between them
        return self._psycopg.connect(self.url, autocommit=True, **extra)

    def _transaction(self, work, *, write: bool = False):
        with self._lock:
            try:
                return self._attempt(work)
            except self._psycopg.OperationalError as exc:
                # a connection that broke (the server restarted, a proxy dropped it) is made anew, once: its
                # transaction rolled back with it, so the work runs again and records nothing twice
                if not self._forget_broken():
                    raise self._unavailable(exc) from None
            try:
                return self._attempt(work)
            except self._psycopg.OperationalError as exc:
                self._forget_broken()
                raise self._unavailable(exc) from None

    def _attempt(self, work):
        if self._conn is None:
            self._conn = self._connect()
        try:
            with self._conn.transaction(), self._conn.cursor() as cur:
                def run(sql: str, params=()) -> list:
                    cur.execute(sql.replace("?", "%s"), params)
                    return cur.fetchall() if cur.description else []

                return work(run)
        except self._psycopg.OperationalError:
            raise
        except self._psycopg.Error as exc:  # a constraint, a missing right: not cured by trying again
            raise StoreUnavailable(f"the conversation store {self.shown} failed ({one_line(exc)})") from None

    def _forget_broken(self) -> bool:
        """Drop the connection when it broke; True when there was one to drop."""
        if self._conn is None or not (self._conn.broken or self._conn.closed):
            return False
        self._conn.close()
        self._conn = None
        return True

    def _unavailable(self, exc: Exception) -> StoreUnavailable:
        return StoreUnavailable(f"the conversation store {self.shown} is out of reach ({one_line(exc)}); try again")


def one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())[:300]
