"""A throwaway PostgreSQL server for tests: its own cluster in a temp folder, gone at the end.

`start_server()` finds `initdb`/`pg_ctl` (on PATH, or Debian's /usr/lib/postgresql/*/bin), creates a cluster
as an unprivileged user (PostgreSQL refuses to run as root: as root the server runs as `nobody`, or as a
`macsql-pg` system user created when there is no `nobody`), listens on a Unix socket in the folder and a free
TCP port on 127.0.0.1, with fsync off (a test cluster never needs to survive a crash). The superuser
(`postgres`) connects over the socket without a password; other roles log in over TCP with a password
(scram-sha-256), as a real reader would. Anything that keeps the server from starting is `Unavailable`,
with the reason, for the tests to skip on.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

SUPERUSER = "postgres"
READER = "macsql_reader"
READER_PASSWORD = "reader-secret"

# The least-privilege role the README documents (section "PostgreSQL"), for database `shop`, schema public.
# tests/test_postgres.py checks that the README shows these same statements.
READER_ROLE_SQL = f"""
CREATE ROLE {READER} LOGIN PASSWORD '{READER_PASSWORD}';
GRANT CONNECT ON DATABASE shop TO {READER};
GRANT USAGE ON SCHEMA public TO {READER};
GRANT SELECT ON ALL TABLES IN SCHEMA public TO {READER};
ALTER ROLE {READER} SET default_transaction_read_only = on;
ALTER ROLE {READER} SET statement_timeout = '60s';
ALTER ROLE {READER} SET temp_file_limit = '1GB';
"""


class Unavailable(Exception):
    """No PostgreSQL server can be started here; the message says why (for pytest.skip)."""


def find_bin_dir() -> Path | None:
    """The folder holding initdb and pg_ctl: PATH first, then the newest /usr/lib/postgresql/N/bin."""
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        return Path(on_path).resolve().parent
    candidates = [p for p in Path("/usr/lib/postgresql").glob("*/bin") if (p / "initdb").exists()]
    candidates.sort(key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
    return candidates[-1] if candidates and (candidates[-1] / "pg_ctl").exists() else None


def _server_user() -> str | None:
    """The user to run the server as: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    for name in ("nobody", "macsql-pg"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    result = subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                             "macsql-pg"], capture_output=True, text=True)
    if result.returncode != 0:
        raise Unavailable(f"running as root and cannot create a user for the server: {result.stderr.strip()}")
    return "macsql-pg"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PgServer:
    folder: Path
    bin_dir: Path
    user: str | None
    port: int

    @property
    def socket_dir(self) -> str:
        return str(self.folder)

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        """A PostgreSQL program of bin_dir, as the server's user."""
        cmd = [str(self.bin_dir / args[0]), *args[1:]]
        if self.user is not None:
            runuser = shutil.which("runuser")
            cmd = [runuser, "-u", self.user, "--", *cmd] if runuser else ["su", "-s", "/bin/sh", self.user,
                                                                          "-c", " ".join(cmd)]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=self.folder)

    def url(self, dbname: str = "shop", *, user: str = READER, password: str = READER_PASSWORD,
            **query: str) -> str:
        """A postgresql:// URL over TCP, as a user of macsql would write it."""
        tail = "&".join(f"{k}={v}" for k, v in query.items())
        return f"postgresql://{user}:{password}@127.0.0.1:{self.port}/{dbname}" + (f"?{tail}" if tail else "")

    def superuser(self, dbname: str = "shop"):
        """A psycopg connection as the superuser, over the socket, in autocommit."""
        import psycopg

        return psycopg.connect(host=self.socket_dir, port=self.port, user=SUPERUSER, dbname=dbname,
                               autocommit=True)

    def script(self, sql: str, dbname: str = "shop") -> None:
        """Run SQL text (several statements) as the superuser."""
        with self.superuser(dbname) as conn:
            conn.execute(sql)

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.run("pg_ctl", "stop", "-D", str(self.folder / "data"), "-m", "immediate", "-w", timeout=30)
        shutil.rmtree(self.folder, ignore_errors=True)


def start_server() -> PgServer:
    """A running throwaway server with an empty `shop` database; Unavailable when that cannot be."""
    try:
        import psycopg  # noqa: F401
    except ImportError as exc:
        raise Unavailable('psycopg is not installed: pip install -e ".[postgres]"') from exc
    bin_dir = find_bin_dir()
    if bin_dir is None:
        raise Unavailable("PostgreSQL's initdb/pg_ctl not found on PATH or in /usr/lib/postgresql/*/bin "
                          "(Debian: apt-get install postgresql)")
    user = _server_user()
    folder = Path(tempfile.mkdtemp(prefix="macsql-pg-"))
    if user is not None:
        info = pwd.getpwnam(user)
        os.chown(folder, info.pw_uid, info.pw_gid)
    server = PgServer(folder, bin_dir, user, _free_port())
    try:
        init = server.run("initdb", "-D", str(folder / "data"), "-U", SUPERUSER, "--auth-local=trust",
                          "--auth-host=scram-sha-256", "--no-sync", "-E", "UTF8", "--locale=C")
        if init.returncode != 0:
            raise Unavailable(f"initdb failed: {_last_line(init.stderr or init.stdout)}")
        for _attempt in range(3):  # another process may take the free port before the server does
            options = (f"-c fsync=off -c full_page_writes=off -c synchronous_commit=off -c listen_addresses=127.0.0.1 "
                       f"-p {server.port} -k {server.socket_dir} -c max_connections=40 -c shared_buffers=16MB")
            start = server.run("pg_ctl", "start", "-D", str(folder / "data"), "-w", "-t", "30", "-l",
                               str(folder / "server.log"), "-o", options)
            if start.returncode == 0:
                break
            server.port = _free_port()
        else:
            log = (folder / "server.log").read_text(errors="replace") if (folder / "server.log").exists() else ""
            raise Unavailable(f"the server did not start: {_last_line(log or start.stderr)}")
        server.script("CREATE DATABASE shop", dbname="postgres")
        return server
    except Unavailable:
        server.stop()
        raise
    except Exception as exc:  # noqa: BLE001 - whatever stops the server from starting, the tests skip on it
        server.stop()
        raise Unavailable(f"cannot run PostgreSQL here: {' '.join(str(exc).split())}") from exc


def _last_line(text: str) -> str:
    lines = [line for line in (text or "").splitlines() if line.strip()]
    return lines[-1].strip() if lines else "no output"
