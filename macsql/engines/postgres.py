"""PostgreSQL behind the database interface (psycopg 3), read-only at the server.

A query gets the same guarantees as on SQLite, each enforced by the server rather than by reading the text:
- the session defaults to read-only transactions (`-c default_transaction_read_only=on` in the startup
  packet), and every query runs in an explicit `BEGIN READ ONLY` transaction that is always rolled back, so
  INSERT, UPDATE, DELETE, DDL, nextval(), SELECT ... FOR UPDATE and lo_import fail inside the server;
- one statement: sqlglot's check in dialect "postgres" (exactly one SELECT/WITH), then the query runs as
  `DECLARE c CURSOR FOR <query>` over the extended protocol, which takes one statement and a cursor takes
  only a SELECT (or VALUES): `SELECT 1; COMMIT; DROP TABLE t` cannot run even if the check let it through;
- a deadline: `SET LOCAL statement_timeout` to the time left, before the DECLARE and again before a FETCH
  that starts later (each statement gets the whole timeout from its own start), and a timer that cancels the running statement from the client (`cancel_safe`) if the server has not
  stopped it soon after the deadline (a stalled network, a statement between checks for interrupts);
- caps on rows and bytes while fetching: rows come from the server-side cursor in chunks sized by the
  largest row so far (one row first, then at most twice as many each time), so a result of millions of
  rows, or of big values, is not held by the client past the byte cap (one row is: libpq reads a row whole);
- functions a read-only transaction still allows that reach outside the database's rows (the server's files,
  other sessions, settings, session-level locks, SQL run from text) are refused by name before the query
  is sent (`DENIED_FUNCTIONS`), and so is any name written with Unicode escapes (U&"..."), which would
  hide one from the list. The main defence is the role: a least-privilege role (README, "PostgreSQL")
  has no `pg_read_server_files`, no superuser and only SELECT on the schema, so the server itself refuses
  pg_read_file & co.; the list is defence in depth for a URL that logs in with more rights than it needs.

Values come back as SQLite's executor gives them (int, float, str, bytes, None; bool stays bool): a
numeric is an int when it is whole, else a float; dates, times, UUIDs and the like are their text; arrays
and JSON are JSON text (rows must be hashable for the comparator).
"""

from __future__ import annotations

import math
import re
import threading
import time
from urllib.parse import unquote

from macsql.engines.base import Database, StopAtDeadline, plain_value
from macsql.errors import DatabaseError
from macsql.schema import (
    MAX_EXAMPLE_CHARS,
    MAX_EXAMPLES,
    SAMPLE_SCAN_ROWS,
    SMALL_TABLE_ROWS,
    Column,
    ForeignKey,
    Schema,
    Table,
    skips_examples,
)
from macsql.sql import parse_query, statement_error, strip_statement
from macsql.sqlexec import (
    DEFAULT_MAX_ROWS,
    DEFAULT_TIMEOUT_S,
    MAX_RESULT_BYTES,
    Deadline,
    ExecResult,
    collect_rows,
    precheck,
)

FETCH_ROWS = 500  # the most rows one FETCH from the server-side cursor asks for (see execute)
# The deadline's statement_timeout is set again before a FETCH once this much time has passed since it was
# set: each statement gets the whole timeout from its own start, so a later FETCH would get too much.
TIMEOUT_SLACK_S = 0.05
CANCEL_GRACE_S = 0.25  # the client cancels this long after the deadline, if the server's timeout has not
CONNECT_TIMEOUT_S = 10.0
# identity() is asked several times for one question (the schema, values and knowledge caches): the catalog
# hash is read again once it is this old
IDENTITY_TTL_S = 2.0
POOL_SIZE = 4  # idle connections kept for the next queries (serve answers several questions at once)
# Set in the startup packet of every connection: a session that cannot write, and a session-wide ceiling on
# any statement (each query sets its own, shorter one), and a server that ends a transaction whose client died.
SESSION_OPTIONS = ("-c default_transaction_read_only=on "
                   f"-c statement_timeout={int(DEFAULT_TIMEOUT_S * 2000)} "
                   "-c idle_in_transaction_session_timeout=60000")

# Functions refused by name, with why. A read-only transaction refuses writes, but these read or change
# things outside the rows: the server's files, other sessions, settings, locks that outlive the rollback,
# other servers; or they run SQL given as text (query_to_xml('SELECT pg_read_file(...)')), which the
# name check cannot see into. Schema-qualified and double-quoted calls are caught too (sqlglot gives the name).
_FILES = "it reads or writes the server's files"
_SESSIONS = "it acts on the server, other sessions or settings, not on the database's rows"
_TEXT_SQL = "it runs SQL given as text, which cannot be checked before it runs"
_LOCKS = "it takes a lock that outlives the query"
_SEQUENCES = "it changes a sequence or consumes a transaction id"
_REMOTE = "it connects to another server"
DENIED_FUNCTIONS: dict[str, str] = {
    **dict.fromkeys([
        "pg_read_file", "pg_read_binary_file", "pg_stat_file", "pg_ls_dir", "pg_current_logfile",
        "lo_import", "lo_export", "lo_open", "lo_close", "lo_creat", "lo_create", "lo_unlink", "lo_get", "lo_put",
        "lo_from_bytea", "lo_truncate", "lo_truncate64", "lo_lseek", "lo_lseek64", "lo_tell", "lo_tell64",
        "loread", "lowrite", "pg_logdir_ls"], _FILES),
    **dict.fromkeys([
        "set_config", "pg_terminate_backend", "pg_cancel_backend", "pg_reload_conf", "pg_rotate_logfile",
        "pg_promote", "pg_switch_wal", "pg_create_restore_point", "pg_log_backend_memory_contexts",
        "pg_notify", "pg_export_snapshot", "pg_import_system_collations", "pg_nextoid", "pg_stat_statements_reset"], _SESSIONS),
    **dict.fromkeys([
        "query_to_xml", "query_to_xmlschema", "query_to_xml_and_xmlschema", "cursor_to_xml",
        "cursor_to_xmlschema", "ts_stat", "ts_rewrite"], _TEXT_SQL),
    **dict.fromkeys(["nextval", "setval", "txid_current", "pg_current_xact_id"], _SEQUENCES),
}
_DENIED_PREFIXES: dict[str, str] = {
    "pg_ls_": _FILES, "pg_file_": _FILES, "pg_read_": _FILES, "lo_": _FILES,
    "pg_advisory_": _LOCKS, "pg_try_advisory_": _LOCKS,
    "pg_stat_reset": _SESSIONS, "pg_backup_": _SESSIONS, "pg_start_backup": _SESSIONS,
    "pg_stop_backup": _SESSIONS, "pg_wal_replay_": _SESSIONS, "pg_replication_": _SESSIONS,
    "pg_create_": _SESSIONS, "pg_drop_replication": _SESSIONS, "pg_logical_": _SESSIONS,
    "pg_copy_": _SESSIONS, "dblink": _REMOTE,
}


def denied_function(name: str) -> str | None:
    """Why a function of this name may not be called from a query, or None."""
    low = name.lower()
    if low in DENIED_FUNCTIONS:
        return DENIED_FUNCTIONS[low]
    return next((why for prefix, why in _DENIED_PREFIXES.items() if low.startswith(prefix)), None)


def statement_problem(sql: str) -> str | None:
    """Why `sql` may not be sent to PostgreSQL, or None: not exactly one SELECT/WITH statement (the
    analyser's check in dialect "postgres"), SELECT ... INTO (creates a table) or a denied function."""
    from sqlglot import exp

    # U&"pg\005fread\005ffile"(...) is pg_read_file to the server, an unknown function to sqlglot: no name
    # written with Unicode escapes is allowed. Looked for in the whole text, strings too: telling PostgreSQL's
    # strings from its code takes its lexer ($$...$$, E'\'', nested comments), and a string holding U&" is rare.
    if re.search(r'(?i)u&"', sql or ""):
        return 'U&"..." (a name written with Unicode escapes) is not allowed; write the name as it is'
    problem = statement_error(sql, dialect="postgres")
    if problem:
        return problem
    tree = parse_query(sql, dialect="postgres")
    if tree is None:
        # sqlglot cannot read it; the server parses it inside a read-only cursor. Name the denied functions
        # from the text alone, so that a query sqlglot cannot read is no way around the list.
        return _denied_in_text(strip_statement(sql))
    if tree.find(exp.Into) is not None:
        return "SELECT ... INTO creates a table; only read queries are allowed"
    for node in tree.find_all(exp.Func):
        name = str((node.name if isinstance(node, exp.Anonymous) else node.sql_name()) or "")
        why = denied_function(name)
        if why:
            return f"{name.lower()}() is not allowed: {why}"
    return None


def _denied_in_text(text: str) -> str | None:
    for word in re.findall(r"[A-Za-z_][A-Za-z0-9_$]*(?=\"?\s*\()", text):
        why = denied_function(word)
        if why:
            return f"{word.lower()}() is not allowed: {why}"
    return None


# ------------------------------------------------------------------------------------------------- the URL
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_SECRET_PARAMS = frozenset({"password", "sslpassword"})
URL_HINT = "pass postgresql://USER:PASSWORD@HOST:PORT/DBNAME[?schema=NAME]"


def _url_parts(url: str) -> tuple[str, str, str, list[str]] | None:
    """(scheme://, `user:password@` or '', the hosts and path, the query's parameters as written), split as
    text the way libpq reads a URI (no '#' fragment; parameters after the first '?', '&'-separated), so that
    no URL makes the split raise (a '[' left open, several hosts). The user part runs to the last '@' before
    the first '/': that covers libpq's password (up to its first '@'), and one holding '?' or '#'. None for
    text that is not scheme://..."""
    found = _SCHEME.match(url)
    if found is None:
        return None
    rest = url[found.end():]
    userinfo, at, _ = rest.partition("/")[0].rpartition("@")
    where, _, query = rest[len(userinfo + at):].partition("?")
    return found.group(), userinfo + at, where, [p for p in query.split("&") if p]


def _param_key(param: str) -> str:
    return unquote(param.partition("=")[0])


def redact_url(url: str) -> str:
    """The URL safe to print: without the password of its user part and without its `password` and
    `sslpassword` parameters. The one scrubber of PostgreSQL URLs (database labels, the conversation store's
    messages); never raises."""
    parts = _url_parts(url)
    if parts is None:
        return url
    scheme, userinfo, where, params = parts
    user = userinfo.partition(":")[0].rstrip("@")
    kept = [p for p in params if _param_key(p).lower() not in _SECRET_PARAMS]
    return scheme + (f"{user}@" if user else "") + where + ("?" + "&".join(kept) if kept else "")


def redact_message(text: str, url: str, *given: str) -> str:
    """libpq's message about a URL it refuses, safe to print: it quotes the URL (`url`, or the form of it
    libpq was `given`), or a part of it such as a badly percent-encoded password. Each becomes
    `redact_url(url)`, and any password left becomes ***."""
    shown = redact_url(url)
    for form in sorted({url, *given}, key=len, reverse=True):
        text = text.replace(form, shown)
    parts = _url_parts(url)
    if parts is None:
        return text
    _, userinfo, _, params = parts
    written = [userinfo[:-1].partition(":")[2]]
    written += [p.partition("=")[2] for p in params if _param_key(p).lower() in _SECRET_PARAMS]
    for secret in sorted({s for w in written for s in (w, unquote(w)) if s}, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def split_url(url: str) -> tuple[str, str | None, str]:
    """(the URL libpq connects with, the `?schema=` asked for or None, the URL without its password).

    `schema` is macsql's parameter, not libpq's, so it is taken out before connecting. The query is split as
    libpq reads it (percent-escapes only: a '+' stays a '+'); the rest passes through as written, for libpq
    to accept or refuse (PostgresDatabase turns a refusal into one line)."""
    parts = _url_parts(url)
    if parts is None:
        raise DatabaseError(f"the database is not a postgresql:// URL; {URL_HINT}")
    scheme, userinfo, where, params = parts
    schema = next((unquote(p.partition("=")[2]) for p in params if _param_key(p) == "schema"), None)
    kept = [p for p in params if _param_key(p) != "schema"]
    conninfo = scheme + userinfo + where + ("?" + "&".join(kept) if kept else "")
    return conninfo, schema or None, redact_url(url)


def _one_line(exc: BaseException) -> str:
    diag = getattr(exc, "diag", None)
    text = getattr(diag, "message_primary", None) or str(exc) or type(exc).__name__
    return " ".join(text.split())


def _canceller(conn, deadline: Deadline) -> StopAtDeadline:
    """A backstop to the server's statement_timeout: the client's cancel request, CANCEL_GRACE_S after the
    deadline (a statement the server already stopped is never cancelled twice: leaving the block disarms it)."""
    return StopAtDeadline(lambda: conn.cancel_safe(timeout=5.0), deadline, grace=CANCEL_GRACE_S)


def _ours(exc, canceller: StopAtDeadline, deadline: Deadline) -> bool:
    """Whether a cancelled statement was stopped by our deadline (the server's statement_timeout, set to the
    time left, or the client's cancel), not by someone else's pg_cancel_backend. The server's timer and ours
    run on different clocks, so "the deadline has passed" alone can be a millisecond wrong."""
    return canceller.fired or deadline.remaining() < 0.05 or "statement timeout" in str(exc)


class PostgresDatabase(Database):
    """A PostgreSQL database (one schema of it) by URL: `postgresql://user:pass@host:5432/db?schema=sales`.

    The schema is `?schema=` when given (it becomes the session's search_path, so the model's unqualified
    names find its tables), else the session's current schema (`public` by default, or the first schema of
    a search_path set in `options`). The first connection is opened here (a wrong URL, password or schema
    fails at once, in one line); connections are pooled between queries and `close()` ends them.
    """

    dialect = "postgres"

    def __init__(self, url: str, *, connect_timeout_s: float = CONNECT_TIMEOUT_S):
        from macsql.extras import require

        self._psycopg = require("psycopg", purpose="a PostgreSQL database", extra="postgres")
        from psycopg.conninfo import conninfo_to_dict

        conninfo, self.schema_name, self.label = split_url(url)
        try:
            params = conninfo_to_dict(conninfo)
        except self._psycopg.Error as exc:
            why = redact_message(_one_line(exc), url, conninfo)
            raise DatabaseError(f"{self.label!r} is not a PostgreSQL URL libpq accepts ({why}); {URL_HINT}, "
                                "an IPv6 host in brackets ([::1])") from None
        params["options"] = f"{params.get('options', '')} {SESSION_OPTIONS}".strip()
        params.setdefault("application_name", "macsql")
        self._params = params
        self._idle: list = []
        self._lock = threading.Lock()
        self._cursors = 0
        self._identity: tuple[float, str] | None = None  # (when read, the identity)
        conn = self._connect(connect_timeout_s)
        try:
            schema = conn.execute("SELECT current_schema()").fetchone()[0]
            conn.rollback()
        except self._psycopg.Error as exc:
            conn.close()
            raise DatabaseError(f"cannot read from {self.label}: {_one_line(exc)}") from exc
        if schema is None:
            conn.close()
            missing = (f"schema {self.schema_name!r} does not exist" if self.schema_name
                       else "no schema of the search_path exists")
            raise DatabaseError(f"{missing} in {self.label}, or the role may not use it; pass ?schema=NAME of an "
                                "existing schema the role has USAGE on")
        self.schema_name = schema
        self._give(conn, reuse=True)

    # ------------------------------------------------------------------------------------ connections
    def _connect(self, timeout_s: float):
        psycopg = self._psycopg
        params = dict(self._params)
        # libpq's connect_timeout is whole seconds, at least 2
        params["connect_timeout"] = str(max(2, math.ceil(min(timeout_s, CONNECT_TIMEOUT_S))))
        try:
            conn = psycopg.connect(**params, autocommit=True)
        except psycopg.Error as exc:
            raise DatabaseError(f"cannot connect to {self.label}: {_one_line(exc)}; check the URL, that the "
                                "server runs and accepts this role") from exc
        try:
            if self.schema_name is not None:
                conn.execute("SELECT set_config('search_path', quote_ident(%s), false)", [self.schema_name])
            conn.autocommit = False
            conn.read_only = True  # psycopg opens each transaction with BEGIN READ ONLY
        except psycopg.Error as exc:
            conn.close()
            raise DatabaseError(f"cannot set up a session on {self.label}: {_one_line(exc)}") from exc
        return conn

    def _take(self, deadline: Deadline):
        with self._lock:
            while self._idle:
                conn = self._idle.pop()
                if not conn.closed:
                    return conn
        return self._connect(deadline.remaining())

    def _give(self, conn, *, reuse: bool) -> None:
        idle = self._psycopg.pq.TransactionStatus.IDLE
        if reuse and not conn.closed and conn.info.transaction_status == idle:
            with self._lock:
                if len(self._idle) < POOL_SIZE:
                    self._idle.append(conn)
                    return
        conn.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def _begin(self, deadline: Deadline):
        """A connection inside a fresh read-only transaction whose statement_timeout is the time left. A
        pooled connection the server has closed meanwhile (restart, idle timeout) is replaced once."""
        psycopg = self._psycopg
        conn = self._take(deadline)
        try:
            self._set_timeout(conn, deadline)
            return conn
        except psycopg.OperationalError:
            conn.close()
        except psycopg.Error as exc:
            self._end(conn)
            raise DatabaseError(f"cannot start a read-only transaction on {self.label}: {_one_line(exc)}") from exc
        conn = self._connect(deadline.remaining())
        try:
            self._set_timeout(conn, deadline)
        except psycopg.Error as exc:
            conn.close()
            raise DatabaseError(f"cannot start a read-only transaction on {self.label}: {_one_line(exc)}") from exc
        return conn

    @staticmethod
    def _set_timeout(conn, deadline: Deadline) -> None:
        # 0 would turn the timeout off; the server takes at most INT_MAX milliseconds
        ms = min(2**31 - 1, max(1, math.ceil(deadline.remaining() * 1000)))
        conn.execute(f"SET LOCAL statement_timeout = {ms}")

    def _end(self, conn, canceller: StopAtDeadline | None = None, cursor=None) -> None:
        """Roll back (nothing is ever committed), close `cursor` (a server-side cursor of `conn`) and pool the
        connection, or drop it when it is broken or a cancel was sent on it."""
        reuse = canceller is None or not canceller.fired
        try:
            if not conn.closed:
                conn.rollback()
        except self._psycopg.Error:
            reuse = False
        if cursor is not None:
            # closed before the connection goes back to the pool: after the rollback this only marks it closed
            # (the server dropped it with the transaction), but once another thread holds the connection it
            # would send CLOSE into that thread's transaction and abort it
            try:
                cursor.close()
            except self._psycopg.Error:
                reuse = False
        self._give(conn, reuse=reuse)

    # -------------------------------------------------------------------------------------- queries
    def execute(self, sql: str, *, timeout_s: float = DEFAULT_TIMEOUT_S, max_rows: int = DEFAULT_MAX_ROWS,
                max_bytes: int = MAX_RESULT_BYTES) -> ExecResult:
        psycopg = self._psycopg
        deadline = Deadline(timeout_s)
        elapsed, timeout = deadline.elapsed, deadline.timeout_result
        early = precheck(sql, deadline, statement_problem)
        if early is not None:
            return early
        conn = self._begin(deadline)
        canceller = _canceller(conn, deadline)
        with self._lock:
            self._cursors += 1
            cur = conn.cursor(name=f"macsql_{self._cursors}")
        try:
            with canceller:
                cur.execute(strip_statement(sql))  # DECLARE name CURSOR FOR <sql>: one SELECT/VALUES only
                timeout_set = [time.perf_counter()]

                def fetch(n: int) -> list[tuple]:
                    # a long fetch renews the server's statement_timeout to the time the deadline has left
                    if time.perf_counter() - timeout_set[0] > TIMEOUT_SLACK_S:
                        self._set_timeout(conn, deadline)
                        timeout_set[0] = time.perf_counter()
                    return [tuple(plain_value(v) for v in raw) for raw in cur.fetchmany(n)]

                return collect_rows(fetch, deadline, max_rows, max_bytes, big="bytea columns", most=FETCH_ROWS,
                                    columns=tuple(d.name for d in cur.description or ()))
        except (psycopg.Error, ValueError, OverflowError, MemoryError, RecursionError) as exc:
            if isinstance(exc, psycopg.errors.QueryCanceled) and _ours(exc, canceller, deadline):
                return timeout()
            return ExecResult(error=_one_line(exc), seconds=elapsed())
        finally:
            self._end(conn, canceller, cur)

    # -------------------------------------------------------------------------------- introspection
    def identity(self) -> str:
        """The URL without password, the schema, and a hash of the catalog this role sees: the names and
        types of the schema's tables, views and columns (a changed table or column is a new identity)."""
        with self._lock:
            known = self._identity
        if known is not None and time.monotonic() - known[0] < IDENTITY_TTL_S:
            return known[1]
        rows = self._catalog_query(_CATALOG_HASH_SQL, Deadline(DEFAULT_TIMEOUT_S))
        identity = f"{self.label}#{self.schema_name}#{rows[0][0]}"
        with self._lock:
            self._identity = (time.monotonic(), identity)
        return identity

    def _catalog_query(self, sql: str, deadline: Deadline, params=None) -> list[tuple]:
        psycopg = self._psycopg
        conn = self._begin(deadline)
        canceller = _canceller(conn, deadline)
        try:
            with canceller:
                return conn.execute(sql, params).fetchall()
        except psycopg.Error as exc:
            if isinstance(exc, psycopg.errors.QueryCanceled):
                raise DatabaseError(f"reading the catalog of {self.label} took longer than the "
                                    f"{deadline.seconds:g}s deadline") from exc
            raise DatabaseError(f"cannot read the catalog of {self.label}: {_one_line(exc)}") from exc
        finally:
            self._end(conn, canceller)

    def introspect(self, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> Schema:
        """Tables (and partitioned and foreign tables), views and materialised views of the schema that the
        role may SELECT from, with the columns it may read, primary and foreign keys, and value examples
        sampled as on SQLite. Tables are sampled first, then views, each view with an equal share of the
        time left; a view that fails or runs out of time is left out with a note."""
        deadline = Deadline(timeout_s)
        catalog = self._catalog_query(_COLUMNS_SQL, deadline)
        keys = self._catalog_query(_KEYS_SQL, deadline)
        tables: dict[str, Table] = {}
        for relname, relkind, attname, typname, generated in catalog:
            table = tables.get(relname)
            if table is None:
                kind = "view" if relkind in ("v", "m") else "table"
                table = tables[relname] = Table(name=relname, columns=[], kind=kind)
            table.columns.append(Column(name=attname, type=short_type(typname), generated=generated == "s"))
        for contype, relname, attname, ref_table, ref_column in keys:
            table = tables.get(relname)
            if table is None or table.column(attname) is None:
                continue
            if contype == "p":
                table.primary_key.append(attname)
            elif ref_table in tables and ref_column is not None:
                table.foreign_keys.append(ForeignKey(attname, ref_table, ref_column))
        schema = Schema(db_id=self.name, tables=list(tables.values()), dialect="postgres")
        self._sample(schema, deadline)
        return schema

    def _sample(self, schema: Schema, deadline: Deadline) -> None:
        psycopg = self._psycopg
        if deadline.passed():
            schema.notes.append(f"no value examples: the {deadline.seconds:g}s deadline ran out first")
            return
        conn = self._begin(deadline)
        canceller = _canceller(conn, deadline)
        try:
            with canceller:
                plain = [t for t in schema.tables if t.kind == "table"]
                for i, table in enumerate(plain):
                    if deadline.passed():
                        schema.notes.append(f"{len(plain) - i} tables have no value examples: the "
                                            f"{deadline.seconds:g}s deadline ran out before they were sampled")
                        break
                    try:
                        self._sample_table(conn, table, deadline)
                    except psycopg.Error:
                        continue  # an odd type or a foreign table's server down: no examples, as on SQLite
                views = [t for t in schema.tables if t.kind == "view"]
                for i, view in enumerate(views):
                    share = deadline.remaining() / (len(views) - i)
                    if share <= 0:
                        schema.notes.append(f"view {view.name!r}: no value examples (the {deadline.seconds:g}s "
                                            "deadline ran out before it was sampled)")
                        continue
                    try:
                        self._sample_table(conn, view, Deadline(share))
                    except psycopg.Error as exc:
                        if isinstance(exc, psycopg.errors.QueryCanceled):
                            reason = (f"its first {SAMPLE_SCAN_ROWS} rows took longer than {share:.3g}s (its "
                                      f"share of the {deadline.seconds:g}s deadline)")
                        else:
                            reason = _one_line(exc)
                        schema.notes.append(f"view {view.name!r} skipped: {reason}")
                        schema.tables.remove(view)
        except psycopg.Error as exc:
            schema.notes.append(f"value examples left out: {_one_line(exc)}")
        finally:
            self._end(conn, canceller)

    def _sample_table(self, conn, table: Table, deadline: Deadline) -> None:
        """Examples of every column but identifiers and binary ones, from the table's first SAMPLE_SCAN_ROWS
        rows, in one query (a savepoint undoes a failure, so the transaction goes on)."""
        from psycopg import sql

        cols = [c for c in table.columns if not skips_examples(c) and c.type != "BYTEA"]
        source = sql.Identifier(self.schema_name, table.name)
        picked = sql.SQL(", ").join(sql.SQL("{} AS {}").format(sql.Identifier(c.name), sql.Identifier(f"c{i}"))
                                    for i, c in enumerate(cols)) if cols else sql.SQL("1")
        parts = [sql.SQL("SELECT -1, NULL::text, count(*) FROM s")]
        for i in range(len(cols)):
            parts.append(sql.SQL(
                "(SELECT {i}, v, n FROM (SELECT CAST({c} AS text) AS v, count(*) AS n FROM s GROUP BY 1) g "
                "WHERE v IS NOT NULL AND btrim(v) <> '' ORDER BY n DESC, v LIMIT {k})").format(
                    i=sql.Literal(i), c=sql.Identifier(f"c{i}"), k=sql.Literal(MAX_EXAMPLES)))
        query = sql.SQL("WITH s AS MATERIALIZED (SELECT {picked} FROM {source} LIMIT {limit}) ").format(
            picked=picked, source=source, limit=sql.Literal(SAMPLE_SCAN_ROWS)) + sql.SQL(" UNION ALL ").join(parts)
        with conn.transaction():  # a savepoint
            self._set_timeout(conn, deadline)
            rows = conn.execute(query).fetchall()
        n_rows = next((n for i, _v, n in rows if i == -1), 0)
        found: dict[int, list[tuple[str, int]]] = {}
        for i, v, n in rows:
            if i >= 0:
                found.setdefault(i, []).append((v, n))
        for i, col in enumerate(cols):
            values = found.get(i, [])
            col.repeats = n_rows <= SMALL_TABLE_ROWS or (bool(values) and values[0][1] > 1)
            col.examples = [v for v, _n in values if len(v) <= MAX_EXAMPLE_CHARS]

    def distinct_values(self, table: str, column: str, *, limit: int, scan_rows: int, max_chars: int,
                        timeout_s: float = DEFAULT_TIMEOUT_S) -> list[str]:
        """Up to `limit` distinct non-blank values of a text column (character types and enums; other
        columns give none, as SQLite's typeof(v) = 'text' does), from at most `scan_rows` rows."""
        psycopg = self._psycopg
        from psycopg import sql

        deadline = Deadline(timeout_s)
        conn = self._begin(deadline)
        canceller = _canceller(conn, deadline)
        try:
            with canceller:
                # character types (text, varchar, char, citext, domains over them) and enums: category S, E
                category = conn.execute(
                    "SELECT t.typcategory::text FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type t "
                    "ON t.oid = a.atttypid WHERE a.attrelid = to_regclass(quote_ident(%s) || '.' || quote_ident(%s)) "
                    "AND a.attname = %s AND a.attnum > 0 AND NOT a.attisdropped",
                    [self.schema_name, table, column]).fetchone()
                if category is None or category[0] not in ("S", "E"):
                    return []
                query = sql.SQL(
                    "SELECT DISTINCT v FROM (SELECT CAST({c} AS text) AS v FROM {t} LIMIT {scan}) s "
                    "WHERE length(v) BETWEEN 1 AND {chars} AND btrim(v) <> '' LIMIT {limit}").format(
                        c=sql.Identifier(column), t=sql.Identifier(self.schema_name, table),
                        scan=sql.Literal(int(scan_rows)), chars=sql.Literal(int(max_chars)),
                        limit=sql.Literal(int(limit)))
                return [v for (v,) in conn.execute(query).fetchall() if isinstance(v, str)]
        except psycopg.Error:
            return []  # a table gone or a column it may not read: no values, linking goes on without them
        finally:
            self._end(conn, canceller)


# format_type's standard spellings, written as the DDL people (and models) write them: the same as the SQLite
# and DuckDB renderings of the same column, and fewer prompt tokens
_SHORT_TYPES = (("CHARACTER VARYING", "VARCHAR"), ("TIMESTAMP WITHOUT TIME ZONE", "TIMESTAMP"),
                ("TIMESTAMP WITH TIME ZONE", "TIMESTAMPTZ"), ("TIME WITHOUT TIME ZONE", "TIME"),
                ("TIME WITH TIME ZONE", "TIMETZ"), ("CHARACTER", "CHAR"))


def short_type(typname: str | None) -> str:
    """A PostgreSQL type name (format_type) as DDL usually spells it: `character varying(10)` -> VARCHAR(10)."""
    text = (typname or "").upper()
    for long, short in _SHORT_TYPES:
        if text.startswith(long):
            return short + text[len(long):]
    return text


# What this role may read in the current schema: tables (r), partitioned tables (p, not their partitions),
# foreign tables (f), views (v) and materialised views (m), with the columns it may SELECT.
_RELATIONS = """
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace AND n.nspname = current_schema()
JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE c.relkind IN ('r', 'p', 'f', 'v', 'm') AND NOT c.relispartition
  AND has_column_privilege(c.oid, a.attnum, 'SELECT')
"""
# Relations in the order they were created (their oids grow with it), as SQLite lists them: the order the
# schema's author wrote, and the one the model sees for the same database on SQLite.
_COLUMNS_SQL = f"""
SELECT c.relname, c.relkind::text, a.attname, format_type(a.atttypid, a.atttypmod), a.attgenerated::text
{_RELATIONS}
ORDER BY c.relkind IN ('v', 'm'), c.oid, a.attnum
"""
_CATALOG_HASH_SQL = f"""
SELECT md5(coalesce(string_agg(c.relname || '/' || c.relkind::text || '/' || a.attname || '/'
                               || format_type(a.atttypid, a.atttypmod), ',' ORDER BY c.relname, a.attnum), ''))
{_RELATIONS}
"""
# Primary keys and foreign keys of the current schema's tables, one row per column, in key order.
_KEYS_SQL = """
SELECT con.contype::text, cl.relname, a.attname, rc.relname, ra.attname
FROM pg_catalog.pg_constraint con
JOIN pg_catalog.pg_class cl ON cl.oid = con.conrelid
JOIN pg_catalog.pg_namespace n ON n.oid = cl.relnamespace AND n.nspname = current_schema()
CROSS JOIN LATERAL unnest(con.conkey) WITH ORDINALITY AS k(attnum, ord)
JOIN pg_catalog.pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum
LEFT JOIN pg_catalog.pg_class rc ON rc.oid = con.confrelid AND rc.relnamespace = cl.relnamespace
LEFT JOIN pg_catalog.pg_attribute ra ON ra.attrelid = con.confrelid AND ra.attnum = con.confkey[k.ord]
WHERE con.contype IN ('p', 'f')
ORDER BY cl.relname, con.contype DESC, con.oid, k.ord
"""
