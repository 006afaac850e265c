"""Tests for chatcli.sql.worker and ReadOnlyDatabase's lifecycle: the worker process enforces
what the progress handler cannot, and dies with its call."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path

import pytest
from conftest import make_shop_db

from chatcli.errors import QueryError
from chatcli.sql import (
    ReadOnlyDatabase,
    call_tool,
)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return make_shop_db(tmp_path / "shop.db")


# --- lifecycle ----------------------------------------------------------------------------


def test_closed_database_raises_query_error(db_path: Path) -> None:
    db = ReadOnlyDatabase(db_path)
    db.close()
    db.close()  # idempotent
    with pytest.raises(QueryError, match="closed"):
        db.run_sql("SELECT 1")
    assert call_tool(db, "list_tables", {}).startswith("error: ")


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
    # A background job starts with SIGINT ignored, and Python then installs no handler:
    # install the usual one, so the signal below is a Ctrl-C wherever the tests run.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        _ctrl_c_during_a_query(db_path)
    finally:
        signal.signal(signal.SIGINT, previous)


def _ctrl_c_during_a_query(db_path: Path) -> None:
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
