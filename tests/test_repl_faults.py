"""The REPL when a session or its database is damaged: a failed /switch changes nothing, and an
attached copy that cannot be read never blocks plain chat."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from conftest import assert_clean_error, digest, make_db, only_session, read_memory
from fake_openai import FakeOpenAI

from chatcli.store import Store

DAMAGED_ID = "9d1c0e6a-0000-4000-8000-00000000dead"


def _damaged_session(root: Path) -> str:
    store = Store(root)
    store.ensure()
    (root / "memory" / f"{DAMAGED_ID}.json").write_bytes(b'[{"type": "human", "data": ')
    return DAMAGED_ID


def test_a_failed_switch_from_a_new_session_keeps_it_open(chatcli, root: Path) -> None:
    sid = _damaged_session(root)
    result = chatcli("new", "--title", "fresh", input=f"/switch {sid[:8]}\nhello\n")
    assert result.returncode == 1  # the /switch line failed
    assert "damaged" in result.stderr and "removed while open" not in result.stderr
    assert "echo: hello" in result.stdout
    fresh = [s for s in Store(root).ids() if s != sid]
    assert len(fresh) == 1  # the new session was not forgotten as unused
    assert [m["data"]["content"] for m in read_memory(root, fresh[0])] == ["hello", "echo: hello"]


def test_a_failed_switch_leaves_an_unused_new_session_to_be_forgotten_on_exit(
    chatcli, root: Path
) -> None:
    sid = _damaged_session(root)
    result = chatcli("new", input=f"/switch {sid[:8]}\n")
    assert result.returncode == 1
    assert Store(root).ids() == [sid]  # nothing said: forgotten when leaving, as always


def test_a_failed_switch_keeps_the_database_of_the_open_session(
    chatcli, root: Path, tmp_path: Path, server
) -> None:
    sid = _damaged_session(root)
    db = make_db(tmp_path / "data.db")
    result = chatcli(
        "new", "--db", str(db), input=f"/switch {sid[:8]}\n/sql SELECT count(*) FROM t\n"
    )
    assert "damaged" in result.stderr
    assert "3" in result.stdout.split()  # the /sql after the failed switch still has its copy


def _session_with_a_bad_copy(chatcli, root: Path, tmp_path: Path, how: str) -> Path:
    """A session whose attached copy another program spoiled afterwards: put in WAL mode, or
    overwritten with garbage, or with a damaged schema."""
    db = make_db(tmp_path / "data.db")
    assert chatcli("new", "--db", str(db), input="first\n").returncode == 0
    copy = root / "db" / f"{only_session(root)}.db"
    if how == "wal":
        conn = sqlite3.connect(copy)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.close()  # the last connection checkpoints and removes -wal and -shm
    elif how == "garbage":
        copy.write_bytes(b"this is not a database at all" * 100)
    else:  # a valid header, a torn first page
        data = bytearray(copy.read_bytes())
        data[100:4096] = b"\xff" * (4096 - 100)
        copy.write_bytes(bytes(data))
    return copy


@pytest.mark.parametrize("how", ["wal", "garbage", "damaged"])
def test_a_spoiled_database_copy_does_not_block_plain_chat(
    chatcli, root: Path, tmp_path: Path, server: FakeOpenAI, how: str
) -> None:
    copy = _session_with_a_bad_copy(chatcli, root, tmp_path, how)
    before = digest(copy)
    result = chatcli("resume", "--last", input="hello\nagain\n")
    assert result.returncode == 0, result.stderr
    assert "echo: hello" in result.stdout and "echo: again" in result.stdout
    [line] = [x for x in result.stderr.splitlines() if "cannot be used" in x]  # once, not per turn
    assert "/attach PATH" in line and "/detach" in line
    assert "copy_database" not in line and "Traceback" not in line
    assert "tools" not in server.requests[-1]  # the model is not offered a database it lacks
    assert digest(copy) == before  # left as it is: the user decides


@pytest.mark.parametrize("how", ["wal", "garbage"])
def test_sql_on_a_spoiled_copy_says_how_to_fix_it(
    chatcli, root: Path, tmp_path: Path, how: str
) -> None:
    _session_with_a_bad_copy(chatcli, root, tmp_path, how)
    result = chatcli("resume", "--last", input="/sql SELECT 1\n")
    assert result.returncode == 1
    assert_clean_error(result.stderr)
    assert "/attach PATH" in result.stderr and "copy_database" not in result.stderr


def test_detach_removes_a_spoiled_copy(chatcli, root: Path, tmp_path: Path) -> None:
    copy = _session_with_a_bad_copy(chatcli, root, tmp_path, "wal")
    result = chatcli("resume", "--last", input="/detach\nhello\n")
    assert result.returncode == 0, result.stderr
    assert not copy.exists() or copy.stat().st_size == 0
    assert "/attach PATH" not in result.stderr


@pytest.mark.parametrize("how", ["wal", "garbage", "damaged"])
def test_doctor_reports_a_spoiled_database_copy(
    chatcli, root: Path, tmp_path: Path, how: str
) -> None:
    copy = _session_with_a_bad_copy(chatcli, root, tmp_path, how)
    result = chatcli("doctor")
    assert result.returncode == 1
    assert "damaged database" in result.stdout and copy.name[:8] in result.stdout
    assert "attach-db" in result.stdout
