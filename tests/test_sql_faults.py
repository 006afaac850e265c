"""Databases that are not plain tables, through the installed chatcli: R*Tree virtual tables
(GeoPackage, SpatiaLite) can be read and never written, one unreadable table does not hide the
others, and a value over chatcli's own size limit says whose limit it is."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from conftest import digest, only_session
from fake_openai import FakeOpenAI


def make_rtree_db(path: Path, *, broken_table: bool = False) -> Path:
    """plain(x) with one row, boxes: an R*Tree with two boxes, after(y); optionally a virtual
    table whose module no SQLite has (another tool's extension), named before the others."""
    conn = sqlite3.connect(path)
    conn.executescript(
        "CREATE TABLE plain (x); INSERT INTO plain VALUES (1);"
        "CREATE VIRTUAL TABLE boxes USING rtree(id, minx, maxx);"
        "INSERT INTO boxes VALUES (1, 0, 5), (2, 10, 20);"
        "CREATE TABLE after (y); INSERT INTO after VALUES (2);"
    )
    if broken_table:
        conn.execute("PRAGMA writable_schema=ON")
        conn.execute(
            "INSERT INTO sqlite_master VALUES ('table', 'aaa_ext', 'aaa_ext', 0,"
            " 'CREATE VIRTUAL TABLE aaa_ext USING no_such_module(a)')"
        )
    conn.commit()
    conn.close()
    return path


def test_an_rtree_table_can_be_queried(chatcli, tmp_path: Path) -> None:
    db = make_rtree_db(tmp_path / "geo.db")
    result = chatcli("new", "--db", str(db), input="/sql SELECT id FROM boxes WHERE minx >= 10\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-1] == "2"


def test_the_model_sees_the_rtree_columns_in_the_schema(
    chatcli, tmp_path: Path, server: FakeOpenAI
) -> None:
    db = make_rtree_db(tmp_path / "geo.db")
    result = chatcli("new", "--db", str(db), input="what is there?\n")
    assert result.returncode == 0, result.stderr
    system = server.requests[0]["messages"][0]["content"]
    assert "boxes(id INT, minx REAL, maxx REAL) — 2 rows" in system


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO boxes VALUES (3, 1, 2)",
        "UPDATE boxes SET minx = 1",
        "DELETE FROM boxes",
        "INSERT INTO boxes_node VALUES (9, x'00')",
        "DELETE FROM boxes_rowid",
        "UPDATE boxes_parent SET parentnode = 1",
    ],
)
def test_an_rtree_table_cannot_be_written(
    chatcli, root: Path, tmp_path: Path, statement: str
) -> None:
    db = make_rtree_db(tmp_path / "geo.db")
    result = chatcli("new", "--db", str(db), input="/sql SELECT 1\n")
    copy = root / "db" / f"{only_session(root)}.db"
    before = digest(copy)
    result = chatcli("resume", "--last", input=f"/sql {statement}\n")
    assert result.returncode == 1
    assert "not allowed: this database is read-only" in result.stderr
    assert digest(copy) == before
    assert {p.name for p in copy.parent.iterdir()} == {copy.name}  # no journal, no WAL


def test_schema_shows_every_table_when_one_cannot_be_read(chatcli, tmp_path: Path) -> None:
    db = make_rtree_db(tmp_path / "ext.db", broken_table=True)
    result = chatcli("new", "--db", str(db), input="/schema\n")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "aaa_ext" in out and "no such module: no_such_module" in out
    for table in ("plain", "boxes", "after"):
        assert f"table {table} — " in out


def test_the_schema_summary_names_the_unreadable_table_and_lists_the_rest(
    chatcli, tmp_path: Path, server: FakeOpenAI
) -> None:
    db = make_rtree_db(tmp_path / "ext.db", broken_table=True)
    assert chatcli("new", "--db", str(db), input="hi\n").returncode == 0
    system = server.requests[0]["messages"][0]["content"]
    assert "aaa_ext(?) — table that cannot be read: no such module: no_such_module" in system
    assert "plain(x) — 1 rows" in system and "after(y) — 1 rows" in system


def make_big_value_db(path: Path) -> Path:
    """b(v): one blob of 70 MB, written by another tool (over chatcli's 64 MB limit)."""
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE b (v)")
    conn.execute("INSERT INTO b VALUES (zeroblob(70 * 1024 * 1024))")
    conn.commit()
    conn.close()
    return path


@pytest.mark.parametrize("query", ["SELECT zeroblob(100000000)", "SELECT v FROM b"])
def test_a_value_over_chatclis_own_limit_says_whose_limit_it_is(
    chatcli, tmp_path: Path, query: str
) -> None:
    db = make_big_value_db(tmp_path / "big.db")
    result = chatcli("new", "--db", str(db), input=f"/sql {query}\n/sql SELECT length(v) FROM b\n")
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert "chatcli's limit of 64 MB" in line and "MAX_VALUE_BYTES" in line
    assert "string or blob too big" not in line
    assert str(70 * 1024 * 1024) in result.stdout  # the next query still runs
