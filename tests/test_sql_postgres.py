"""The PostgreSQL backend against a real server the tests start (tests/pg_server.py).

Every hostile statement goes through the backend's run_sql (what the model's run_sql tool and
/sql call), as the owner of the tables (whom only READ ONLY stops) and as a SELECT-only role;
a second connection then checks that data, catalog, ACLs, the sequence, locks and large
objects are exactly as before.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pg_server import PgSample, pg_fixture  # noqa: F401  (the session fixture `pg`)

from chatcli.errors import QueryError
from chatcli.sql import call_tool
from chatcli.sql.postgres import (
    AuthenticationFailed,
    ConnectionLost,
    PostgresDatabase,
    QueryTimeout,
    ServerUnreachable,
    is_postgres_url,
    strip_password,
)

pytestmark = pytest.mark.realserver


@pytest.fixture
def no_password(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No password from anywhere libpq looks, unless the test puts one there."""
    for name in ("PGPASSWORD", "PGSERVICE", "PGSERVICEFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "no-pgpass"))


def connect(
    pg: PgSample, role: str, monkeypatch: pytest.MonkeyPatch, timeout: float = 2.0
) -> PostgresDatabase:
    monkeypatch.setenv("PGPASSWORD", pg.password(role))
    return PostgresDatabase(pg.url(role), timeout=timeout)


@pytest.fixture(params=["chat_owner", "chat_reader"])
def db(
    request: pytest.FixtureRequest, pg: PgSample, monkeypatch: pytest.MonkeyPatch, no_password: None
) -> Iterator[PostgresDatabase]:
    database = connect(pg, request.param, monkeypatch)
    yield database
    database.close()


@pytest.fixture
def reader(pg: PgSample, monkeypatch: pytest.MonkeyPatch, no_password: None) -> Iterator[Any]:
    database = connect(pg, pg.reader, monkeypatch)
    yield database
    database.close()


@pytest.fixture
def owner(pg: PgSample, monkeypatch: pytest.MonkeyPatch, no_password: None) -> Iterator[Any]:
    database = connect(pg, pg.owner, monkeypatch)
    yield database
    database.close()


# {base} is the server's own folder, which its user may write to: only READ ONLY and the
# role's missing privileges stand between these and a new file there.
HOSTILE = {
    "drop": "DROP TABLE customers CASCADE",
    "drop view": "DROP VIEW big_orders",
    "delete": "DELETE FROM orders",
    "update": "UPDATE customers SET name = 'pwned'",
    "insert": "INSERT INTO customers (name) VALUES ('pwned')",
    "insert via cte": "WITH d AS (DELETE FROM orders RETURNING *) SELECT count(*) FROM d",
    "create table": "CREATE TABLE evil (x int)",
    "create index": "CREATE INDEX evil_idx ON customers (name)",
    "alter": "ALTER TABLE customers ADD COLUMN evil int",
    "alter sequence": "ALTER SEQUENCE invoice_no RESTART 1",
    "truncate": "TRUNCATE orders, customers",
    "grant": "GRANT ALL ON customers TO PUBLIC",
    "grant database": "GRANT CREATE ON DATABASE shop TO PUBLIC",
    "vacuum": "VACUUM customers",
    "analyze": "ANALYZE customers",
    "reindex": "REINDEX TABLE customers",
    "comment": "COMMENT ON TABLE customers IS 'pwned'",
    "create function": "CREATE FUNCTION evil() RETURNS int LANGUAGE sql AS 'SELECT 1'",
    "two statements": "SELECT 1; DROP TABLE orders",
    "commit then drop": "COMMIT; DROP TABLE orders",
    "rollback then drop": "ROLLBACK; DROP TABLE orders",
    "read write": "SET TRANSACTION READ WRITE",
    "read write via set_config": "SELECT set_config('transaction_read_only', 'off', false)",
    "copy to program": "COPY customers TO PROGRAM 'touch {base}/pwned-program'",
    "copy to file": "COPY customers TO '{base}/pwned.csv'",
    "copy from file": "COPY customers FROM '{base}/server.log'",
    "temp table": "CREATE TEMP TABLE evil AS SELECT * FROM customers",
    "nextval": "SELECT nextval('invoice_no')",
    "setval": "SELECT setval('invoice_no', 1)",
    "lo_import": "SELECT lo_import('/etc/hostname')",
    "lo_create": "SELECT lo_create(0)",
    "select for update": "SELECT * FROM customers FOR UPDATE",
    "do block": "DO $$ BEGIN DELETE FROM orders; END $$",
    "do block commit": "DO $$ BEGIN COMMIT; DELETE FROM orders; END $$",
    "prepare": "PREPARE evil AS DELETE FROM orders",
    "listen": "LISTEN evil",
    "set role": "SET ROLE postgres",
    "alter system": "ALTER SYSTEM SET work_mem = '1GB'",
    "terminate others": (
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid <> pg_backend_pid()"
    ),
    "advisory lock": "SELECT pg_advisory_lock(42)",
    "advisory lock shared": "SELECT pg_advisory_lock_shared(43)",
}
# These run (for the owner, or for anyone) and nothing of them outlasts the call: the rollback
# undoes a REINDEX or a lo_create, DISCARD ALL drops the advisory locks, the prepared statement
# and the LISTEN. ANALYZE by the owner leaves fresh planner statistics (pg_class.reltuples is
# updated in place); a SELECT-only role is skipped with a warning.
MAY_SUCCEED = {
    "advisory lock",
    "advisory lock shared",
    "analyze",
    "reindex",
    "lo_create",
    "prepare",
    "listen",
}


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_statement_leaves_the_database_unchanged(
    name: str, db: PostgresDatabase, pg: PgSample
) -> None:
    sql = HOSTILE[name].format(base=pg.server.base)
    with pg.admin() as check:
        before = pg.state(check)
        if name in MAY_SUCCEED:
            with contextlib.suppress(QueryError):  # "must be owner" for the reader
                db.run_sql(sql)
        else:
            with pytest.raises(QueryError) as caught:
                db.run_sql(sql)
            assert "\n" not in str(caught.value)
        assert pg.state(check) == before  # the check connection itself is still alive, too
    assert not list(pg.server.base.glob("pwned*"))
    assert db.run_sql("SELECT count(*) FROM customers").rows == [(3,)]  # and it goes on


def test_two_statements_are_refused_as_such(reader: PostgresDatabase) -> None:
    with pytest.raises(QueryError, match="only one statement per query"):
        reader.run_sql("SELECT 1; SELECT 2")


def test_writes_are_refused_by_the_server_as_read_only(owner: PostgresDatabase) -> None:
    with pytest.raises(QueryError, match="read-only"):
        owner.run_sql("DELETE FROM orders")


def test_a_prepared_write_does_not_outlive_its_call(owner: PostgresDatabase) -> None:
    owner.run_sql("PREPARE evil AS DELETE FROM orders")  # PREPARE outlives a rollback...
    with pytest.raises(QueryError, match='prepared statement "evil" does not exist'):
        owner.run_sql("EXECUTE evil")  # ...not DISCARD ALL


def test_session_settings_do_not_carry_over(owner: PostgresDatabase) -> None:
    owner.run_sql("SELECT set_config('statement_timeout', '0', false)")
    assert owner.run_sql("SHOW statement_timeout").rows == [("2s",)]


def test_statement_timeout_comes_from_sql_timeout(reader: PostgresDatabase) -> None:
    assert reader.run_sql("SHOW statement_timeout").rows == [("2s",)]


def test_pg_sleep_past_the_limit_stops_at_the_limit(reader: PostgresDatabase) -> None:
    start = time.monotonic()
    with pytest.raises(QueryTimeout, match="query stopped after 2 s: time limit reached"):
        reader.run_sql("SELECT pg_sleep(30)")
    assert time.monotonic() - start < 3.5
    assert reader.run_sql("SELECT 1").rows == [(1,)]


def test_a_million_rows_come_back_capped_and_quickly(reader: PostgresDatabase) -> None:
    start = time.monotonic()
    result = reader.run_sql("SELECT g, md5(g::text) FROM generate_series(1, 1000000) g")
    elapsed = time.monotonic() - start
    assert len(result.rows) == 200 and result.truncated
    assert result.note is not None and result.note.startswith("showing first 200 rows")
    assert "rows were left out" in result.note
    assert elapsed < 1.5, elapsed


def test_a_small_overflow_is_counted_exactly(reader: PostgresDatabase) -> None:
    result = reader.run_sql("SELECT g FROM generate_series(1, 250) g")
    assert result.note == "showing first 200 rows; 50 of 250 rows were left out"


def test_the_character_cap_stops_wide_rows(pg: PgSample, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGPASSWORD", pg.reader_password)
    with PostgresDatabase(pg.url(pg.reader), max_chars=2000) as small:
        result = small.run_sql("SELECT repeat('x', 150) FROM generate_series(1, 100)")
    assert result.truncated and len(result.rows) < 20
    assert "passed 2000 characters" in (result.note or "")


def test_values_show_as_postgres_writes_them(reader: PostgresDatabase) -> None:
    result = reader.run_sql("SELECT total, placed, tags, meta FROM orders ORDER BY id LIMIT 3")
    assert [tuple(str(v) for v in row) for row in result.rows] == [
        ("250.00", "2024-02-01", "{new,vip}", '{"via": "web"}'),
        ("12.50", "2024-02-03", "None", "None"),
        ("99.99", "infinity", "{}", '{"via": "phone"}'),
    ]


def test_show_and_explain_run(reader: PostgresDatabase) -> None:
    assert reader.run_sql("EXPLAIN SELECT * FROM customers").rows
    assert reader.run_sql("SHOW transaction_read_only").rows == [("on",)]


def test_a_syntax_error_is_one_line(reader: PostgresDatabase) -> None:
    with pytest.raises(QueryError, match='syntax error at or near "SELEC"') as caught:
        reader.run_sql("SELEC 1")
    assert "\n" not in str(caught.value)


# -- the catalog


def test_list_tables_names_what_the_role_can_read(reader: PostgresDatabase) -> None:
    assert reader.list_tables() == ["big_orders", "customers", "orders", "archive.old_orders"]


def test_schema_summary_comes_from_the_catalog(reader: PostgresDatabase) -> None:
    summary = reader.schema_summary()
    assert "customers(id integer PK, name text, email text) — 3 rows" in summary
    assert "customer_id integer -> customers" in summary
    assert "big_orders(id integer, customer_id integer, total numeric(10,2)) — view" in summary
    assert "archive.old_orders(id integer PK, note text) — 1 rows" in summary


def test_describe_table_shows_keys_indexes_and_count(reader: PostgresDatabase) -> None:
    text = reader.describe_table("orders")
    assert text.startswith("table orders — 4 rows")
    assert "  id integer PRIMARY KEY NOT NULL GENERATED ALWAYS AS IDENTITY" in text
    assert "FOREIGN KEY (customer_id) REFERENCES customers(id)" in text
    assert "orders_customer_idx btree (customer_id)" in text
    assert "UNIQUE orders_pkey btree (id) (primary key)" in text


def test_describe_view_shows_its_definition(reader: PostgresDatabase) -> None:
    assert "definition: SELECT orders.id" in reader.describe_table("BIG_ORDERS")


def test_describe_unknown_table_lists_the_tables(reader: PostgresDatabase) -> None:
    with pytest.raises(QueryError, match="no table or view named 'nope'; tables: big_orders"):
        reader.describe_table("nope")


def test_an_error_of_ours_keeps_the_connection(reader: PostgresDatabase) -> None:
    pid = reader.run_sql("SELECT pg_backend_pid()").rows
    with pytest.raises(QueryError):
        reader.describe_table("nope")
    with pytest.raises(QueryError):
        reader.run_sql("SELECT * FROM nope")
    assert reader.run_sql("SELECT pg_backend_pid()").rows == pid


def test_the_tools_work_on_postgres(reader: PostgresDatabase) -> None:
    text = call_tool(reader, "run_sql", {"query": "SELECT name FROM customers ORDER BY id"})
    assert text.splitlines()[:3] == ["name", "Ada", "Grace"]
    assert call_tool(reader, "run_sql", {"query": "DROP TABLE orders"}).startswith("error: ")


# -- write access


def test_an_owner_is_told_once_that_a_read_only_role_is_safer(owner: PostgresDatabase) -> None:
    warning = owner.write_warning()
    assert warning is not None and "chat_owner can write to 4 tables" in warning
    assert "a role granted only SELECT is safer" in warning
    assert owner.write_warning() is None


def test_a_select_only_role_gets_no_warning(reader: PostgresDatabase) -> None:
    assert reader.write_access() is None
    assert reader.write_warning() is None


# -- passwords and URLs


def test_strip_password() -> None:
    assert strip_password("postgresql://u:pw@host/db") == "postgresql://u@host/db"
    assert strip_password("postgres://u:p%40w@h:5433/db?sslmode=require&password=x") == (
        "postgres://u@h:5433/db?sslmode=require"
    )
    assert strip_password("postgresql://u@h/db") == "postgresql://u@h/db"
    assert strip_password("postgresql:///db") == "postgresql:///db"


def test_is_postgres_url() -> None:
    assert is_postgres_url("postgresql://h/db") and is_postgres_url("Postgres://h/db")
    assert not is_postgres_url("data.db") and not is_postgres_url("mysql://h/db")


def test_the_password_comes_from_pgpassword(
    pg: PgSample, monkeypatch: pytest.MonkeyPatch, no_password: None
) -> None:
    monkeypatch.setenv("PGPASSWORD", pg.reader_password)
    with PostgresDatabase(pg.url(pg.reader)) as database:
        assert database.run_sql("SELECT current_user").rows == [("chat_reader",)]


def test_the_password_comes_from_a_pgpass_file(
    pg: PgSample, monkeypatch: pytest.MonkeyPatch, no_password: None, tmp_path: Path
) -> None:
    pgpass = tmp_path / "pgpass"
    server = pg.server
    pgpass.write_text(f"{server.host}:{server.port}:shop:{pg.reader}:{pg.reader_password}\n")
    pgpass.chmod(0o600)
    monkeypatch.setenv("PGPASSFILE", str(pgpass))
    with PostgresDatabase(pg.url(pg.reader)) as database:
        assert database.run_sql("SELECT current_user").rows == [("chat_reader",)]


def test_no_password_is_one_line_naming_where_to_put_it(pg: PgSample, no_password: None) -> None:
    with pytest.raises(AuthenticationFailed) as caught:
        PostgresDatabase(pg.url(pg.reader))
    message = str(caught.value)
    assert "\n" not in message and "PGPASSWORD" in message and "~/.pgpass" in message
    assert message.endswith(f"({pg.url(pg.reader)})")


def test_a_wrong_password_is_an_authentication_failure(pg: PgSample, no_password: None) -> None:
    url = pg.server.url(pg.reader, "shop", "wrong-" + pg.reader_password)
    with pytest.raises(AuthenticationFailed, match="password authentication failed") as caught:
        PostgresDatabase(url)
    assert pg.reader_password not in str(caught.value)


def test_a_password_in_the_url_is_never_shown(pg: PgSample, no_password: None) -> None:
    secret = pg.reader_password
    with PostgresDatabase(pg.url(pg.reader, with_password=True), timeout=1) as database:
        shown = [database.url, str(database.path), database.schema_summary()]
        for sql in (
            "SELEC 1",
            "SELECT pg_sleep(5)",
            "SELECT pg_terminate_backend(pg_backend_pid())",
        ):
            with pytest.raises(QueryError) as caught:
                database.run_sql(sql)
            shown.append(str(caught.value))
        shown.append(database.run_sql("SELECT 1").to_text())
    assert not [text for text in shown if secret in text]
    assert database.url == pg.url(pg.reader)


# -- lost connections


def test_a_terminated_backend_is_one_line_then_reconnects(owner: PostgresDatabase) -> None:
    with pytest.raises(ConnectionLost) as caught:
        owner.run_sql("SELECT pg_terminate_backend(pg_backend_pid())")
    assert "\n" not in str(caught.value) and "connects again" in str(caught.value)
    assert owner.run_sql("SELECT 1").rows == [(1,)]


def test_server_stopped_between_calls_then_restarted(
    pg: PgSample, reader: PostgresDatabase
) -> None:
    assert reader.run_sql("SELECT 1").rows == [(1,)]
    pg.server.stop()
    try:
        with pytest.raises(ConnectionLost) as lost:
            reader.run_sql("SELECT 1")
        with pytest.raises(ServerUnreachable, match="cannot connect to PostgreSQL") as down:
            reader.run_sql("SELECT 1")
        assert "\n" not in str(lost.value) + str(down.value)
    finally:
        pg.server.start()
    assert reader.run_sql("SELECT count(*) FROM customers").rows == [(3,)]


def test_server_gone_mid_query_is_one_line(pg: PgSample, reader: PostgresDatabase) -> None:
    reader.timeout = 20
    stopper = threading.Timer(1.0, pg.server.stop, ("immediate",))
    stopper.start()
    try:
        start = time.monotonic()
        with pytest.raises(ConnectionLost) as caught:
            reader.run_sql("SELECT pg_sleep(15)")
        assert time.monotonic() - start < 10
        assert "\n" not in str(caught.value)
    finally:
        stopper.join()
        pg.server.start()
    assert reader.run_sql("SELECT 1").rows == [(1,)]


def test_interrupt_cancels_the_running_query(reader: PostgresDatabase) -> None:
    reader.timeout = 20
    threading.Timer(0.5, reader.interrupt).start()
    with pytest.raises(QueryError, match="query interrupted"):
        reader.run_sql("SELECT pg_sleep(15)")
    assert reader.run_sql("SELECT 1").rows == [(1,)]


def test_a_closed_database_refuses_calls(reader: PostgresDatabase) -> None:
    reader.close()
    with pytest.raises(QueryError, match="closed"):
        reader.run_sql("SELECT 1")


def test_importing_the_backend_does_not_import_psycopg() -> None:
    code = (
        "import sys, chatcli.sql.postgres as p; "
        "assert p.is_postgres_url('postgresql://h/db'); print('psycopg' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
