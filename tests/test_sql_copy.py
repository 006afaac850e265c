"""Tests for chatcli.sql.copy: validating and copying the user's SQLite file, never
changing it nor leaving files next to it; real files in tmp_path."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from conftest import digest, make_shop_db, sqlite_dump

from chatcli.errors import InvalidDatabase, QueryError, StorageError
from chatcli.sql import (
    ReadOnlyDatabase,
    copy_database,
    validate_database,
)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return make_shop_db(tmp_path / "shop.db")


# --- validate_database --------------------------------------------------------------------


def test_validate_accepts_a_valid_database(db_path: Path) -> None:
    before = digest(db_path)
    validate_database(db_path)
    assert digest(db_path) == before
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
    validate_database(make_shop_db(folder / "a b?.db"))


# --- copy_database ------------------------------------------------------------------------


def test_copy_makes_identical_private_copy(db_path: Path, tmp_path: Path) -> None:
    before = digest(db_path)
    dest = tmp_path / "copy.db"
    copy_database(db_path, dest)
    assert digest(db_path) == before
    assert sqlite_dump(dest) == sqlite_dump(db_path)
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
    dest = make_shop_db(tmp_path / "dest.db")
    before = digest(dest)
    files_before = sorted(os.listdir(tmp_path))
    with pytest.raises(InvalidDatabase):
        copy_database(src, dest)
    assert digest(dest) == before
    assert sorted(os.listdir(tmp_path)) == files_before


def test_copy_replaces_existing_dest(db_path: Path, tmp_path: Path) -> None:
    dest = tmp_path / "dest.db"
    dest.write_text("old content")
    copy_database(db_path, dest)
    assert sqlite_dump(dest) == sqlite_dump(db_path)


def test_copy_into_missing_folder_is_a_storage_error(db_path: Path, tmp_path: Path) -> None:
    with pytest.raises(StorageError):
        copy_database(db_path, tmp_path / "nope" / "copy.db")


def test_copy_onto_itself_is_refused(db_path: Path) -> None:
    before = digest(db_path)
    with pytest.raises(StorageError):
        copy_database(db_path, db_path)
    assert digest(db_path) == before


def test_copy_while_wal_source_has_open_write_transaction(tmp_path: Path) -> None:
    src = make_shop_db(tmp_path / "live.db", wal=True)
    writer = sqlite3.connect(src, isolation_level=None)
    try:
        writer.execute("PRAGMA journal_mode=WAL")
        writer.execute("INSERT INTO customers VALUES (10, 'committed', NULL)")  # lives in -wal
        writer.execute("BEGIN IMMEDIATE")
        writer.execute("INSERT INTO customers VALUES (11, 'uncommitted', NULL)")
        before = digest(src)
        dest = tmp_path / "sub" / "copy.db"
        dest.parent.mkdir()
        copy_database(src, dest, timeout=5)
        assert digest(src) == before
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
    src = make_shop_db(tmp_path / "locked.db")
    dest = make_shop_db(tmp_path / "dest.db")
    before = digest(dest)
    holder = sqlite3.connect(src, isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")  # rollback-journal mode: blocks every reader
        with pytest.raises(InvalidDatabase, match="locked"):
            copy_database(src, dest, timeout=0.3)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert digest(dest) == before
    assert sorted(os.listdir(tmp_path)) == ["dest.db", "locked.db"]


def test_copy_backup_gives_up_when_lock_appears_after_validation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import chatcli.sql.copy as sql_copy

    src = make_shop_db(tmp_path / "locked.db")
    holder = sqlite3.connect(src, isolation_level=None)
    # Simulate a writer that grabs the lock between validation and the backup itself.
    monkeypatch.setattr(
        sql_copy, "validate_database", lambda path, **kw: holder.execute("BEGIN EXCLUSIVE")
    )
    try:
        with pytest.raises(InvalidDatabase, match="stayed locked"):
            copy_database(src, tmp_path / "dest.db", timeout=0.3)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert sorted(os.listdir(tmp_path)) == ["locked.db"]


@pytest.mark.parametrize("content", [None, b"not a database at all, just text" * 50])
def test_opening_a_bad_file_is_invalid_database(tmp_path: Path, content: bytes | None) -> None:
    path = tmp_path / "bad.db"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(InvalidDatabase):
        ReadOnlyDatabase(path)
    assert os.listdir(tmp_path) == ([] if content is None else ["bad.db"])


def test_copy_opens_read_only_without_sidecar_files(tmp_path: Path) -> None:
    src = make_shop_db(tmp_path / "live.db", wal=True)
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
    before = digest(dest)
    with ReadOnlyDatabase(dest) as db:
        assert db.run_sql("SELECT count(*) FROM customers").rows == [(4,)]
        assert os.listdir(session) == ["attached.db"]
        with pytest.raises(QueryError):
            db.run_sql("DELETE FROM customers")
    assert os.listdir(session) == ["attached.db"]
    assert digest(dest) == before


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
    src = make_shop_db(original / "wal.db", wal=True)
    assert os.listdir(original) == ["wal.db"]
    before = digest(src)
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
    assert digest(src) == before
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
    src = make_shop_db(tmp_path / "live.db", wal=True)
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
    src = make_shop_db(tmp_path / "wal.db", wal=True)
    with pytest.raises(InvalidDatabase, match="WAL mode"):
        ReadOnlyDatabase(src)
    assert os.listdir(tmp_path) == ["wal.db"]


@pytest.mark.skipif(os.name != "posix", reason="POSIX locks")
def test_sidecar_cleanup_never_removes_what_another_program_may_need(tmp_path: Path) -> None:
    from chatcli.sql.copy import _remove_unused_sidecars

    src = make_shop_db(tmp_path / "db.db", wal=True)
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
