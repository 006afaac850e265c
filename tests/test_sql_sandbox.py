"""Tests for chatcli.sql.sandbox through ReadOnlyDatabase: every kind of write refused,
reads capped and time-limited; real SQLite files in tmp_path."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from conftest import digest, make_shop_db, sqlite_dump
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatcli.errors import QueryError
from chatcli.sql import (
    QueryResult,
    ReadOnlyDatabase,
    call_tool,
)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return make_shop_db(tmp_path / "shop.db")


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
    before = digest(db_path)
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
    assert digest(db_path) == before
    assert os.listdir(tmp_path) == ["shop.db"]
    assert sqlite_dump(db_path) == sqlite_dump(
        make_shop_db(tmp_path.parent / f"{tmp_path.name}-ref.db")
    )


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
