"""Importing a 1,000,000-row CSV must take at most 2x `sqlite3`'s own `.import --csv`.

Both run as fresh processes on the same file into a new database (so Python's start-up counts
against chatcli), alternating, median of a few runs each. sqlite3 makes every column TEXT and
checks nothing; chatcli also detects the types, turns empty cells into NULL and replaces the
database atomically.

Run: .venv/bin/python bench/import_bench.py [--rows N] [--runs N]
     (needs the sqlite3 command: apt-get install -y sqlite3; writes bench/.data/import-*.csv)
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

DATA = Path(__file__).resolve().parent / ".data"
REPO = Path(__file__).resolve().parent.parent
CITIES = ["Berlin", "Lyon", "São Paulo", "Osaka", "Nairobi", "Toronto", "Kraków", "Austin"]


def build(rows: int) -> Path:
    """A CSV of `rows` rows and 5 columns (int, text, real, int with gaps, quoted text)."""
    path = DATA / f"import-{rows}.csv"
    if path.exists():
        return path
    DATA.mkdir(exist_ok=True)
    rng = random.Random(15)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8", newline="") as f:
        f.write("id,city,amount,quantity,note\n")
        for i in range(1, rows + 1):
            quantity = "" if i % 17 == 0 else str(rng.randrange(1000))
            note = f'"order {i}, {rng.choice(CITIES)}"'
            f.write(f"{i},{rng.choice(CITIES)},{rng.random() * 1000:.2f},{quantity},{note}\n")
    tmp.replace(path)
    return path


def timed(cmd: list[str], db: Path, env: dict[str, str]) -> float:
    db.unlink(missing_ok=True)
    start = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    sqlite3_cli = shutil.which("sqlite3")
    if not sqlite3_cli:
        sys.exit("bench: the sqlite3 command is missing (apt-get install -y sqlite3)")
    csv_path = build(args.rows)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    db = DATA / "import-bench.db"
    ours = [
        sys.executable,
        "-c",
        "import sys; from chatcli.sql.files import import_file; "
        "r = import_file(sys.argv[1], sys.argv[2], table='t'); print(r.rows, r.columns)",
        str(csv_path),
        str(db),
    ]
    theirs = [sqlite3_cli, str(db), f".import --csv {csv_path} t"]
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "chatcli")], env=env)
    timed(ours, db, env)  # warm the page cache and the bytecode
    sqlite_times, chatcli_times = [], []
    for _ in range(args.runs):
        sqlite_times.append(timed(theirs, db, env))
        chatcli_times.append(timed(ours, db, env))
    size = csv_path.stat().st_size / 1e6
    theirs_s, ours_s = statistics.median(sqlite_times), statistics.median(chatcli_times)
    print(f"{args.rows:,} rows, {size:.0f} MB CSV, median of {args.runs}")
    print(f"  sqlite3 .import --csv : {theirs_s:6.2f} s")
    print(f"  chatcli import_file   : {ours_s:6.2f} s")
    print(f"  ratio                 : {ours_s / theirs_s:6.2f}x  (target <= 2x)")
    db.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
