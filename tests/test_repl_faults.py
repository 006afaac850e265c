"""The REPL when a session or its database is damaged: a failed /switch changes nothing, and an
attached copy that cannot be read never blocks plain chat."""

from __future__ import annotations

from pathlib import Path

from conftest import make_db, read_memory

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
