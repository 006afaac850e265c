"""Talking to your data end to end: the installed chatcli in piped mode, real SQLite files, and the
loopback model server scripted to call the read-only SQL tools."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import CHATCLI, digest, make_db, only_session, read_memory, sqlite_dump
from fake_openai import FakeOpenAI

COUNT = "SELECT count(*) FROM t"
FOREVER = "WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r) SELECT max(i) FROM r"


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


def _tool_messages(request: dict[str, Any]) -> list[dict[str, Any]]:
    return [m for m in request["messages"] if m["role"] == "tool"]


def _assert_valid_replay(messages: list[dict[str, Any]]) -> None:
    """What the API demands: after the system prompt a user message; every tool message right
    after the assistant message that called it (or its sibling results); every call answered."""
    body = [m for m in messages if m["role"] != "system"]
    assert body and body[0]["role"] == "user", [m["role"] for m in messages]
    pending: list[str] = []
    for m in body:
        if m["role"] == "tool":
            assert m["tool_call_id"] in pending, f"tool result without its call: {m}"
            pending.remove(m["tool_call_id"])
            continue
        assert not pending, f"tool calls {pending} not answered before a {m['role']} message"
        if m["role"] == "assistant":
            pending = [c["id"] for c in m.get("tool_calls") or []]
    assert not pending, f"tool calls {pending} never answered"


def _assert_valid_memory(memory: list[dict[str, Any]]) -> None:
    pending: list[str] = []
    for m in memory:
        if m["type"] == "tool":
            assert m["data"]["tool_call_id"] in pending
            pending.remove(m["data"]["tool_call_id"])
        else:
            assert not pending
            if m["type"] == "ai":
                pending = [c["id"] for c in m["data"].get("tool_calls") or []]
    assert not pending


def _ask_count(server: FakeOpenAI, chatcli, db: Path) -> Any:
    server.tool_calls([("run_sql", {"query": COUNT})])
    server.reply("there are 3")
    return chatcli("new", "--db", str(db), input="how many rows are in t?\n")


# --- the model answers from the data ---------------------------------------------------------


def test_a_question_is_answered_through_run_sql(
    root: Path, tmp_path: Path, server: FakeOpenAI, chatcli
) -> None:
    db = make_db(tmp_path / "data.db")
    before = digest(db)
    result = _ask_count(server, chatcli, db)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr

    first, second = server.requests
    assert {t["function"]["name"] for t in first["tools"]} == {
        "list_tables",
        "describe_table",
        "run_sql",
    }
    system = first["messages"][0]
    assert system["role"] == "system"
    assert "t(id INTEGER PK, name TEXT) — 3 rows" in system["content"]
    assert "u(id INTEGER PK, t_id INTEGER -> t, note TEXT) — 1 rows" in system["content"]

    *_, user, call, answer = second["messages"]
    assert user == {"role": "user", "content": "how many rows are in t?"}
    [tool_call] = call["tool_calls"]
    assert call["role"] == "assistant"
    assert tool_call["function"]["name"] == "run_sql"
    assert json.loads(tool_call["function"]["arguments"]) == {"query": COUNT}
    assert answer["role"] == "tool" and answer["tool_call_id"] == tool_call["id"]
    assert answer["content"] == "count(*)\n3"
    assert second["messages"][0] == system

    # The query is shown on stderr, its result as a plain table, then the answer.
    assert f"sql> {COUNT}" in result.stderr
    assert "\x1b" not in result.stdout + result.stderr
    assert result.stdout.splitlines() == ["count(*)", "--------", "       3", "there are 3"]

    sid = only_session(root)
    memory = read_memory(root, sid)
    assert [m["type"] for m in memory] == ["human", "ai", "tool", "ai"]
    assert memory[1]["data"]["tool_calls"][0]["name"] == "run_sql"
    assert memory[2]["data"]["tool_call_id"] == memory[1]["data"]["tool_calls"][0]["id"]
    assert memory[3]["data"]["content"] == "there are 3"
    # new --db attached a private copy and never touched the original
    copy = root / "db" / f"{sid}.db"
    assert digest(db) == before
    assert sqlite_dump(copy) == sqlite_dump(db)
    assert copy.stat().st_mode & 0o777 == 0o600


def test_run_sql_called_with_the_sql_alias_runs_and_shows_its_table(
    tmp_path: Path, server: FakeOpenAI, chatcli
) -> None:
    db = make_db(tmp_path / "data.db")
    server.tool_calls([("run_sql", {"sql": COUNT})])
    server.reply("there are 3")
    result = chatcli("new", "--db", str(db), input="how many rows are in t?\n")
    assert result.returncode == 0, result.stderr
    assert f"sql> {COUNT}" in result.stderr
    assert result.stdout.splitlines() == ["count(*)", "--------", "       3", "there are 3"]
    [answer] = _tool_messages(server.requests[1])
    assert answer["content"] == "count(*)\n3"


def test_words_before_a_tool_call_come_before_its_table(
    root: Path, tmp_path: Path, server: FakeOpenAI, chatcli
) -> None:
    db = make_db(tmp_path / "data.db")
    server.tool_calls([("run_sql", {"query": COUNT})], text="Let me count.")
    server.reply("there are 3")
    result = chatcli("new", "--db", str(db), input="how many?\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "Let me count.",
        "count(*)",
        "--------",
        "       3",
        "there are 3",
    ]
    call = server.requests[1]["messages"][-2]
    assert call["content"] == "Let me count." and call["tool_calls"]
    memory = read_memory(root, only_session(root))
    assert memory[1]["data"]["content"] == "Let me count." and memory[1]["data"]["tool_calls"]


def test_list_tables_and_describe_table_via_the_model(
    root: Path, tmp_path: Path, server: FakeOpenAI, chatcli
) -> None:
    db = make_db(tmp_path / "data.db")
    server.tool_calls([("list_tables", {}), ("describe_table", {"name": "u"})])
    server.reply("t and u")
    result = chatcli("new", "--db", str(db), input="what is in there?\n")
    assert result.returncode == 0, result.stderr
    messages = server.requests[1]["messages"]
    _assert_valid_replay(messages)
    listed, described = _tool_messages(server.requests[1])
    assert listed["content"] == "t\nu"
    assert described["content"].startswith("table u — 1 rows\ncolumns:\n  id INTEGER PRIMARY KEY")
    assert "t_id -> t(id)" in described["content"]
    assert "list_tables()" in result.stderr and "describe_table(name='u')" in result.stderr
    assert result.stdout.strip() == "t and u"
    memory = read_memory(root, only_session(root))
    assert [m["type"] for m in memory] == ["human", "ai", "tool", "tool", "ai"]


# test_sql_sandbox.py refuses all 44 statements in process; here a few representatives go the
# whole way through the installed chatcli in the quick run, and the rest only in the full run.
_slow = pytest.mark.slow
HOSTILE = [
    "DROP TABLE t",
    pytest.param("DELETE FROM t", marks=_slow),
    pytest.param("UPDATE t SET name = 'x'", marks=_slow),
    pytest.param("INSERT INTO t (name) VALUES ('eve')", marks=_slow),
    pytest.param("CREATE TABLE x (a)", marks=_slow),
    "ATTACH DATABASE 'x.db' AS x",
    pytest.param("VACUUM INTO 'y.db'", marks=_slow),
    pytest.param("PRAGMA writable_schema=ON", marks=_slow),
    pytest.param("PRAGMA journal_mode=WAL", marks=_slow),
    pytest.param("SELECT load_extension('x')", marks=_slow),
    "SELECT 1; DROP TABLE t",
    pytest.param("BEGIN", marks=_slow),
    pytest.param("COMMIT", marks=_slow),
    pytest.param("REINDEX", marks=_slow),
    pytest.param("ANALYZE", marks=_slow),
]


@pytest.mark.parametrize("query", HOSTILE)
def test_a_hostile_statement_from_the_model_is_refused_and_changes_nothing(
    root: Path, tmp_path: Path, server: FakeOpenAI, chatcli, query: str
) -> None:
    db = make_db(tmp_path / "data.db")
    # A first, harmless turn creates whatever files any turn creates (locks, indexes).
    created = chatcli("new", "--db", str(db), input="hello\n", cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    sid = only_session(root)
    copy = root / "db" / f"{sid}.db"
    before, files = digest(copy), _files(tmp_path)

    server.tool_calls([("run_sql", {"query": query})])
    server.reply("I cannot do that")
    result = chatcli("resume", sid, input="break it\n", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    [refusal] = _tool_messages(server.requests[2])
    assert refusal["content"].startswith("error:"), refusal["content"]
    assert "\n" not in refusal["content"]
    assert digest(copy) == before
    assert _files(tmp_path) == files  # nothing new in db/, the storage root, or the cwd
    assert result.stdout.strip() == "I cannot do that"


def test_a_runaway_query_is_stopped_and_the_chat_goes_on(
    root: Path, tmp_path: Path, server: FakeOpenAI, chatcli
) -> None:
    db = make_db(tmp_path / "data.db")
    server.tool_calls([("run_sql", {"query": FOREVER})])
    server.reply("that took too long")
    result = chatcli(
        "new", "--db", str(db), input="count forever\nstill there?\n", CHATCLI_SQL_TIMEOUT="0.5"
    )
    assert result.returncode == 0, result.stderr
    first_turn, answer, second_turn = server.requests
    [stopped] = _tool_messages(answer)
    assert stopped["content"].startswith("error: query stopped after 0.5 s: time limit reached")
    assert second_turn["messages"][-1] == {"role": "user", "content": "still there?"}
    assert result.stdout.splitlines()[-3:] == ["that took too long", "", "echo: still there?"]
    memory = read_memory(root, only_session(root))
    assert [m["type"] for m in memory] == ["human", "ai", "tool", "ai", "human", "ai"]


def test_ctrl_c_during_a_models_query_ends_the_turn(
    root: Path, tmp_path: Path, server: FakeOpenAI, env: dict[str, str]
) -> None:
    db = make_db(tmp_path / "data.db")
    server.tool_calls([("run_sql", {"query": FOREVER})])
    proc = subprocess.Popen(
        [CHATCLI, "new", "--db", str(db)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**env, "CHATCLI_SQL_TIMEOUT": "30"},
        # A background job starts with SIGINT ignored, which chatcli would inherit (and Python
        # then installs no handler): give it the default, as a terminal's foreground job has.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        assert proc.stdin and proc.stderr
        proc.stdin.write("count forever\n")
        proc.stdin.flush()
        assert proc.stderr.readline().startswith("sql> WITH RECURSIVE")
        time.sleep(0.3)
        start = time.monotonic()  # from the Ctrl-C: a busy machine may be slow to start chatcli
        os.kill(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert time.monotonic() - start < 20
    assert "time limit" not in err and "Traceback" not in err
    assert len(server.requests) == 1  # the model is not asked again with an error
    assert [m["type"] for m in read_memory(root, only_session(root))] == ["human"]


def test_the_row_cap_says_how_many_rows_were_left_out(
    tmp_path: Path, server: FakeOpenAI, chatcli
) -> None:
    db = make_db(tmp_path / "data.db", big_rows=1000)
    server.tool_calls([("run_sql", {"query": "SELECT * FROM big"})])
    server.reply("lots")
    result = chatcli("new", "--db", str(db), input="show me big\n")
    assert result.returncode == 0, result.stderr
    [capped] = _tool_messages(server.requests[1])
    lines = capped["content"].splitlines()
    assert lines[:3] == ["n", "0", "1"]
    assert len(lines) == 1 + 200 + 1
    assert "800" in lines[-1] and "left out" in lines[-1], lines[-1]
    assert "800" in result.stdout  # the user's table says so too


def test_tool_rounds_stop_at_eight_and_memory_stays_valid(
    root: Path, tmp_path: Path, server: FakeOpenAI, chatcli
) -> None:
    db = make_db(tmp_path / "data.db")
    for i in range(10):
        server.tool_calls([("run_sql", {"query": f"SELECT {i}"})])
    result = chatcli("new", "--db", str(db), input="loop forever\nand now?\n")
    assert result.returncode == 0, result.stderr
    assert "stopped after 8 rounds of tool calls" in result.stderr
    requests = server.requests
    # 8 answered rounds and a 9th call left unanswered; then "and now?" starts counting afresh:
    # it gets the 10th scripted call, runs it, and the server's default echo ends the turn.
    assert len(requests) == 9 + 2
    assert len(_tool_messages(requests[8])) == 8
    assert requests[9]["messages"][-1] == {"role": "user", "content": "and now?"}
    for request in requests:
        _assert_valid_replay(request["messages"])
    memory = read_memory(root, only_session(root))
    _assert_valid_memory(memory)
    assert [m["type"] for m in memory] == (
        ["human"] + ["ai", "tool"] * 8 + ["ai"] + ["human", "ai", "tool", "ai"]
    )
    stopped = memory[17]["data"]
    assert not stopped.get("tool_calls")
    assert stopped["response_metadata"]["finish_reason"] == "tool_limit"
    assert stopped["content"] == "(stopped after 8 rounds of tool calls without a final answer)"
    assert memory[-1]["data"]["content"] == "echo: and now?"


# --- resuming replays a valid conversation ---------------------------------------------------


def test_a_resumed_session_replays_tool_calls_in_order(
    root: Path, tmp_path: Path, server: FakeOpenAI, chatcli
) -> None:
    db = make_db(tmp_path / "data.db")
    assert _ask_count(server, chatcli, db).returncode == 0
    sid = only_session(root)
    server.reply("still 3")
    result = chatcli("resume", sid, input="and now?\n")
    assert result.returncode == 0, result.stderr
    sent = server.requests[-1]
    assert [m["role"] for m in sent["messages"]] == [
        "system",
        "user",
        "assistant",
        "tool",
        "assistant",
        "user",
    ]
    _assert_valid_replay(sent["messages"])
    assert "t(id INTEGER PK" in sent["messages"][0]["content"]
    assert result.stdout.strip() == "still 3"  # the server accepted it
    memory = read_memory(root, sid)
    assert [m["type"] for m in memory] == ["human", "ai", "tool", "ai", "human", "ai"]


def test_a_tiny_context_budget_never_starts_on_a_tool_message(
    root: Path, tmp_path: Path, server: FakeOpenAI, chatcli
) -> None:
    db = make_db(tmp_path / "data.db")
    assert _ask_count(server, chatcli, db).returncode == 0
    sid = only_session(root)
    server.tool_calls([("run_sql", {"query": "SELECT name FROM t ORDER BY id"})])
    server.reply("ann, bob, cy")
    result = chatcli("resume", sid, input="and their names?\n", CHATCLI_CONTEXT_TOKENS="50")
    assert result.returncode == 0, result.stderr
    for request in server.requests[2:]:
        _assert_valid_replay(request["messages"])
    trimmed = server.requests[-1]["messages"]
    assert [m["role"] for m in trimmed] == ["system", "user", "assistant", "tool"]
    assert trimmed[1]["content"] == "and their names?"
    assert result.stdout.splitlines()[-1] == "ann, bob, cy"


# --- the user's own commands -----------------------------------------------------------------


def test_sql_and_schema_print_plain_tables_without_a_model_call(
    tmp_path: Path, server: FakeOpenAI, chatcli
) -> None:
    db = make_db(tmp_path / "data.db")
    before = digest(db)
    result = chatcli(
        "new",
        "--db",
        str(db),
        input="/sql SELECT id, name FROM t ORDER BY id\n/schema\n/sql DROP TABLE t\n",
    )
    assert result.returncode == 1, result.stderr  # piped: a refused line makes the run fail
    assert server.requests == []
    assert "\x1b" not in result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[:5] == ["id  name", "--  ----", " 1  ann", " 2  bob", " 3  cy"]
    schema = "\n".join(lines[5:])
    assert "table t — 3 rows" in schema and "table u — 1 rows" in schema
    assert "  name TEXT NOT NULL" in schema
    assert result.stderr.splitlines() == [
        "chatcli: error: not allowed: this database is read-only (DROP TABLE)"
    ]
    assert digest(db) == before


def test_sql_without_a_database_says_none_is_attached(server: FakeOpenAI, chatcli) -> None:
    result = chatcli("new", input="/sql SELECT 1\n/schema\n")
    assert result.returncode == 1
    assert (
        result.stderr.splitlines()
        == ["chatcli: error: no database is attached (use /attach PATH)"] * 2
    )
    assert result.stdout == "" and server.requests == []


def test_attach_keeps_the_old_copy_on_a_bad_file_and_detach_removes_only_the_copy(
    root: Path, tmp_path: Path, server: FakeOpenAI, chatcli
) -> None:
    first = make_db(tmp_path / "first.db")
    second = tmp_path / "second.db"
    conn = sqlite3.connect(second)
    conn.executescript("CREATE TABLE v (a); INSERT INTO v VALUES (1), (2);")
    conn.close()
    bad = tmp_path / "notes.txt"
    bad.write_text("not a database\n")
    originals = {p: digest(p) for p in (first, second, bad)}

    result = chatcli(
        "new",
        "--db",
        str(first),
        input=(
            f"/attach {bad}\n/sql {COUNT}\n/attach {second}\n/sql SELECT count(*) FROM v\n"
            "/detach\n/sql SELECT 1\nhi\n"
        ),
    )
    assert result.returncode == 1, result.stderr  # the bad /attach and the last /sql failed
    errors = [line for line in result.stderr.splitlines() if line.startswith("chatcli: error:")]
    assert errors == [
        "chatcli: error: not a SQLite database (or it is encrypted), nor a CSV/TSV, JSON, JSON "
        f"Lines or Parquet file (to import it as CSV, name it .csv) ({bad})",
        "chatcli: error: no database is attached (use /attach PATH)",
    ]
    assert f"attached {second}" in result.stderr and "database detached" in result.stderr
    # the bad file changed nothing: the first copy still answered
    assert result.stdout.splitlines()[:6] == [
        "count(*)",
        "--------",
        "       3",
        "count(*)",
        "--------",
        "       2",
    ]
    sid = only_session(root)
    assert not (root / "db" / f"{sid}.db").exists()
    assert {p: digest(p) for p in originals} == originals
    # detached: the next message is a plain chat, no tools, no schema
    [sent] = server.requests
    assert "tools" not in sent
    assert "SQLite" not in sent["messages"][0]["content"]


def test_attach_db_command_binds_the_tools_on_resume(
    root: Path, tmp_path: Path, server: FakeOpenAI, chatcli
) -> None:
    db = make_db(tmp_path / "data.db")
    assert chatcli("new", input="hi\n").returncode == 0
    sid = only_session(root)
    attached = chatcli("attach-db", sid[:8], str(db))
    assert attached.returncode == 0, attached.stderr
    assert sqlite_dump(root / "db" / f"{sid}.db") == sqlite_dump(db)
    server.tool_calls([("run_sql", {"query": COUNT})])
    server.reply("there are 3")
    result = chatcli("resume", sid, input="how many?\n")
    assert result.returncode == 0, result.stderr
    plain, with_db, answer = server.requests
    assert "tools" not in plain
    assert len(with_db["tools"]) == 3
    assert "t(id INTEGER PK, name TEXT) — 3 rows" in with_db["messages"][0]["content"]
    assert _tool_messages(answer)[0]["content"] == "count(*)\n3"
