"""A real, throw-away PostgreSQL server for the tests: ``initdb`` + ``pg_ctl`` in a temp folder.

The server listens on a random free loopback port (password auth, scram-sha-256) and on a Unix
socket inside its own folder (trust, for the tests' superuser connection that sets up and checks
the data). ``initdb`` refuses to run as root: as root, the cluster belongs to the ``postgres`` user
and its folder is chowned to it (``shared/FACTS.md``). Binaries come from PATH, else from
``pg_config --bindir``; ``find_bindir()`` returns None when there are none (tests then skip).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

SUPERUSER = "postgres"


def find_bindir() -> Path | None:
    """The folder holding initdb and pg_ctl, or None when PostgreSQL is not installed."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).resolve().parent
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()
            folder = Path(out)
            if (folder / "initdb").exists() and (folder / "pg_ctl").exists():
                return folder
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgServer:
    """One PostgreSQL cluster in a temporary folder; start(), stop(), restart(), cleanup()."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.as_root = os.geteuid() == 0
        # Not under pytest's tmp_path: that lives in a 0700 folder the postgres user cannot reach.
        self.base = Path(tempfile.mkdtemp(prefix="chatcli-pg-"))
        self.data = self.base / "data"
        self.sockets = self.base / "sock"
        self.log = self.base / "server.log"
        self.sockets.mkdir()
        if self.as_root:
            entry = pwd.getpwnam("postgres")
            for path in (self.base, self.sockets):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        self.port = _free_port()
        self.host = "127.0.0.1"
        self._initdb()

    def _cmd(self, args: list[str]) -> list[str]:
        return (["runuser", "-u", "postgres", "--"] if self.as_root else []) + args

    def _run(self, args: list[str], timeout: float = 120) -> None:
        proc = subprocess.run(
            self._cmd(args), capture_output=True, text=True, timeout=timeout, cwd=self.base
        )
        if proc.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(
                f"{' '.join(args[:2])} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
                f"\n{log}"
            )

    def _initdb(self) -> None:
        self._run(
            [
                str(self.bindir / "initdb"),
                "-D",
                str(self.data),
                "-U",
                SUPERUSER,
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ]
        )
        # Loopback only; everything over TCP needs a password, the socket is for the tests.
        (self.data / "pg_hba.conf").write_text(
            "local all all trust\n"
            "host all all 127.0.0.1/32 scram-sha-256\n"
            "host all all ::1/128 scram-sha-256\n"
        )

    def _options(self) -> str:
        return (
            f"-c port={self.port} -c listen_addresses={self.host} "
            f"-c unix_socket_directories={self.sockets} -c fsync=off -c full_page_writes=off "
            "-c shared_buffers=16MB -c max_connections=30"
        )

    def start(self) -> None:
        pg_ctl = str(self.bindir / "pg_ctl")
        for attempt in range(3):
            try:
                self._run(
                    [pg_ctl, "start", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60"]
                    + ["-o", self._options()]
                )
                return
            except RuntimeError:
                if attempt == 2:
                    raise
                self.port = _free_port()  # someone took the port meanwhile
                time.sleep(0.5)

    def stop(self, mode: str = "fast") -> None:
        if (self.data / "postmaster.pid").exists():
            self._run([str(self.bindir / "pg_ctl"), "stop", "-D", str(self.data), "-m", mode, "-w"])

    def restart(self) -> None:
        self.stop()
        self.start()

    def cleanup(self) -> None:
        with contextlib.suppress(Exception):
            self.stop("immediate")
        shutil.rmtree(self.base, ignore_errors=True)

    def url(self, user: str, dbname: str, password: str | None = None) -> str:
        """A postgresql:// URL over TCP; with the password in it only when given."""
        auth = f"{user}:{password}" if password else user
        return f"postgresql://{auth}@{self.host}:{self.port}/{dbname}"

    def admin_conninfo(self, dbname: str = "postgres") -> str:
        """The superuser over the Unix socket (trust): for setting up and checking the data."""
        return f"host={self.sockets} port={self.port} user={SUPERUSER} dbname={dbname}"


@dataclass
class PgSample:
    """The sample database `shop` on a running PgServer, with its two login roles."""

    server: PgServer
    dbname: str = "shop"
    owner: str = "chat_owner"
    reader: str = "chat_reader"
    owner_password: str = field(default_factory=lambda: "own-" + secrets.token_hex(8))
    reader_password: str = field(default_factory=lambda: "read-" + secrets.token_hex(8))

    def url(self, role: str, *, with_password: bool = False) -> str:
        password = self.password(role) if with_password else None
        return self.server.url(role, self.dbname, password)

    def password(self, role: str) -> str:
        return self.owner_password if role == self.owner else self.reader_password

    def admin(self) -> Any:
        """A new superuser connection to `shop` over the socket (autocommit)."""
        import psycopg

        return psycopg.connect(self.server.admin_conninfo(self.dbname), autocommit=True)

    def create(self) -> None:
        import psycopg

        with psycopg.connect(self.server.admin_conninfo(), autocommit=True) as conn:
            for role in (self.owner, self.reader):
                conn.execute(
                    f"CREATE ROLE {role} LOGIN PASSWORD '{self.password(role)}'"  # our own text
                )
            conn.execute(f"CREATE DATABASE {self.dbname} OWNER {self.owner}")
        with self.admin() as conn:
            conn.execute(f"SET ROLE {self.owner}")
            conn.execute(SAMPLE_SQL)
            conn.execute(SAMPLE_GRANTS.format(reader=self.reader, db=self.dbname))

    def state(self, conn: Any) -> dict[str, Any]:
        """What must never change: data, catalog, ACLs, sequence, locks, large objects."""
        return dict(conn.execute(STATE_SQL).fetchall())


SAMPLE_SQL = """
CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL, email text UNIQUE);
CREATE TABLE orders (
    id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id integer NOT NULL REFERENCES customers (id),
    total numeric(10, 2),
    placed date DEFAULT DATE '2024-01-01',
    tags text[],
    meta jsonb
);
CREATE INDEX orders_customer_idx ON orders (customer_id);
CREATE VIEW big_orders AS SELECT id, customer_id, total FROM orders WHERE total > 100;
CREATE SEQUENCE invoice_no START 1000;
CREATE SCHEMA archive;
CREATE TABLE archive.old_orders (id integer PRIMARY KEY, note text);
INSERT INTO customers (name, email) VALUES
    ('Ada', 'ada@example.com'), ('Grace', 'grace@example.com'), ('Linus', NULL);
INSERT INTO orders (customer_id, total, placed, tags, meta) VALUES
    (1, 250.00, '2024-02-01', '{new,vip}', '{"via": "web"}'),
    (1, 12.50, '2024-02-03', NULL, NULL),
    (2, 99.99, 'infinity', '{}', '{"via": "phone"}'),
    (3, 101.00, '2024-03-01', '{gift}', NULL);
INSERT INTO archive.old_orders VALUES (1, 'first ever');
"""

SAMPLE_GRANTS = """
GRANT CONNECT ON DATABASE {db} TO {reader};
GRANT USAGE ON SCHEMA public, archive TO {reader};
GRANT SELECT ON ALL TABLES IN SCHEMA public, archive TO {reader};
"""

# Each row: (what, value); values are digests so one comparison covers everything.
STATE_SQL = """
SELECT 'catalog', md5(string_agg(
    n.nspname || '.' || c.relname || ':' || c.relkind::text || ':' || c.relowner::regrole::text
    || ':' || coalesce(c.relacl::text, ''), ',' ORDER BY n.nspname, c.relname))
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_toast'
UNION ALL
SELECT 'columns', md5(string_agg(
    a.attrelid::regclass::text || '.' || a.attname || ':' || format_type(a.atttypid, a.atttypmod)
    || ':' || a.attnotnull, ',' ORDER BY a.attrelid::regclass::text, a.attnum))
FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_toast'
  AND a.attnum > 0
UNION ALL
SELECT 'roles', md5(string_agg(rolname || ':' || rolsuper || ':' || rolcanlogin, ','
    ORDER BY rolname)) FROM pg_roles
UNION ALL
SELECT 'database acl', coalesce(datacl::text, '')
FROM pg_database WHERE datname = current_database()
UNION ALL
SELECT 'schemas', string_agg(nspname || ':' || coalesce(nspacl::text, ''), ',' ORDER BY nspname)
FROM pg_namespace
UNION ALL
SELECT 'customers', count(*)::text || ':' || md5(string_agg(t::text, ',' ORDER BY t::text))
FROM customers t
UNION ALL
SELECT 'orders', count(*)::text || ':' || md5(string_agg(t::text, ',' ORDER BY t::text))
FROM orders t
UNION ALL
SELECT 'old_orders', count(*)::text FROM archive.old_orders
UNION ALL
SELECT 'invoice_no', last_value::text || ':' || is_called FROM invoice_no
UNION ALL
SELECT 'advisory locks', count(*)::text FROM pg_locks WHERE locktype = 'advisory'
UNION ALL
SELECT 'large objects', count(*)::text FROM pg_largeobject_metadata
UNION ALL
SELECT 'prepared', count(*)::text FROM pg_prepared_xacts
"""


@pytest.fixture(scope="session", name="pg")
def pg_fixture() -> Iterator[PgSample]:
    """A real PostgreSQL server for the whole run, with the sample database; skips without one."""
    # .ci/run sets this: there, a missing server is a failure, not a reason to skip
    missing = pytest.fail if os.environ.get("CHATCLI_TESTS_NEED_POSTGRES") else pytest.skip
    bindir = find_bindir()
    if bindir is None:
        missing("PostgreSQL is not installed (no initdb/pg_ctl on PATH, none in pg_config)")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        missing("psycopg is not installed (pip install -e '.[dev]')")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            missing("running as root and there is no postgres user to run the server as")
    server = PgServer(bindir)
    try:
        server.start()
        sample = PgSample(server)
        sample.create()
        yield sample
    finally:
        server.cleanup()
