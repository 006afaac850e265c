"""Tests for chatcli.sqltools against real SQLite files in tmp_path."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import stat
from pathlib import Path

import pytest

from chatcli.errors import InvalidDatabase, StorageError
from chatcli.sqltools import copy_database, validate_database

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
