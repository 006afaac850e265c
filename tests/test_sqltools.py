"""Tests for chatcli.sqltools against real SQLite files in tmp_path."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatcli.errors import InvalidDatabase, QueryError, StorageError
from chatcli.sqltools import (
    TOOL_SPECS,
    QueryResult,
    ReadOnlyDatabase,
    call_tool,
    copy_database,
    validate_database,
)

# --- fixtures and helpers ---------------------------------------------------------------


def make_db(path: Path, *, wal: bool = False) -> Path:
    """A small database with two tables, a foreign key, an index and a view."""
    conn = sqlite3.connect(path)
    if wal:
        conn.execute("PRAGMA journal_mode=WAL")
    conn.executescript(
        """
        CREATE TABLE customers (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL,
            email TEXT UNIQUE
        );
        CREATE TABLE orders (
            id INTEGER PRIMARY KEY,
            customer_id INTEGER NOT NULL REFERENCES customers(id) ON DELETE CASCADE,
            total REAL DEFAULT 0,
            note TEXT
        );
        CREATE INDEX idx_orders_customer ON orders(customer_id);
        CREATE VIEW order_totals AS
            SELECT c.name AS name, sum(o.total) AS spent
            FROM customers c JOIN orders o ON o.customer_id = c.id GROUP BY c.id;
        INSERT INTO customers VALUES (1, 'Ada', 'ada@example.com'), (2, 'Bob', NULL),
                                     (3, 'Cy', 'cy@example.com');
        INSERT INTO orders VALUES (1, 1, 10.5, 'first'), (2, 1, 4.5, NULL), (3, 2, 7.0, 'x');
        """
    )
    conn.commit()
    conn.close()
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def dump(path: Path) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return make_db(tmp_path / "shop.db")


# --- validate_database --------------------------------------------------------------------


def test_validate_accepts_a_valid_database(db_path: Path) -> None:
    before = sha256(db_path)
    validate_database(db_path)
    assert sha256(db_path) == before
    assert sorted(os.listdir(db_path.parent)) == ["shop.db"]


@pytest.mark.parametrize(
    ("setup", "fragment"),
    [
        (lambda p: None, "no such file"),
        (lambda p: p.mkdir(), "folder"),
        (lambda p: p.write_bytes(b""), "empty file"),
        (lambda p: p.write_text("id,name\n1,Ada\n"), "not a SQLite database"),
        (lambda p: p.write_bytes(b"SQLite"), "not a SQLite database"),
        (lambda p: p.write_bytes(b"SQLite format 3\x00" + os.urandom(8192)), "corrupt"),
    ],
    ids=["missing", "directory", "zero-byte", "text", "short-header", "garbage-with-header"],
)
def test_validate_refuses_bad_files(tmp_path: Path, setup, fragment: str) -> None:
    path = tmp_path / "bad.db"
    setup(path)
    with pytest.raises(InvalidDatabase) as info:
        validate_database(path)
    assert fragment in info.value.message
    assert "\n" not in str(info.value)
    assert info.value.path == path


def test_validate_refuses_damaged_table_pages(tmp_path: Path) -> None:
    path = tmp_path / "damaged.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (x TEXT)")
    conn.executemany("INSERT INTO t VALUES (?)", [(f"row {i} " * 20,) for i in range(2000)])
    conn.commit()
    conn.close()
    data = bytearray(path.read_bytes())
    # Keep page 1 (header and schema) intact and scramble the table's b-tree pages.
    data[4096 * 2 :] = os.urandom(len(data) - 4096 * 2)
    path.write_bytes(bytes(data))
    with pytest.raises(InvalidDatabase, match="corrupt"):
        validate_database(path)


def test_validate_never_writes_and_leaves_no_journal(db_path: Path) -> None:
    mtime = db_path.stat().st_mtime_ns
    validate_database(db_path)
    assert db_path.stat().st_mtime_ns == mtime
    assert os.listdir(db_path.parent) == ["shop.db"]


def test_validate_path_with_uri_special_characters(tmp_path: Path) -> None:
    folder = tmp_path / "we?ird #dir %20 &x=y"
    folder.mkdir()
    validate_database(make_db(folder / "a b?.db"))


# --- copy_database ------------------------------------------------------------------------


def test_copy_makes_identical_private_copy(db_path: Path, tmp_path: Path) -> None:
    before = sha256(db_path)
    dest = tmp_path / "copy.db"
    copy_database(db_path, dest)
    assert sha256(db_path) == before
    assert dump(dest) == dump(db_path)
    assert stat.S_IMODE(dest.stat().st_mode) == 0o600
    assert sorted(os.listdir(tmp_path)) == ["copy.db", "shop.db"]
    assert dest.read_bytes()[18:20] == b"\x01\x01"  # rollback journal, not WAL


@pytest.mark.parametrize(
    "content",
    [None, b"", b"plain text\n", b"SQLite format 3\x00" + b"\xff" * 4000],
    ids=["missing", "zero-byte", "text", "garbage-with-header"],
)
def test_copy_refuses_bad_source_and_keeps_dest(tmp_path: Path, content: bytes | None) -> None:
    src = tmp_path / "src.db"
    if content is not None:
        src.write_bytes(content)
    dest = make_db(tmp_path / "dest.db")
    before = sha256(dest)
    files_before = sorted(os.listdir(tmp_path))
    with pytest.raises(InvalidDatabase):
        copy_database(src, dest)
    assert sha256(dest) == before
    assert sorted(os.listdir(tmp_path)) == files_before


def test_copy_replaces_existing_dest(db_path: Path, tmp_path: Path) -> None:
    dest = tmp_path / "dest.db"
    dest.write_text("old content")
    copy_database(db_path, dest)
    assert dump(dest) == dump(db_path)


def test_copy_into_missing_folder_is_a_storage_error(db_path: Path, tmp_path: Path) -> None:
    with pytest.raises(StorageError):
        copy_database(db_path, tmp_path / "nope" / "copy.db")


def test_copy_onto_itself_is_refused(db_path: Path) -> None:
    before = sha256(db_path)
    with pytest.raises(StorageError):
        copy_database(db_path, db_path)
    assert sha256(db_path) == before


def test_copy_while_wal_source_has_open_write_transaction(tmp_path: Path) -> None:
    src = make_db(tmp_path / "live.db", wal=True)
    writer = sqlite3.connect(src, isolation_level=None)
    try:
        writer.execute("PRAGMA journal_mode=WAL")
        writer.execute("INSERT INTO customers VALUES (10, 'committed', NULL)")  # lives in -wal
        writer.execute("BEGIN IMMEDIATE")
        writer.execute("INSERT INTO customers VALUES (11, 'uncommitted', NULL)")
        before = sha256(src)
        dest = tmp_path / "sub" / "copy.db"
        dest.parent.mkdir()
        copy_database(src, dest, timeout=5)
        assert sha256(src) == before
        writer.execute("COMMIT")
    finally:
        writer.close()
    conn = sqlite3.connect(f"{dest.as_uri()}?mode=ro", uri=True)
    try:
        names = [r[0] for r in conn.execute("SELECT name FROM customers ORDER BY id")]
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    finally:
        conn.close()
    assert names == ["Ada", "Bob", "Cy", "committed"]
    assert os.listdir(dest.parent) == ["copy.db"]
    assert stat.S_IMODE(dest.stat().st_mode) == 0o600


def test_copy_gives_up_on_a_source_locked_too_long(tmp_path: Path) -> None:
    src = make_db(tmp_path / "locked.db")
    dest = make_db(tmp_path / "dest.db")
    before = sha256(dest)
    holder = sqlite3.connect(src, isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")  # rollback-journal mode: blocks every reader
        with pytest.raises(InvalidDatabase, match="locked"):
            copy_database(src, dest, timeout=0.3)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert sha256(dest) == before
    assert sorted(os.listdir(tmp_path)) == ["dest.db", "locked.db"]


def test_copy_backup_gives_up_when_lock_appears_after_validation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import chatcli.sqltools as sqltools

    src = make_db(tmp_path / "locked.db")
    holder = sqlite3.connect(src, isolation_level=None)
    # Simulate a writer that grabs the lock between validation and the backup itself.
    monkeypatch.setattr(
        sqltools, "validate_database", lambda path, **kw: holder.execute("BEGIN EXCLUSIVE")
    )
    try:
        with pytest.raises(InvalidDatabase, match="stayed locked"):
            copy_database(src, tmp_path / "dest.db", timeout=0.3)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert sorted(os.listdir(tmp_path)) == ["locked.db"]


# --- ReadOnlyDatabase: refusing every kind of write ---------------------------------------

HOSTILE = [
    "DROP TABLE orders",
    "DELETE FROM orders",
    "UPDATE orders SET total = 0",
    "INSERT INTO orders VALUES (9, 1, 1.0, 'x')",
    "CREATE TABLE x (a)",
    "CREATE TEMP TABLE x (a)",
    "ATTACH DATABASE 'x.db' AS x",
    "VACUUM INTO 'copy.db'",
    "VACUUM",
    "PRAGMA writable_schema=ON",
    "PRAGMA journal_mode=WAL",
    "PRAGMA user_version=5",
    "SELECT load_extension('x')",
    "SELECT 1; DROP TABLE orders",
    "BEGIN",
    "COMMIT",
    "SAVEPOINT a",
    "REINDEX",
    "ANALYZE",
    "DETACH main",
    # beyond the obvious ones
    "PRAGMA query_only=OFF",
    "PRAGMA user_version(5)",
    "PRAGMA main.application_id=7",
    "PRAGMA wal_checkpoint",
    "PRAGMA optimize",
    "PRAGMA incremental_vacuum",
    "PRAGMA temp_store_directory='.'",
    "ATTACH ':memory:' AS m",
    "REPLACE INTO customers VALUES (1, 'Eve', NULL)",
    "INSERT INTO customers (name) VALUES ('Eve') RETURNING id",
    "WITH x AS (SELECT 1) DELETE FROM orders",
    "UPDATE sqlite_master SET sql = 'x'",
    "CREATE VIEW v AS SELECT 1",
    "CREATE TEMP VIEW v AS SELECT 1",
    "CREATE INDEX i ON orders(total)",
    "CREATE TRIGGER tr AFTER INSERT ON orders BEGIN SELECT 1; END",
    "CREATE VIRTUAL TABLE v USING fts5(a)",
    "ALTER TABLE orders ADD COLUMN y",
    "DROP VIEW order_totals",
    "DROP INDEX idx_orders_customer",
    "ROLLBACK",
    "RELEASE a",
    "BEGIN IMMEDIATE",
    "SELECT 1; SELECT 2",
]


@pytest.mark.parametrize("query", HOSTILE)
def test_hostile_statement_is_refused_and_changes_nothing(
    db_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, query: str
) -> None:
    # Relative names in ATTACH / VACUUM INTO resolve against the working directory.
    monkeypatch.chdir(tmp_path)
    before = sha256(db_path)
    with ReadOnlyDatabase(db_path) as db:
        with pytest.raises(QueryError) as info:
            db.run_sql(query)
        message = info.value.message
        assert message.startswith(("not allowed:", "only one statement"))
        assert "\n" not in message
        text = call_tool(db, "run_sql", {"query": query})
        assert text.startswith("error: ")
        # The refusal leaves the sandbox usable.
        assert db.run_sql("SELECT count(*) FROM orders").rows == [(3,)]
    assert sha256(db_path) == before
    assert os.listdir(tmp_path) == ["shop.db"]
    assert dump(db_path) == dump(make_db(tmp_path.parent / f"{tmp_path.name}-ref.db"))


def test_refusal_messages_name_the_statement(db_path: Path) -> None:
    with ReadOnlyDatabase(db_path) as db:
        for query, expected in [
            ("DROP TABLE orders", "not allowed: this database is read-only (DROP TABLE)"),
            ("PRAGMA user_version=5", "(PRAGMA user_version=5)"),
            ("SELECT load_extension('x')", "function load_extension() is disabled"),
            ("SELECT 1; DROP TABLE orders", "only one statement per query"),
            ("VACUUM", "(VACUUM)"),
        ]:
            with pytest.raises(QueryError) as info:
                db.run_sql(query)
            assert expected in info.value.message


# --- ReadOnlyDatabase: reading ------------------------------------------------------------


def test_a_write_with_nothing_to_do_is_refused_too(tmp_path: Path) -> None:
    # REINDEX on a database without indexes never asks the authorizer; it is refused anyway.
    path = tmp_path / "plain.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE a (x INTEGER PRIMARY KEY)")
    conn.commit()
    conn.close()
    with ReadOnlyDatabase(path) as db:
        for query in ("REINDEX", "REINDEX a"):
            with pytest.raises(QueryError, match=r"^not allowed: .*read-only \(REINDEX\)$"):
                db.run_sql(query)
        assert db.run_sql("-- only a comment").note == "statement returned no result"


def test_reads_work(db_path: Path) -> None:
    with ReadOnlyDatabase(db_path) as db:
        result = db.run_sql("SELECT name, spent FROM order_totals ORDER BY name;  ")
        assert result.columns == ["name", "spent"]
        assert result.rows == [("Ada", 15.0), ("Bob", 7.0)]
        assert not result.truncated and result.note is None
        assert db.run_sql("SELECT 1; -- done").rows == [(1,)]
        assert db.run_sql(
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 5) "
            "SELECT sum(x) FROM c"
        ).rows == [(15,)]
        assert db.run_sql("SELECT count(*) FROM json_each('[1, 2, 3]')").rows == [(3,)]
        assert db.run_sql("SELECT upper(name) FROM customers WHERE id = 1").rows == [("ADA",)]


@pytest.mark.parametrize(
    "query",
    [
        "PRAGMA table_info(orders)",
        "PRAGMA table_xinfo('orders')",
        "PRAGMA index_list(orders)",
        "PRAGMA foreign_key_list(orders)",
        "PRAGMA user_version",
        "PRAGMA quick_check",
        "SELECT name FROM pragma_table_info('orders')",
    ],
)
def test_read_only_pragmas_are_allowed(db_path: Path, query: str) -> None:
    with ReadOnlyDatabase(db_path) as db:
        assert db.run_sql(query).rows


def test_sql_errors_carry_sqlite_text(db_path: Path) -> None:
    with ReadOnlyDatabase(db_path) as db:
        with pytest.raises(QueryError, match="syntax error"):
            db.run_sql("SELEC 1")
        with pytest.raises(QueryError, match="no such table: nope"):
            db.run_sql("SELECT * FROM nope")
        with pytest.raises(QueryError, match="empty query"):
            db.run_sql(" ; ")
        with pytest.raises(QueryError, match="null character"):
            db.run_sql("SELECT 'a\x00b'")
        assert db.run_sql("SELECT 2").rows == [(2,)]


def test_runaway_query_is_stopped_and_connection_survives(db_path: Path) -> None:
    with ReadOnlyDatabase(db_path, timeout=0.5) as db:
        start = time.monotonic()
        with pytest.raises(QueryError, match=r"query stopped after 0\.5 s"):
            db.run_sql(
                "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) "
                "SELECT count(*) FROM c"
            )
        assert time.monotonic() - start < 3
        assert db.run_sql("SELECT count(*) FROM customers").rows == [(3,)]


def test_interrupt_from_another_thread(db_path: Path) -> None:
    with ReadOnlyDatabase(db_path, timeout=30) as db:
        timer = threading.Timer(0.2, db.interrupt)
        timer.start()
        with pytest.raises(QueryError, match="interrupted"):
            db.run_sql(
                "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) "
                "SELECT count(*) FROM c"
            )
        timer.join()
        assert db.run_sql("SELECT 1").rows == [(1,)]


def test_usable_from_another_thread(db_path: Path) -> None:
    with ReadOnlyDatabase(db_path) as db:
        out: list[object] = []
        worker = threading.Thread(target=lambda: out.append(db.run_sql("SELECT 7").rows))
        worker.start()
        worker.join()
        assert out == [[(7,)]]


@pytest.fixture
def big_path(tmp_path: Path) -> Path:
    path = tmp_path / "big.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE big (id INTEGER PRIMARY KEY, label TEXT)")
    conn.executemany("INSERT INTO big VALUES (?, ?)", [(i, f"row {i}") for i in range(1000)])
    conn.execute("CREATE TABLE wide (id INTEGER PRIMARY KEY, body TEXT)")
    conn.executemany("INSERT INTO wide VALUES (?, ?)", [(i, "x" * 150) for i in range(100)])
    conn.commit()
    conn.close()
    return path


def test_row_cap(big_path: Path) -> None:
    with ReadOnlyDatabase(big_path) as db:
        result = db.run_sql("SELECT * FROM big")
        assert len(result.rows) == 200
        assert result.rows[0] == (0, "row 0") and result.rows[-1] == (199, "row 199")
        assert result.truncated
        assert result.note == "showing first 200 rows; 800 of 1000 rows were left out"
        exact = db.run_sql("SELECT * FROM big LIMIT 200")
        assert len(exact.rows) == 200 and not exact.truncated and exact.note is None
        text = call_tool(db, "run_sql", {"query": "SELECT * FROM big"})
        assert text.splitlines()[0] == "id | label"
        assert text.endswith("(showing first 200 rows; 800 of 1000 rows were left out)")


def test_row_cap_fetches_lazily_from_an_endless_query(big_path: Path) -> None:
    # If run_sql read every row this query would never finish (it would hit the time limit).
    with ReadOnlyDatabase(big_path, timeout=5, max_rows=50) as db:
        start = time.monotonic()
        result = db.run_sql(
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) SELECT x FROM c"
        )
        assert time.monotonic() - start < 1
        assert [r[0] for r in result.rows] == list(range(1, 51))
        assert result.truncated


def test_char_cap(big_path: Path) -> None:
    with ReadOnlyDatabase(big_path, max_chars=2000) as db:
        result = db.run_sql("SELECT * FROM wide")
        assert result.truncated
        assert len(result.rows) < 20
        assert "2000 characters" in (result.note or "")
        text = call_tool(db, "run_sql", {"query": "SELECT * FROM wide"})
        assert len(text) <= 2000
        assert "rows not shown" in text or "passed 2000 characters" in text


def test_large_values_are_capped_by_size_not_just_rendered_length(big_path: Path) -> None:
    # Each blob renders as "<blob 1000000 bytes>", so only the byte budget can stop this.
    with ReadOnlyDatabase(big_path) as db:
        result = db.run_sql("SELECT id, randomblob(1000000) FROM big")
    assert result.truncated
    assert 30 <= len(result.rows) <= 40
    assert "MB" in (result.note or "")


def test_trailing_semicolons_and_whitespace_are_ignored(db_path: Path) -> None:
    with ReadOnlyDatabase(db_path) as db:
        assert db.run_sql("SELECT 1 ;; \n ; ").rows == [(1,)]


def test_to_text_renders_values_compactly() -> None:
    result = QueryResult(
        columns=["a", "b", "c", "d"],
        rows=[(None, b"\x00\x01\x02", "two\nlines\tand tab", 1.5), (1, "y" * 500, "", 0.1)],
    )
    lines = result.to_text().splitlines()
    assert lines[0] == "a | b | c | d"
    assert lines[1] == "NULL | <blob 3 bytes> | two\\nlines\\tand tab | 1.5"
    assert lines[2].startswith("1 | " + "y" * 200 + "…(+300 chars)")
    assert len(lines) == 3
    assert QueryResult(["x"], []).to_text() == "x\n(no rows)"


def test_to_text_cut_note_says_how_much_was_left_out() -> None:
    result = QueryResult(["n"], [(i,) for i in range(1000)], truncated=True, note="capped")
    text = result.to_text(500)
    assert len(text) <= 500
    last = text.splitlines()[-1]
    shown = len(text.splitlines()) - 2
    assert f"{1000 - shown} of 1000 rows not shown" in last
    assert last.endswith("; capped)")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    columns=st.lists(st.text(min_size=1, max_size=30), min_size=1, max_size=8),
    rows=st.lists(
        st.tuples(
            st.one_of(st.none(), st.integers(), st.floats(), st.text(max_size=400), st.binary())
        ),
        max_size=60,
    ),
    note=st.one_of(st.none(), st.text(max_size=100)),
    max_chars=st.integers(min_value=400, max_value=5000),
)
def test_to_text_never_exceeds_the_cap(
    columns: list[str], rows: list[tuple[object]], note: str | None, max_chars: int
) -> None:
    text = QueryResult(columns, list(rows), note=note).to_text(max_chars)
    assert len(text) <= max_chars


def test_invalid_utf8_text_does_not_break_a_query(tmp_path: Path) -> None:
    path = tmp_path / "latin.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (s TEXT)")
    conn.execute("INSERT INTO t VALUES (CAST(X'63616689' AS TEXT))")
    conn.commit()
    conn.close()
    with ReadOnlyDatabase(path) as db:
        assert db.run_sql("SELECT s FROM t").rows == [("caf\ufffd",)]


# --- schema helpers -----------------------------------------------------------------------


def test_list_tables_hides_sqlite_internals(db_path: Path) -> None:
    conn = sqlite3.connect(db_path)
    conn.execute("CREATE TABLE events (id INTEGER PRIMARY KEY AUTOINCREMENT, what TEXT)")
    conn.execute("INSERT INTO events (what) VALUES ('x')")  # creates sqlite_sequence
    conn.execute("ANALYZE")  # creates sqlite_stat1
    conn.commit()
    conn.close()
    with ReadOnlyDatabase(db_path) as db:
        assert db.list_tables() == ["customers", "events", "order_totals", "orders"]


def test_describe_table(db_path: Path) -> None:
    with ReadOnlyDatabase(db_path) as db:
        text = db.describe_table("orders")
    lines = text.splitlines()
    assert lines[0] == "table orders — 3 rows"
    assert "  id INTEGER PRIMARY KEY" in lines
    assert "  customer_id INTEGER NOT NULL" in lines
    assert "  total REAL DEFAULT 0" in lines
    assert "  customer_id -> customers(id) ON DELETE CASCADE" in lines
    assert "  idx_orders_customer on (customer_id)" in lines


def test_describe_view_and_case_insensitive_name(db_path: Path) -> None:
    with ReadOnlyDatabase(db_path) as db:
        view = db.describe_table("order_totals")
        assert view.startswith("view order_totals — 2 rows")
        assert "definition: CREATE VIEW order_totals AS SELECT" in view
        assert db.describe_table("CUSTOMERS").startswith("table customers — 3 rows")
        assert "UNIQUE" in db.describe_table("customers")


@pytest.mark.parametrize("name", ["nope", 'orders"; DROP TABLE orders; --', "", "sqlite_master"])
def test_describe_unknown_table(db_path: Path, name: str) -> None:
    before = sha256(db_path)
    with ReadOnlyDatabase(db_path) as db:
        with pytest.raises(QueryError) as info:
            db.describe_table(name)
        assert "customers" in info.value.message or "needs a table name" in info.value.message
        reply = call_tool(db, "describe_table", {"name": name})
        assert reply.startswith("error: ")
    assert sha256(db_path) == before


def test_describe_table_with_awkward_name(tmp_path: Path) -> None:
    path = tmp_path / "odd.db"
    conn = sqlite3.connect(path)
    conn.execute('CREATE TABLE "we""ird name" ("a b" TEXT, c INT, PRIMARY KEY (c, "a b"))')
    conn.execute("INSERT INTO \"we\"\"ird name\" VALUES ('x', 1), ('y', 2)")
    conn.commit()
    conn.close()
    with ReadOnlyDatabase(path) as db:
        text = db.describe_table('we"ird name')
        assert text.startswith('table we"ird name — 2 rows')
        assert "  a b TEXT PRIMARY KEY part 2" in text
        assert "  c INT PRIMARY KEY part 1" in text
        assert db.schema_summary() == 'we"ird name(a b TEXT PK, c INT PK) — 2 rows'


def test_schema_summary(db_path: Path) -> None:
    with ReadOnlyDatabase(db_path) as db:
        summary = db.schema_summary()
    assert summary.splitlines() == [
        "customers(id INTEGER PK, name TEXT, email TEXT) — 3 rows",
        "order_totals(name TEXT, spent) — view",
        "orders(id INTEGER PK, customer_id INTEGER -> customers, total REAL, note TEXT) — 3 rows",
    ]


def test_schema_summary_is_capped(tmp_path: Path) -> None:
    path = tmp_path / "many.db"
    conn = sqlite3.connect(path)
    for i in range(200):
        conn.execute(f"CREATE TABLE t{i:03d} (id INTEGER PRIMARY KEY, value TEXT, extra REAL)")
    conn.commit()
    conn.close()
    with ReadOnlyDatabase(path) as db:
        summary = db.schema_summary(max_chars=1000)
    assert len(summary) <= 1000
    assert summary.splitlines()[0] == "t000(id INTEGER PK, value TEXT, extra REAL) — 0 rows"
    assert summary.splitlines()[-1].startswith("… and ")
    assert "more tables" in summary


def test_empty_database(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    sqlite3.connect(path).close()  # a zero-byte file is a valid, empty SQLite database...
    with ReadOnlyDatabase(path) as db:  # ...to SQLite, even though validate_database refuses it
        assert db.list_tables() == []
        assert db.schema_summary() == "(no tables)"
        assert call_tool(db, "list_tables", {}) == "(no tables)"


# --- lifecycle ----------------------------------------------------------------------------


def test_closed_database_raises_query_error(db_path: Path) -> None:
    db = ReadOnlyDatabase(db_path)
    db.close()
    db.close()  # idempotent
    with pytest.raises(QueryError, match="closed"):
        db.run_sql("SELECT 1")
    assert call_tool(db, "list_tables", {}).startswith("error: ")


@pytest.mark.parametrize("content", [None, b"not a database at all, just text" * 50])
def test_opening_a_bad_file_is_invalid_database(tmp_path: Path, content: bytes | None) -> None:
    path = tmp_path / "bad.db"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(InvalidDatabase):
        ReadOnlyDatabase(path)
    assert os.listdir(tmp_path) == ([] if content is None else ["bad.db"])


def test_copy_opens_read_only_without_sidecar_files(tmp_path: Path) -> None:
    src = make_db(tmp_path / "live.db", wal=True)
    keeper = sqlite3.connect(src)  # keeps the source in WAL with a -wal file present
    keeper.execute("INSERT INTO customers VALUES (4, 'Di', NULL)")
    keeper.commit()
    session = tmp_path / "session"
    session.mkdir()
    dest = session / "attached.db"
    try:
        copy_database(src, dest)
    finally:
        keeper.close()
    before = sha256(dest)
    with ReadOnlyDatabase(dest) as db:
        assert db.run_sql("SELECT count(*) FROM customers").rows == [(4,)]
        assert os.listdir(session) == ["attached.db"]
        with pytest.raises(QueryError):
            db.run_sql("DELETE FROM customers")
    assert os.listdir(session) == ["attached.db"]
    assert sha256(dest) == before


# --- tools --------------------------------------------------------------------------------


def test_tool_specs_are_openai_function_tools() -> None:
    assert [spec["function"]["name"] for spec in TOOL_SPECS] == [
        "list_tables",
        "describe_table",
        "run_sql",
    ]
    for spec in TOOL_SPECS:
        assert spec["type"] == "function"
        assert spec["function"]["description"]
        assert spec["function"]["parameters"]["type"] == "object"
    assert TOOL_SPECS[1]["function"]["parameters"]["required"] == ["name"]
    assert TOOL_SPECS[2]["function"]["parameters"]["required"] == ["query"]
    json.dumps(TOOL_SPECS)


def test_call_tool_dispatches(db_path: Path) -> None:
    with ReadOnlyDatabase(db_path) as db:
        assert call_tool(db, "list_tables", {}) == "customers\norder_totals\norders"
        assert call_tool(db, "list_tables", None) == "customers\norder_totals\norders"
        assert call_tool(db, "describe_table", {"name": "orders"}).startswith("table orders")
        assert call_tool(db, "run_sql", {"query": "SELECT id FROM customers ORDER BY id"}) == (
            "id\n1\n2\n3"
        )
        # Raw OpenAI tool calls carry their arguments as a JSON string.
        assert call_tool(db, "run_sql", '{"query": "SELECT 1 AS one"}') == "one\n1"


@pytest.mark.parametrize(
    ("name", "args", "fragment"),
    [
        ("drop_everything", {}, "unknown tool"),
        ("run_sql", {}, "needs a 'query'"),
        ("run_sql", {"query": 42}, "needs a 'query'"),
        ("run_sql", "{not json", "not valid JSON"),
        ("run_sql", "[1, 2]", "must be a JSON object"),
        ("describe_table", {"name": None}, "needs a 'name'"),
        ("run_sql", {"query": "DROP TABLE orders"}, "not allowed"),
        ("run_sql", {"query": "SELECT nope FROM orders"}, "no such column"),
    ],
)
def test_call_tool_turns_failures_into_text(
    db_path: Path, name: str, args: object, fragment: str
) -> None:
    with ReadOnlyDatabase(db_path) as db:
        reply = call_tool(db, name, args)  # type: ignore[arg-type]
    assert reply.startswith("error: ")
    assert fragment in reply


# --- the worker process: limits that the progress handler alone cannot enforce ---------------

# One call of instr() does all its (quadratic) work inside a single VM step, where the progress
# handler never runs: unbounded, this took 25 s on the review machine.
ONE_STEP_HOG = (
    "SELECT instr(replace(hex(zeroblob(1000000)), '0', 'a'), "
    "replace(hex(zeroblob(500000)), '0', 'a') || 'b')"
)
# Sorting an endless stream of 200 KB blobs: SQLite used to spill it into temp files (1.5 GB
# of /tmp in 3 s).
TEMP_HOG = (
    "WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM r) "
    "SELECT randomblob(200000) FROM r ORDER BY random()"
)


def _worker_pid(db: ReadOnlyDatabase) -> int:
    assert db._worker is not None
    return db._worker.proc.pid


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie still answers kill(0); on Linux its state says so.
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "\nState:\tZ" in status.read_text()


def test_a_single_function_call_is_stopped_at_the_time_limit(db_path: Path) -> None:
    with ReadOnlyDatabase(db_path, timeout=1) as db:
        db.run_sql("SELECT 1")  # start the worker first: its start-up is not the query's time
        start = time.monotonic()
        with pytest.raises(QueryError, match=r"^query stopped after 1 s: time limit reached"):
            db.run_sql(ONE_STEP_HOG)
        assert time.monotonic() - start < 1 + 2
        assert db.run_sql("SELECT count(*) FROM customers").rows == [(3,)]
        start = time.monotonic()
        reply = call_tool(db, "run_sql", {"query": ONE_STEP_HOG})
        assert reply.startswith("error: query stopped after 1 s")
        assert time.monotonic() - start < 1 + 2
        assert call_tool(db, "list_tables", {}) == "customers\norder_totals\norders"


def test_interrupt_stops_a_single_function_call(db_path: Path) -> None:
    with ReadOnlyDatabase(db_path, timeout=30) as db:
        db.run_sql("SELECT 1")
        timer = threading.Timer(0.3, db.interrupt)
        timer.start()
        start = time.monotonic()
        with pytest.raises(QueryError, match="^query interrupted$"):
            db.run_sql(ONE_STEP_HOG)
        timer.join()
        assert time.monotonic() - start < 3
        assert db.run_sql("SELECT 2").rows == [(2,)]


def test_ctrl_c_kills_the_worker_and_is_reraised(db_path: Path) -> None:
    with ReadOnlyDatabase(db_path, timeout=30) as db:
        db.run_sql("SELECT 1")
        pid = _worker_pid(db)
        timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
        timer.start()
        start = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            db.run_sql(ONE_STEP_HOG)
        timer.join()
        assert time.monotonic() - start < 3
        assert _gone(pid)
        assert db.run_sql("SELECT count(*) FROM orders").rows == [(3,)]


def test_temp_space_hog_is_stopped_without_writing_files(
    db_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    # Where SQLite would put its temp files; the worker inherits this environment.
    monkeypatch.setenv("SQLITE_TMPDIR", str(scratch))
    monkeypatch.setenv("TMPDIR", str(scratch))
    folders = sorted({"/tmp", str(scratch), tempfile.gettempdir()})
    free_before = {folder: shutil.disk_usage(folder).free for folder in folders}
    lowest = dict(free_before)
    done = threading.Event()

    def watch() -> None:  # SQLite unlinks its temp files at once: only df shows them
        while not done.wait(0.05):
            for folder in folders:
                lowest[folder] = min(lowest[folder], shutil.disk_usage(folder).free)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with ReadOnlyDatabase(db_path, timeout=5) as db:
            start = time.monotonic()
            with pytest.raises(QueryError) as info:
                db.run_sql(TEMP_HOG)
            assert time.monotonic() - start < 5 + 2
            assert info.value.message.startswith("query stopped")
            assert "\n" not in info.value.message
            assert db.run_sql("SELECT count(*) FROM customers").rows == [(3,)]
    finally:
        done.set()
        watcher.join()
    assert os.listdir(scratch) == []
    for folder, before in free_before.items():
        assert before - lowest[folder] < 100 * 10**6, folder


def test_memory_hog_fails_cleanly_and_the_database_still_answers(db_path: Path) -> None:
    with ReadOnlyDatabase(db_path, timeout=20) as db:
        reply = call_tool(
            db,
            "run_sql",
            {
                "query": "WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM r) "
                "SELECT count(DISTINCT randomblob(2000)) FROM r"
            },
        )
        assert reply.startswith("error: query stopped: it needs more than 512 MB of memory")
        assert db.run_sql("SELECT 1").rows == [(1,)]


@pytest.mark.skipif(not Path("/proc/self/limits").exists(), reason="reads /proc (Linux)")
def test_the_worker_may_write_no_file_and_has_bounded_memory(db_path: Path) -> None:
    with ReadOnlyDatabase(db_path) as db:
        db.run_sql("SELECT 1")
        limits = Path(f"/proc/{_worker_pid(db)}/limits").read_text().splitlines()
    size = next(line for line in limits if line.startswith("Max file size"))
    assert size.split()[3:5] == ["0", "0"]
    space = next(line for line in limits if line.startswith("Max address space"))
    assert int(space.split()[3]) <= 2**30


def test_the_worker_starts_at_the_first_call_and_ends_with_close(db_path: Path) -> None:
    db = ReadOnlyDatabase(db_path)
    assert db._worker is None  # opening costs no process
    assert db.list_tables() == ["customers", "order_totals", "orders"]
    pid = _worker_pid(db)
    assert db.run_sql("SELECT 1").rows == [(1,)]
    assert _worker_pid(db) == pid  # one worker serves every call
    db.close()
    assert _gone(pid)


def test_a_worker_killed_from_outside_is_a_query_error_then_replaced(db_path: Path) -> None:
    with ReadOnlyDatabase(db_path, timeout=30) as db:
        db.run_sql("SELECT 1")
        pid = _worker_pid(db)
        timer = threading.Timer(0.3, os.kill, (pid, signal.SIGKILL))
        timer.start()
        with pytest.raises(QueryError, match=r"worker process ended \(killed by SIGKILL\)"):
            db.run_sql(ONE_STEP_HOG)
        timer.join()
        assert db.run_sql("SELECT 3").rows == [(3,)]
        # Killed while idle: the next call simply starts a new worker.
        os.kill(_worker_pid(db), signal.SIGKILL)
        time.sleep(0.1)
        assert db.run_sql("SELECT 4").rows == [(4,)]


def test_values_survive_the_trip_from_the_worker(db_path: Path) -> None:
    with ReadOnlyDatabase(db_path) as db:
        result = db.run_sql(
            "SELECT x'00ff10', 1.5, 0.1, -0.0, 1e999, -1e999, 9223372036854775807, "
            "-9223372036854775808, 'é 中 \U0001f600', NULL, '', x'', 'a\nb'"
        )
    assert result.rows == [
        (
            b"\x00\xff\x10",
            1.5,
            0.1,
            -0.0,
            float("inf"),
            float("-inf"),
            2**63 - 1,
            -(2**63),
            "é 中 \U0001f600",
            None,
            "",
            b"",
            "a\nb",
        )
    ]
    assert [type(v) for v in result.rows[0][:4]] == [bytes, float, float, float]


# --- files that are not databases, and the user's original --------------------------------


def _finishes_quickly(fn, seconds: float = 5.0) -> BaseException | None:
    """Run fn() in a thread; fail if it has not returned within `seconds`; its exception."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            fn()
            outcome.append(None)
        except BaseException as e:
            outcome.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "still blocked"
    return outcome[0]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs mkfifo")
def test_a_fifo_is_refused_at_once(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.db"
    os.mkfifo(fifo)
    try:
        for attempt in (
            lambda: validate_database(fifo),
            lambda: copy_database(fifo, tmp_path / "copy.db"),
            lambda: ReadOnlyDatabase(fifo),
        ):
            error = _finishes_quickly(attempt)
            assert isinstance(error, InvalidDatabase)
            assert "named pipe" in error.message
    finally:
        # Should a reader still be blocked in open(), a writer lets it go.
        with contextlib.suppress(OSError):
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    assert sorted(os.listdir(tmp_path)) == ["pipe.db"]


def test_a_device_is_refused(tmp_path: Path) -> None:
    if not Path("/dev/null").exists():
        pytest.skip("no /dev/null")
    with pytest.raises(InvalidDatabase, match="device"):
        validate_database(Path("/dev/null"))


def test_a_wal_original_gets_no_sidecar_files(tmp_path: Path) -> None:
    original = tmp_path / "theirs"
    original.mkdir()
    src = make_db(original / "wal.db", wal=True)
    assert os.listdir(original) == ["wal.db"]
    before = sha256(src)
    validate_database(src)
    assert os.listdir(original) == ["wal.db"]
    dest = tmp_path / "copy.db"
    copy_database(src, dest)
    assert os.listdir(original) == ["wal.db"]
    # Through a symlink SQLite puts the sidecars next to the target: removed there too.
    link = tmp_path / "link.db"
    link.symlink_to(src)
    validate_database(link)
    copy_database(link, tmp_path / "copy2.db")
    assert os.listdir(original) == ["wal.db"]
    assert sha256(src) == before
    with ReadOnlyDatabase(dest) as db:
        assert db.run_sql("SELECT count(*) FROM customers").rows == [(3,)]
    # The original is still a WAL database that its owner can use as before.
    conn = sqlite3.connect(src)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        conn.execute("INSERT INTO customers VALUES (7, 'Gil', NULL)")
        conn.commit()
        assert conn.execute("SELECT count(*) FROM customers").fetchone()[0] == 4
    finally:
        conn.close()
    assert os.listdir(original) == ["wal.db"]


def test_sidecars_in_use_by_another_program_are_left_alone(tmp_path: Path) -> None:
    src = make_db(tmp_path / "live.db", wal=True)
    script = (
        "import sqlite3, sys, time\n"
        "c = sqlite3.connect(sys.argv[1])\n"
        "c.execute(\"INSERT INTO customers VALUES (5, 'Eve', NULL)\")\n"
        "c.commit()\n"
        "print('ready', flush=True)\n"
        "sys.stdin.readline()\n"
        "c.close()\n"
    )
    # Another process (POSIX locks do not tell this process's own connections apart).
    other = subprocess.Popen(
        [sys.executable, "-c", script, str(src)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert other.stdout is not None and other.stdout.readline().strip() == "ready"
        assert sorted(os.listdir(tmp_path)) == ["live.db", "live.db-shm", "live.db-wal"]
        # Sidecars made before chatcli looked are someone else's: never touched.
        copy_database(src, tmp_path / "copy.db")
        assert sorted(os.listdir(tmp_path)) == [
            "copy.db",
            "live.db",
            "live.db-shm",
            "live.db-wal",
        ]
        assert other.poll() is None
    finally:
        other.communicate("bye\n", timeout=10)
    # Its last close removed them, as SQLite does.
    assert sorted(os.listdir(tmp_path)) == ["copy.db", "live.db"]
    with ReadOnlyDatabase(tmp_path / "copy.db") as db:
        assert db.run_sql("SELECT name FROM customers WHERE id = 5").rows == [("Eve",)]


def test_read_only_database_refuses_a_wal_file(tmp_path: Path) -> None:
    src = make_db(tmp_path / "wal.db", wal=True)
    with pytest.raises(InvalidDatabase, match="WAL mode"):
        ReadOnlyDatabase(src)
    assert os.listdir(tmp_path) == ["wal.db"]


@pytest.mark.skipif(os.name != "posix", reason="POSIX locks")
def test_sidecar_cleanup_never_removes_what_another_program_may_need(tmp_path: Path) -> None:
    from chatcli.sqltools import _remove_unused_sidecars

    src = make_db(tmp_path / "db.db", wal=True)
    wal, shm = f"{src}-wal", f"{src}-shm"
    holder = (
        "import os, sqlite3, sys\n"
        "c = sqlite3.connect(sys.argv[1])\n"
        "c.execute('PRAGMA wal_autocheckpoint=0')\n"
        "c.execute('SELECT count(*) FROM customers').fetchone()\n"
        "print('reading', flush=True)\n"
        "sys.stdin.readline()\n"
        "c.execute(\"INSERT INTO customers VALUES (6, 'Fay', NULL)\")\n"
        "c.commit()\n"
        "os._exit(0)  # no close: the committed row stays in the -wal only\n"
    )
    other = subprocess.Popen(
        [sys.executable, "-c", holder, str(src)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert other.stdout is not None and other.stdout.readline().strip() == "reading"
        assert os.path.getsize(wal) == 0
        # Open in another process, even with an empty -wal: its lock on the -shm keeps both.
        _remove_unused_sidecars([wal, shm], wal=wal, shm=shm)
        assert os.path.exists(wal) and os.path.exists(shm)
    finally:
        other.communicate("write\n", timeout=10)
    # Nobody has it open now, but the -wal holds a committed row: it must stay.
    assert os.path.getsize(wal) > 0
    _remove_unused_sidecars([wal, shm], wal=wal, shm=shm)
    assert os.path.exists(wal)
    conn = sqlite3.connect(src)
    try:
        assert conn.execute("SELECT name FROM customers WHERE id = 6").fetchone() == ("Fay",)
    finally:
        conn.close()
