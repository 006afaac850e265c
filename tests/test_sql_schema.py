"""Tests for chatcli.sql.schema: listing, describing and summarizing tables."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from conftest import digest, make_shop_db

from chatcli.errors import QueryError
from chatcli.sql import (
    ReadOnlyDatabase,
    call_tool,
)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return make_shop_db(tmp_path / "shop.db")


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
    before = digest(db_path)
    with ReadOnlyDatabase(db_path) as db:
        with pytest.raises(QueryError) as info:
            db.describe_table(name)
        assert "customers" in info.value.message or "needs a table name" in info.value.message
        reply = call_tool(db, "describe_table", {"name": name})
        assert reply.startswith("error: ")
    assert digest(db_path) == before


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


def test_schema_summary_is_read_once_per_open_database(db_path: Path) -> None:
    with ReadOnlyDatabase(db_path) as db:
        first = db.schema_summary()
        assert db._worker is not None
        worker = db._worker.proc
        worker.kill()  # a call that reached the worker now would have to start another
        worker.wait(timeout=10)
        assert db.schema_summary() == first
        assert db._worker is not None and db._worker.proc is worker
        assert db.schema_summary(max_chars=1000) == first  # another size is read again
        assert db._worker.proc is not worker
