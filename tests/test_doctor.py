"""``chatcli doctor``: what it reports, what ``--fix`` repairs, and what it never touches."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import (
    DAMAGED,
    EXAMPLES,
    ai,
    human,
    invoke,
    new_session,
    run,
    run_read_only,
    settle,
    tree_digest,
)

from chatcli.doctor import ERROR, INFO, WARNING, check
from chatcli.store import Store, search

ORPHAN = "eeeeeeee-0000-4000-8000-000000000000"


def _user_data(root: Path) -> dict[str, str]:
    """Every memory file and database, by hash: what the doctor must never change."""
    return tree_digest(root, dotfiles=False)


def _healthy(root: Path) -> Store:
    store = Store(root)
    for i in range(3):
        new_session(store, [human(f"q{i}"), ai(f"a{i}")], title=f"s{i}")
    store.list_sessions()
    return store


def _old(path: Path, data: bytes = b"") -> Path:
    """A file last written an hour ago."""
    path.write_bytes(data)
    past = time.time() - 3600
    os.utime(path, (past, past))
    return path


def _problems(root: Path) -> dict[str, str]:
    return {f.problem: f.level for f in check(Store(root)).findings}


def test_a_healthy_storage_is_all_well(root: Path) -> None:
    _healthy(root)
    result = invoke(root, "doctor")
    assert result.exit_code == 0, result.output
    assert "3 sessions checked" in result.output and "all well" in result.output
    assert check(Store(root)).findings == []


def test_a_storage_folder_not_made_yet_is_all_well(root: Path) -> None:
    assert invoke(root, "doctor").exit_code == 0
    assert not root.exists()


def test_damaged_sessions_are_named_with_the_reason_and_what_to_do(tmp_path: Path) -> None:
    root = tmp_path / "damaged"
    shutil.copytree(DAMAGED, root)
    root.chmod(0o700)
    before = _user_data(root)
    result = invoke(root, "doctor")
    assert result.exit_code == 1
    for name in os.listdir(DAMAGED / "memory"):
        assert f"memory/{name}" in result.output
    assert "not valid JSON" in result.output and "unknown type 'alien'" in result.output
    assert "Repair the JSON by hand or restore it from a backup" in result.output
    assert "4 problems remain" in result.output
    assert invoke(root, "doctor", "--fix").exit_code == 1  # --fix cannot repair user data...
    assert _user_data(root) == before  # ...and does not try


def test_zero_byte_files_are_information_not_errors(tmp_path: Path) -> None:
    root = tmp_path / "example"
    shutil.copytree(EXAMPLES, root)
    root.chmod(0o700)
    report = check(Store(root))
    assert report.ok
    zero = {(f.problem, f.path.name) for f in report.findings if f.level == INFO}
    assert ("zero-byte session file", "9a1f3e6b-2c5d-4e7f-8a9b-0c1d2e3f4a55.json") in zero
    assert ("zero-byte database file", "0b7c6a52-3f0e-4a8e-9a57-1f6d2c9e4b11.db") in zero
    assert invoke(root, "doctor").exit_code == 0


def test_leftover_temp_files_are_removed_by_fix_once_older_than_a_minute(root: Path) -> None:
    store = _healthy(root)
    sid = store.ids()[0]
    stale = _old(store.memory_dir / f".{sid}.json.4242.tmp", b"[half a sav")
    fresh = store.memory_dir / f".{sid}.json.4343.tmp"
    fresh.write_bytes(b"[")
    db_temp = _old(store.db_dir / f".{sid}.db.abc123.tmp", b"SQLite format 3\0")
    result = invoke(root, "doctor")
    assert result.exit_code == 1
    assert "leftover temp file" in result.output and "doctor --fix" in result.output
    before = _user_data(root)
    result = invoke(root, "doctor", "--fix")
    assert result.exit_code == 0, result.output
    assert not stale.exists() and not db_temp.exists()
    assert fresh.exists()  # may belong to a save in progress
    assert _user_data(root) == before


def test_metadata_without_a_session_or_unparsable_is_removed_by_fix(root: Path) -> None:
    store = _healthy(root)
    sid = store.ids()[0]
    _old(store.meta_path(ORPHAN), b'{"title": "gone"}')
    store.meta_path(sid).write_text("{not json")
    assert _problems(root) == {"metadata without a session": WARNING, "damaged metadata": WARNING}
    assert invoke(root, "doctor", "--fix").exit_code == 0
    assert not store.meta_path(ORPHAN).exists() and not store.meta_path(sid).exists()
    assert store.open(sid).title == _first_question(store, sid)
    assert invoke(root, "doctor").exit_code == 0


def _first_question(store: Store, sid: str) -> str:
    return store.open(sid).messages[0]["data"]["content"]


def test_a_database_without_a_session_is_reported_and_never_deleted(root: Path) -> None:
    store = _healthy(root)
    orphan = _attach(store, ORPHAN)
    result = invoke(root, "doctor", "--fix")
    assert result.exit_code == 1
    assert "database without a session" in result.output
    assert "restore it from a backup" in result.output
    assert "delete" not in result.output.lower()  # never advised for a database
    assert orphan.exists()


def test_a_database_copy_that_is_not_sqlite_is_an_error(root: Path) -> None:
    store = _healthy(root)
    store.db_path(store.ids()[0]).write_bytes(b"not a database at all")
    assert _problems(root)["damaged database"] == ERROR


def test_a_damaged_index_is_rebuilt_by_fix(root: Path) -> None:
    store = _healthy(root)
    index = root / "index.sqlite"
    damaged = _damaged_copy(index)
    assert _problems(root) == {"damaged index": WARNING}
    assert index.read_bytes() == damaged  # checking alone changes nothing
    result = invoke(root, "doctor", "--fix")
    assert result.exit_code == 0, result.output
    assert "fixed" in result.output
    assert sqlite3.connect(index).execute("SELECT count(*) FROM sessions").fetchone() == (3,)
    assert len(store.list_sessions()) == 3


def test_a_stale_index_the_listing_cannot_notice_is_rebuilt_by_fix(root: Path) -> None:
    store = _healthy(root)
    settle(*(root / f for f in ("memory", "meta", "db")))  # the listing trusts its index
    store = Store(root)
    store.list_sessions()
    sid = store.ids()[0]
    path = store.memory_path(sid)
    data = json.loads(path.read_bytes()) + [human("more")]
    with open(path, "r+") as f:  # rewritten in place by another tool: no folder mtime change
        f.write(json.dumps(data))
        f.truncate()
    assert {r.id: r.messages for r in store.list_sessions()}[sid] == 2  # the stale listing
    result = invoke(root, "doctor")
    assert result.exit_code == 1
    assert "stale index" in result.output and "shows 2 messages, has 3" in result.output
    assert invoke(root, "doctor", "--fix").exit_code == 0
    assert {r.id: r.messages for r in store.list_sessions()}[sid] == 3


def test_an_index_merely_behind_a_save_is_not_a_problem(root: Path) -> None:
    store = _healthy(root)
    store.append(store.ids()[0], [human("new")])
    assert invoke(root, "doctor").exit_code == 0  # the listing refreshes itself when folders change


def test_a_storage_folder_open_to_others_is_a_warning(root: Path) -> None:
    _healthy(root)
    root.chmod(0o755)
    result = invoke(root, "doctor")
    assert result.exit_code == 1 and "chmod 700" in result.output


def test_fix_never_changes_a_session_file_or_a_database(tmp_path: Path) -> None:
    root = tmp_path / "mixed"
    shutil.copytree(EXAMPLES, root)
    for p in (DAMAGED / "memory").iterdir():
        shutil.copy(p, root / "memory" / p.name)
    root.chmod(0o700)
    store = Store(root)
    store.db_path(ORPHAN).write_bytes(b"SQLite format 3\0" + b"\0" * 100)
    store.ensure()
    store.meta_path(ORPHAN).write_text("{}")
    _old(store.memory_dir / ".0b7c6a52-3f0e-4a8e-9a57-1f6d2c9e4b11.json.1.tmp")
    (root / "index.sqlite").write_bytes(b"junk")
    before = _user_data(root)
    stats = {
        p: p.stat().st_mtime_ns
        for p in root.rglob("*")
        if p.parent.name in ("memory", "db") and not p.name.startswith(".")
    }
    result = invoke(root, "doctor", "--fix")
    assert result.exit_code == 1  # the damaged sessions and the orphan database remain
    assert _user_data(root) == before
    assert {p: p.stat().st_mtime_ns for p in stats} == stats


def test_doctor_through_the_installed_command(tmp_path: Path, env: dict[str, str]) -> None:
    root = tmp_path / "damaged"
    shutil.copytree(DAMAGED, root)
    result = run(["doctor"], {**env, "CHATCLI_STORAGE": str(root)})
    assert result.returncode == 1
    assert result.stderr == "" and "\x1b" not in result.stdout
    assert result.stdout.count("damaged session") >= 4


def test_the_doctor_module_needs_no_ui() -> None:
    code = (
        "import sys, chatcli.doctor; "
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "('rich', 'typer', 'prompt_toolkit', 'langchain_core', 'langchain_openai')]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("level", [ERROR, WARNING])
def test_exit_status_follows_what_remains(root: Path, level: str) -> None:
    store = _healthy(root)
    sid = store.ids()[0]
    if level == ERROR:
        store.memory_path(sid).write_bytes(b"[{")
    else:
        _old(store.meta_dir / f".{sid}.json.9.tmp")
    assert invoke(root, "doctor").exit_code == 1
    assert invoke(root, "doctor", "--fix").exit_code == (1 if level == ERROR else 0)


# ---------------------------------------------------------------------------------------------
# Sessions on the move, and fixes that cannot be made


def test_fix_leaves_the_metadata_and_database_of_a_session_being_trashed(root: Path) -> None:
    store = _healthy(root)
    sid = store.ids()[0]
    title = store.open(sid).title
    _attach(store, sid)
    # Store.trash moves the memory file first; caught halfway, meta/ and db/ still hold the rest.
    trashed = root / "trash" / sid / "memory" / f"{sid}.json"
    trashed.parent.mkdir(parents=True)
    store.memory_path(sid).rename(trashed)
    _old(store.meta_path(sid), store.meta_path(sid).read_bytes())
    result = invoke(root, "doctor", "--fix")
    assert result.exit_code == 0, result.output
    assert "metadata of a trashed session" in result.output
    assert "database of a trashed session" in result.output
    assert store.meta_path(sid).exists() and store.db_path(sid).exists()
    store.restore(sid)
    assert store.open(sid).title == title and store.has_db(sid)


def test_fix_takes_the_session_lock_and_checks_again_before_removing(root: Path) -> None:
    store = _healthy(root)
    sid = store.ids()[0]
    _old(store.meta_path(sid), store.meta_path(sid).read_bytes())
    away = root / "elsewhere.json"
    store.memory_path(sid).rename(away)  # looks orphaned to the doctor's scan...
    reports = []
    with Store(root).lock(sid):  # ...while another process holds the session, e.g. restoring
        doctor = threading.Thread(target=lambda: reports.append(check(Store(root), fix=True)))
        doctor.start()
        time.sleep(0.5)
        away.rename(store.memory_path(sid))  # the session is back before the lock is released
    doctor.join(timeout=60)
    assert store.meta_path(sid).exists()
    (finding,) = [f for f in reports[0].findings if f.path == store.meta_path(sid)]
    assert not finding.fixed and finding.level == INFO


def test_fix_keeps_metadata_written_moments_ago(root: Path) -> None:
    store = _healthy(root)
    store.meta_path(ORPHAN).write_text('{"title": "being created"}')  # Store.create's first write
    result = invoke(root, "doctor", "--fix")
    assert result.exit_code == 0, result.output
    assert "metadata of a session being created" in result.output
    assert store.meta_path(ORPHAN).exists()


def test_fix_on_a_read_only_storage_reports_what_it_could_not_fix(
    root: Path, env: dict[str, str]
) -> None:
    store = _healthy(root)
    sid = store.ids()[0]
    stale = _old(store.memory_dir / f".{sid}.json.4242.tmp", b"[half")
    (root / "index.sqlite").write_bytes(b"junk" * 100)
    (root / "search.sqlite").write_bytes(b"junk" * 100)
    result = run_read_only(root, env, "doctor", "--fix")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr + result.stdout and "unexpected" not in result.stderr
    assert result.stdout.count("could not fix") >= 3 and "Read-only file system" in result.stdout
    assert stale.exists()


def _damaged_copy(path: Path) -> bytes:
    """Overwrite a cache chatcli made with junk after its 100-byte header (still its own file,
    but unreadable); returns the bytes written."""
    data = path.read_bytes()[:100] + b"garbage" * 500
    path.write_bytes(data)
    return data


def test_an_index_that_is_a_folder_is_reported_and_moved_aside_by_fix(root: Path) -> None:
    _healthy(root)
    (root / "index.sqlite").unlink()
    (root / "index.sqlite").mkdir()
    (root / "index.sqlite" / "kept").write_text("x")
    assert _problems(root) == {"not chatcli's file": WARNING}
    result = invoke(root, "doctor", "--fix")
    assert result.exit_code == 0, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    [aside] = root.glob("index.sqlite.not-chatcli-*")
    assert (aside / "kept").read_text() == "x" and (root / "index.sqlite").is_file()


def test_a_damaged_search_index_is_a_warning_and_rebuilt_by_fix(root: Path) -> None:
    store = _healthy(root)
    search.search(store, "q1")  # builds search.sqlite
    _damaged_copy(root / "search.sqlite")
    assert _problems(root) == {"damaged search index": WARNING}
    result = invoke(root, "doctor", "--fix")
    assert result.exit_code == 0, result.output
    assert "damaged search index" in result.output and "fixed" in result.output
    conn = sqlite3.connect(root / "search.sqlite")
    assert conn.execute("SELECT count(*) FROM files").fetchone() == (3,)
    (second,) = [sid for sid in store.ids() if store.open(sid).title == "s1"]
    assert [h.id for h in search.search(store, "q1")] == [second]


def _attach(store: Store, sid: str) -> Path:
    """A small real database at the session's db path."""
    path = store.db_path(sid)
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE t(x)")
    con.commit()
    con.close()
    return path
