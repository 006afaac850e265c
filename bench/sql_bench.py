"""The row cap must make `SELECT *` on a 1,000,000-row table cost about as much as on a tiny one.

Every statement runs in ReadOnlyDatabase's worker process; the bench also times the same
statement in-process (the sandbox without the worker, as chatcli did before) to show what the
process boundary costs per query, and what starting the worker costs once per session.

Run: .venv/bin/python bench/sql_bench.py   (builds bench/.data/sql-big.db once, ~60 MB)
"""

from __future__ import annotations

import sqlite3
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import tempfile  # noqa: E402

from chatcli.sql import (  # noqa: E402
    ReadOnlyDatabase,
    call_tool,
    copy_database,
    validate_database,
)
from chatcli.sql.sandbox import Sandbox  # noqa: E402

DATA = Path(__file__).resolve().parent / ".data"
DB = DATA / "sql-big.db"
BIG_ROWS = 1_000_000
TINY_ROWS = 250  # just over the 200-row cap, so both runs take the same capped path


def build() -> Path:
    """Create the benchmark database once; a finished build is marked by user_version=1."""
    if DB.exists():
        conn = sqlite3.connect(DB)
        try:
            if conn.execute("PRAGMA user_version").fetchone()[0] == 1:
                return DB
        finally:
            conn.close()
        DB.unlink()
    DATA.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    conn = sqlite3.connect(DB)
    rows = (
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {count}) "
        "SELECT i, 'customer ' || i, (i * 7919) % 100000 / 100.0, "
        "date('2020-01-01', '+' || (i % 1500) || ' days') FROM n"
    )
    for name, count in (("big", BIG_ROWS), ("tiny", TINY_ROWS)):
        conn.execute(
            f"CREATE TABLE {name} (id INTEGER PRIMARY KEY, name TEXT, amount REAL, day TEXT)"
        )
        conn.execute(f"INSERT INTO {name} {rows.format(count=count)}")
    conn.execute("PRAGMA user_version=1")
    conn.commit()
    conn.close()
    print(f"built {DB} ({DB.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - start:.1f} s")
    return DB


def timed(fn: Callable[[], object], runs: int = 51) -> float:
    """Median seconds per call, after a few warm-up calls."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    path = build()
    with ReadOnlyDatabase(path) as db:
        capped = db.run_sql("SELECT * FROM big")
        assert len(capped.rows) == 200 and capped.truncated, capped.note

        big = timed(lambda: db.run_sql("SELECT * FROM big"))
        limit = timed(lambda: db.run_sql("SELECT * FROM big LIMIT 200"))
        tiny = timed(lambda: db.run_sql("SELECT * FROM tiny"))
        tool = timed(lambda: call_tool(db, "run_sql", {"query": "SELECT * FROM big"}))
        one = timed(lambda: db.run_sql("SELECT 1"))

    sandbox = Sandbox(path)  # the same sandbox, in this process: no worker, no pipe
    try:
        assert sandbox.run_sql("SELECT * FROM big").rows == capped.rows
        inproc_big = timed(lambda: sandbox.run_sql("SELECT * FROM big"))
        inproc_limit = timed(lambda: sandbox.run_sql("SELECT * FROM big LIMIT 200"))
        inproc_one = timed(lambda: sandbox.run_sql("SELECT 1"))
    finally:
        sandbox.close()

    def first_query() -> None:
        with ReadOnlyDatabase(path) as db:
            db.run_sql("SELECT 1")

    conn = sqlite3.connect(path)
    fetchall = timed(lambda: conn.execute("SELECT * FROM big").fetchall(), runs=3)
    conn.close()

    def line(label: str, seconds: float, base: float | None = None) -> None:
        ratio = f"{seconds / base:7.2f}x" if base else ""
        print(f"{label:<66} {seconds * 1000:9.3f} ms {ratio}")

    print(f"median of 51 runs; {BIG_ROWS:,}-row table `big`, {TINY_ROWS}-row table `tiny`")
    line("run_sql('SELECT * FROM big LIMIT 200')  [baseline]", limit)
    line("run_sql('SELECT * FROM big')  (200-row cap)", big, limit)
    line("run_sql('SELECT * FROM tiny')  (200-row cap)", tiny, limit)
    line("call_tool run_sql 'SELECT * FROM big' (+ to_text)", tool, limit)
    line("for contrast: plain fetchall() of all of big", fetchall, limit)
    print(f"cap vs tiny table: {big / tiny:.2f}x  (should be ~1x: only the cap is fetched)")

    print("\nwhat the worker process costs (same statements in-process, as before the worker)")
    line("in-process run_sql('SELECT * FROM big LIMIT 200')", inproc_limit)
    line("in-process run_sql('SELECT * FROM big')  (200-row cap)", inproc_big)
    line("in-process run_sql('SELECT 1')", inproc_one)
    extra = [(limit - inproc_limit) * 1000, (big - inproc_big) * 1000, (one - inproc_one) * 1000]
    print(
        f"per-query overhead of the worker: {extra[0]:.3f} ms (LIMIT 200), "
        f"{extra[1]:.3f} ms (capped), {extra[2]:.3f} ms (SELECT 1)"
    )
    line("once per session: open + first query (starts worker) + close", timed(first_query, 11))

    # One-off costs of attaching this 1,000,000-row database to a session.
    print(f"\nattaching the {path.stat().st_size / 1e6:.0f} MB database (median of 5 runs)")
    line("validate_database (header + quick_check)", timed(lambda: validate_database(path), 5))
    with tempfile.TemporaryDirectory(dir=DATA) as tmp:
        dest = Path(tmp) / "copy.db"
        line(
            "copy_database (validate + backup + fsync)", timed(lambda: copy_database(path, dest), 5)
        )
    opening = timed(lambda: ReadOnlyDatabase(path).close(), 5)
    line("ReadOnlyDatabase open + close (no worker yet)", opening)

    def first_summary() -> None:
        with ReadOnlyDatabase(path) as db:
            db.schema_summary()

    line(
        "schema_summary, once an attach (worker start + count 1,000,250 rows)",
        timed(first_summary, 5),
    )
    with ReadOnlyDatabase(path) as db:
        db.schema_summary()
        line("schema_summary, every later turn (kept from the first)", timed(db.schema_summary, 5))


if __name__ == "__main__":
    main()
