"""Attaching data files end to end: the installed chatcli (attach-db, new --db, /attach), real
CSV/JSON/Parquet files, and the loopback model server scripted to query them."""

from __future__ import annotations

import io
import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from conftest import CHATCLI, assert_clean_error, digest, only_session, tree_digest
from fake_openai import FakeOpenAI
from rich.console import Console

SALES = "region,amount\nnorth,10\nsouth,2.5\nnorth,\n"
ITEMS = [{"sku": "a1", "qty": 3}, {"sku": "b2", "qty": None}]


def _tool_results(request: dict) -> list[str]:
    return [m["content"] for m in request["messages"] if m["role"] == "tool"]


def _tables(db: Path) -> dict[str, list[tuple]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        names = [r[0] for r in conn.execute("SELECT name FROM sqlite_schema WHERE type='table'")]
        return {n: conn.execute(f'SELECT * FROM "{n}"').fetchall() for n in sorted(names)}
    finally:
        conn.close()


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    sales = tmp_path / "sales.csv"
    sales.write_text(SALES)
    items = tmp_path / "items.json"
    items.write_text(json.dumps(ITEMS))
    return {"sales": sales, "items": items}


def _session(chatcli) -> None:
    made = chatcli("new", input="hi\n")  # a session with a message: kept
    assert made.returncode == 0, made.stderr


def test_csv_and_json_via_new_db_are_tables_the_model_queries(
    root: Path, server: FakeOpenAI, chatcli, files: dict[str, Path]
) -> None:
    query = "SELECT region, sum(amount) AS total FROM sales GROUP BY region ORDER BY region"
    server.tool_calls([("run_sql", {"query": query})])
    server.reply("north leads")
    result = chatcli(
        "new", "--db", str(files["sales"]), "--db", str(files["items"]), input="who sells most?\n"
    )
    assert result.returncode == 0, result.stderr
    first, second = server.requests
    system = first["messages"][0]["content"]
    assert "attached a SQLite database" in system
    assert "sales(region TEXT, amount REAL) — 3 rows" in system
    assert "items(sku TEXT, qty INTEGER) — 2 rows" in system
    assert _tool_results(second) == ["region | total\nnorth | 10.0\nsouth | 2.5"]
    assert _tables(root / "db" / f"{only_session(root)}.db")["items"] == [("a1", 3), ("b2", None)]


def test_parquet_via_attach_db_is_queried_on_resume(
    root: Path, tmp_path: Path, server: FakeOpenAI, chatcli
) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    path = tmp_path / "trips.parquet"
    pq.write_table(pa.table({"city": ["Oslo", "Rome", None], "km": [12, 30, 7]}), path)
    assert chatcli("new", input="hi\n").returncode == 0
    sid = only_session(root)
    attached = chatcli("attach-db", sid[:8], str(path))
    assert attached.returncode == 0, attached.stderr
    assert f"attached {path} as table trips (3 rows) to session {sid}" in attached.stdout
    server.tool_calls([("run_sql", {"query": "SELECT sum(km) FROM trips"})])
    server.reply("49 km")
    result = chatcli("resume", sid, input="how far?\n")
    assert result.returncode == 0, result.stderr
    assert _tool_results(server.requests[-1]) == ["sum(km)\n49"]


def test_a_table_that_exists_is_refused_without_replace(
    root: Path, chatcli, files: dict[str, Path]
) -> None:
    _session(chatcli)
    sid = only_session(root)
    assert chatcli("attach-db", sid, str(files["sales"])).returncode == 0
    before = tree_digest(root)
    files["sales"].write_text("region,amount\neast,1\n")
    result = chatcli("attach-db", sid, str(files["sales"]))
    assert result.returncode != 0
    assert_clean_error(result.stderr)
    assert "already has a table sales" in result.stderr and "--replace" in result.stderr
    assert tree_digest(root) == before


def test_replace_swaps_the_table_and_keeps_the_old_copy(
    root: Path, chatcli, files: dict[str, Path]
) -> None:
    _session(chatcli)
    sid = only_session(root)
    assert chatcli("attach-db", sid, str(files["sales"]), str(files["items"])).returncode == 0
    files["sales"].write_text("region,amount\neast,1\n")
    result = chatcli("attach-db", "--replace", sid, str(files["sales"]))
    assert result.returncode == 0, result.stderr
    tables = _tables(root / "db" / f"{sid}.db")
    assert tables["sales"] == [("east", 1)]
    assert tables["items"] == [("a1", 3), ("b2", None)]  # the other table stays
    [kept] = (root / "trash" / "replaced").iterdir()
    assert _tables(kept)["sales"][0] == ("north", 10.0)
    assert "kept" in result.stderr


def test_a_bad_line_names_the_file_and_the_line_and_changes_nothing(
    root: Path, tmp_path: Path, chatcli, files: dict[str, Path]
) -> None:
    _session(chatcli)
    sid = only_session(root)
    assert chatcli("attach-db", sid, str(files["items"])).returncode == 0
    before = digest(root / "db" / f"{sid}.db")
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n3,4,5\n")
    result = chatcli("attach-db", sid, str(files["sales"]), str(bad))
    assert result.returncode != 0
    assert_clean_error(result.stderr)
    assert "line 3" in result.stderr and str(bad) in result.stderr
    assert digest(root / "db" / f"{sid}.db") == before  # sales.csv, good, did not go in either


def test_a_file_in_the_repl_is_attached_with_slash_attach(
    root: Path, server: FakeOpenAI, chatcli, files: dict[str, Path]
) -> None:
    result = chatcli("new", input=f"/attach {files['sales']}\n/sql SELECT count(*) FROM sales\n")
    assert result.returncode == 0, result.stderr
    assert f"attached {files['sales']} as table sales (3 rows)" in result.stderr
    assert result.stdout.splitlines() == ["count(*)", "--------", "       3"]


def test_slash_attach_refuses_a_clash_when_piped_and_says_so(
    root: Path, chatcli, files: dict[str, Path]
) -> None:
    result = chatcli(
        "new",
        input=f"/attach {files['sales']}\n/attach {files['sales']}\n"
        f"/attach --replace {files['sales']}\n",
    )
    assert result.returncode == 1  # the second /attach failed; the chat went on
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("chatcli: error:")]
    assert len(errors) == 1 and "already has a table sales" in errors[0]
    assert "replacing the old one" in result.stderr


def test_the_repl_sees_tables_attached_by_another_process(
    root: Path, tmp_path: Path, server: FakeOpenAI, env: dict[str, str], files: dict[str, Path]
) -> None:
    """A running chat's worker has the old copy open; after attach-db replaces the file the chat
    must query the new one (it reopens it), not keep seeing the old tables."""
    proc = subprocess.Popen(
        [CHATCLI, "new", "--db", str(files["items"])],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write("/sql SELECT count(*) FROM items\n")
    proc.stdin.flush()
    assert [proc.stdout.readline() for _ in range(3)][2].strip() == "2"
    sid = only_session(root)
    attached = subprocess.run(
        [CHATCLI, "attach-db", sid, str(files["sales"])], env=env, capture_output=True, text=True
    )
    assert attached.returncode == 0, attached.stderr
    out, err = proc.communicate("/sql SELECT count(*) FROM sales\n", timeout=60)
    assert proc.returncode == 0, err
    assert out.splitlines()[-1].strip() == "3"


def _big_csv(path: Path, rows: int) -> Path:
    with open(path, "w") as f:
        f.write("id,name,score\n")
        f.writelines(f"{i},name {i},{i * 0.5}\n" for i in range(rows))
    return path


def test_ctrl_c_during_an_import_leaves_the_database_as_it_was(
    root: Path, tmp_path: Path, env: dict[str, str], chatcli, files: dict[str, Path]
) -> None:
    _session(chatcli)
    sid = only_session(root)
    assert chatcli("attach-db", sid, str(files["sales"])).returncode == 0
    db = root / "db" / f"{sid}.db"
    before = digest(db)
    big = _big_csv(tmp_path / "big.csv", 2_000_000)
    proc = subprocess.Popen(
        [CHATCLI, "attach-db", sid, str(big)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # a default SIGINT, as a foreground job in a shell has (Popen children inherit "ignore"
        # from a backgrounded pytest)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 30
    while not any(p.name.endswith(".import.tmp") for p in db.parent.iterdir()):
        assert proc.poll() is None and time.monotonic() < deadline, "the import never started"
        time.sleep(0.02)
    time.sleep(0.3)  # well into the rows
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert digest(db) == before
    assert sorted(p.name for p in db.parent.iterdir()) == [db.name]  # no staged copy left


def test_the_progress_bar_shows_on_a_terminal_after_the_delay_only() -> None:
    from chatcli.render import ImportProgress

    terminal = Console(file=io.StringIO(), force_terminal=True, width=80)
    with ImportProgress(terminal, "importing big.csv", delay=0.05) as bar:
        bar(10, 100)  # before the delay: nothing yet
        assert terminal.file.getvalue() == ""
        time.sleep(0.06)
        bar(60, 100)
    assert "importing big.csv" in terminal.file.getvalue()
    piped = Console(file=io.StringIO(), force_terminal=False)
    with ImportProgress(piped, "importing big.csv", delay=0) as bar:
        bar(60, 100)
    assert piped.file.getvalue() == ""


def test_two_sqlite_files_and_a_url_among_files_are_refused(
    root: Path, tmp_path: Path, chatcli, files: dict[str, Path]
) -> None:
    from conftest import make_db

    one, two = make_db(tmp_path / "one.db"), make_db(tmp_path / "two.db")
    for sources in ([str(one), str(two)], [str(files["sales"]), "postgresql://u@h/db"]):
        result = chatcli("new", *[a for s in sources for a in ("--db", s)], input="hi\n")
        assert result.returncode != 0
        assert_clean_error(result.stderr)
        assert not (root / "memory").exists() or not os.listdir(root / "memory")


@pytest.mark.slow  # seconds of waiting: the full run (CI) has it
def test_on_a_terminal_a_long_import_shows_a_progress_bar(
    root: Path, tmp_path: Path, env: dict[str, str], chatcli
) -> None:
    pexpect = pytest.importorskip("pexpect")
    _session(chatcli)
    sid = only_session(root)
    big = _big_csv(tmp_path / "big.csv", 1_500_000)  # ~2-4 s here: past the 1 s delay
    child = pexpect.spawn(
        CHATCLI, ["attach-db", sid, str(big)], env=env, dimensions=(24, 120), encoding="utf-8",
        timeout=120,
    )  # fmt: skip
    child.expect("importing big.csv")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, child.before
    assert "attached" in child.before and "1,500,000 rows" in child.before


@pytest.mark.parametrize("answer", ["n", "y"])
def test_on_a_terminal_a_clash_is_asked_about(
    root: Path, env: dict[str, str], chatcli, files: dict[str, Path], answer: str
) -> None:
    pexpect = pytest.importorskip("pexpect")
    _session(chatcli)
    sid = only_session(root)
    assert chatcli("attach-db", sid, str(files["sales"])).returncode == 0
    before = tree_digest(root)
    files["sales"].write_text("region,amount\neast,1\n")
    child = pexpect.spawn(
        CHATCLI, ["attach-db", sid, str(files["sales"])], env=env, encoding="utf-8", timeout=30
    )
    child.expect("already has a table sales. Replace")
    child.sendline(answer)
    child.expect(pexpect.EOF)
    child.close()
    if answer == "n":
        assert child.exitstatus != 0
        assert tree_digest(root) == before
    else:
        assert child.exitstatus == 0, child.before
        assert _tables(root / "db" / f"{sid}.db")["sales"] == [("east", 1)]
