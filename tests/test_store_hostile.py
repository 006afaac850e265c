"""A storage folder someone else filled: files that are not what they seem (FIFOs, links to
/dev/zero and to files outside the folder, lock files that are folders, caches chatcli did not
make) and metadata no chatcli wrote. Each case runs the installed chatcli with a timeout, so a
hang fails instead of blocking; files outside the storage folder are digested before and after."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from pathlib import Path

import pytest
from conftest import (
    CHATCLI,
    assert_clean_error,
    digest,
    human,
    new_session,
    read_memory,
    tree_digest,
)

from chatcli.store import Store

HANG = 20  # seconds: any command taking this long is stuck (each takes well under one)
ALIEN = "11111111-2222-4333-8444-555555555555"  # the planted session


def bounded(env: dict[str, str], *args: str, input: str = "") -> subprocess.CompletedProcess[str]:
    """The installed chatcli, failed (not waited for) if it hangs."""
    try:
        return subprocess.run(
            [CHATCLI, *args], input=input, env=env, capture_output=True, text=True, timeout=HANG
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"chatcli {' '.join(args)} hung for {HANG} s")


def outside_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): digest(p) for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def store(root: Path) -> Store:
    """A storage folder with one ordinary session ("hello world")."""
    s = Store(root)
    new_session(s, [human("hello world")], title="real")
    return s


# ---------------------------------------------------------------------------------------------
# FIFOs and devices named like session files

_PLACES = {"memory": "memory/{}.json", "meta": "meta/{}.json", "db": "db/{}.db"}


def plant(root: Path, where: str, kind: str) -> Path:
    """A FIFO (or a link to /dev/zero) as the planted session's ``where`` file."""
    path = root / _PLACES[where].format(ALIEN)
    if where != "memory":
        (root / "memory" / f"{ALIEN}.json").write_text("[]")
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to("/dev/zero")
    return path


_CASES = [(w, k) for w in _PLACES for k in ("fifo", "devzero")]


@pytest.mark.parametrize(("where", "kind"), _CASES)
def test_list_never_opens_a_fifo_or_device_and_marks_a_memory_one(
    store: Store, env: dict[str, str], where: str, kind: str
) -> None:
    plant(store.root, where, kind)
    result = bounded(env, "list")
    assert result.returncode == 0, result.stderr
    assert "real" in result.stdout
    assert ("NOT A FILE" in result.stdout) is (where == "memory")


@pytest.mark.parametrize(("where", "kind"), _CASES)
def test_list_json_marks_what_is_not_a_file(
    store: Store, env: dict[str, str], where: str, kind: str
) -> None:
    plant(store.root, where, kind)
    result = bounded(env, "list", "--json")
    assert result.returncode == 0, result.stderr
    rows = {row["id"]: row for row in json.loads(result.stdout)}
    damaged = rows[ALIEN]["damaged"]
    assert (damaged or "").startswith("NOT A FILE") is (where == "memory")


@pytest.mark.parametrize(("where", "kind"), _CASES)
def test_search_skips_what_is_not_a_file(
    store: Store, env: dict[str, str], where: str, kind: str
) -> None:
    plant(store.root, where, kind)
    result = bounded(env, "search", "hello")
    assert result.returncode == 0, result.stderr
    assert "hello world" in result.stdout


@pytest.mark.parametrize(("where", "kind"), _CASES)
def test_doctor_names_what_is_not_a_file(
    store: Store, env: dict[str, str], where: str, kind: str
) -> None:
    path = plant(store.root, where, kind)
    result = bounded(env, "doctor")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "not a file" in result.stdout and str(path.relative_to(store.root)) in result.stdout


@pytest.mark.parametrize(("where", "kind"), _CASES)
def test_resume_refuses_a_memory_file_that_is_not_a_file_and_opens_the_others(
    store: Store, env: dict[str, str], where: str, kind: str
) -> None:
    plant(store.root, where, kind)
    result = bounded(env, "resume", ALIEN, input="hi\n")
    if where == "memory":
        assert result.returncode == 1
        assert_clean_error(result.stderr)
    else:
        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("where", "kind"), _CASES)
def test_export_refuses_a_memory_file_that_is_not_a_file(
    store: Store, env: dict[str, str], where: str, kind: str
) -> None:
    plant(store.root, where, kind)
    result = bounded(env, "export", ALIEN, "--format", "json")
    if where == "memory":
        assert result.returncode == 1
        assert_clean_error(result.stderr)
        assert "not a regular file" in result.stderr
    else:
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "[]"


@pytest.mark.parametrize(("where", "kind"), _CASES)
def test_shell_completion_never_waits_on_a_fifo(
    store: Store, env: dict[str, str], where: str, kind: str
) -> None:
    plant(store.root, where, kind)
    [sid] = [s for s in store.ids() if s != ALIEN]
    completion = {"_CHATCLI_COMPLETE": "complete_zsh", "_TYPER_COMPLETE_ARGS": "chatcli resume "}
    result = bounded({**env, **completion})
    assert result.returncode == 0 and sid in result.stdout


def test_a_memory_file_over_the_size_limit_is_refused_unread(
    store: Store, env: dict[str, str]
) -> None:
    huge = store.root / "memory" / f"{ALIEN}.json"
    with open(huge, "wb") as f:
        f.truncate(600 << 20)  # sparse: no disk used, but reading it takes 600 MB of memory
    result = bounded(env, "resume", ALIEN, input="hi\n")
    assert result.returncode == 1
    assert_clean_error(result.stderr)
    assert "limit" in result.stderr
    assert huge.stat().st_size == 600 << 20


def test_import_of_a_fifo_is_refused_at_once(
    root: Path, env: dict[str, str], tmp_path: Path
) -> None:
    fifo = tmp_path / "conversation.json"
    os.mkfifo(fifo)
    result = bounded(env, "import", str(fifo))
    assert result.returncode == 1
    assert_clean_error(result.stderr)
    assert not (root / "memory").exists() or not os.listdir(root / "memory")


def test_import_from_endless_stdin_stops_at_the_limit(root: Path, env: dict[str, str]) -> None:
    with open("/dev/zero", "rb") as zero:
        try:
            result = subprocess.run(
                [CHATCLI, "import", "-"], stdin=zero, env=env, capture_output=True, timeout=HANG
            )
        except subprocess.TimeoutExpired:
            pytest.fail("import - from /dev/zero hung")
    assert result.returncode == 1
    assert_clean_error(result.stderr.decode())


# ---------------------------------------------------------------------------------------------
# index.sqlite and search.sqlite that chatcli did not make


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder outside the storage root: another program's database and a text file."""
    folder = tmp_path / "outside"
    folder.mkdir()
    conn = sqlite3.connect(folder / "app.db")
    conn.executescript(
        "CREATE TABLE sessions (x); CREATE TABLE mine (y); INSERT INTO mine VALUES (1);"
    )
    conn.commit()
    conn.close()
    (folder / "notes.txt").write_text("my notes\n")
    return folder


@pytest.mark.parametrize("name", ["index.sqlite", "search.sqlite"])
@pytest.mark.parametrize("target", ["app.db", "notes.txt"])
def test_a_cache_that_is_a_link_is_moved_aside_and_its_target_never_changes(
    store: Store, env: dict[str, str], outside: Path, name: str, target: str
) -> None:
    link = store.root / name
    link.unlink(missing_ok=True)
    link.symlink_to(outside / target)
    before = outside_digest(outside)
    for args in (["list"], ["search", "hello"], ["resume", store.ids()[0]], ["doctor", "--fix"]):
        result = bounded(env, *args, input="more\n")
        assert "Traceback" not in result.stderr, result.stderr
    assert outside_digest(outside) == before
    [aside] = store.root.glob(f"{name}.not-chatcli-*")
    assert aside.is_symlink() and aside.readlink() == outside / target
    assert link.is_file() and not link.is_symlink()  # chatcli's own cache now


@pytest.mark.parametrize("name", ["index.sqlite", "search.sqlite"])
def test_a_file_chatcli_did_not_make_is_kept_byte_for_byte_with_a_note(
    store: Store, env: dict[str, str], outside: Path, name: str
) -> None:
    for data in (b"my own notes, not a database\n" * 10, (outside / "app.db").read_bytes()):
        (store.root / name).write_bytes(data)
        for aside in store.root.glob(f"{name}.not-chatcli-*"):
            aside.unlink()
        args = ["search", "hello"] if name == "search.sqlite" else ["list"]
        result = bounded(env, *args)
        assert result.returncode == 0, result.stderr
        assert "moved it aside" in result.stderr and len(result.stderr.splitlines()) == 1
        [aside] = store.root.glob(f"{name}.not-chatcli-*")
        assert aside.read_bytes() == data


def test_a_journal_that_is_a_link_is_never_written_through(
    store: Store, env: dict[str, str], outside: Path
) -> None:
    bounded(env, "list")
    journal = store.root / "index.sqlite-journal"
    journal.symlink_to(outside / "notes.txt")
    before = outside_digest(outside)
    new_session(store, [human("another")])
    result = bounded(env, "list")
    assert result.returncode == 0 and "another" in result.stdout
    assert outside_digest(outside) == before


def test_doctor_reports_a_foreign_cache_and_changes_nothing_until_fix(
    store: Store, env: dict[str, str]
) -> None:
    index = store.root / "index.sqlite"
    index.write_bytes(b"not mine to delete\n" * 100)
    result = bounded(env, "doctor")
    assert result.returncode == 1 and "not chatcli's" in result.stdout
    assert index.read_bytes() == b"not mine to delete\n" * 100
    result = bounded(env, "doctor", "--fix")
    assert result.returncode == 0, result.stdout
    [aside] = store.root.glob("index.sqlite.not-chatcli-*")
    assert aside.read_bytes() == b"not mine to delete\n" * 100


# ---------------------------------------------------------------------------------------------
# a memory file that is a link: listed, searched and exported; never written through


@pytest.fixture
def linked(store: Store, tmp_path: Path) -> tuple[Path, Path]:
    """memory/<ALIEN>.json -> a valid memory file outside the storage folder."""
    target = tmp_path / "elsewhere" / "chat.json"
    target.parent.mkdir()
    target.write_text(json.dumps([human("linked question")]))
    link = store.root / "memory" / f"{ALIEN}.json"
    link.symlink_to(target)
    return link, target


def test_a_linked_memory_file_is_listed_searched_and_exported(
    env: dict[str, str], linked: tuple[Path, Path]
) -> None:
    assert "linked question" in bounded(env, "list").stdout
    assert "linked question" in bounded(env, "search", "linked").stdout
    result = bounded(env, "export", ALIEN, "--format", "json")
    assert result.returncode == 0 and result.stdout == linked[1].read_text()


def test_resume_refuses_a_linked_memory_file_and_leaves_link_and_target(
    env: dict[str, str], linked: tuple[Path, Path]
) -> None:
    link, target = linked
    before = digest(target)
    result = bounded(env, "resume", ALIEN, input="another turn\n")
    assert result.returncode == 1
    assert_clean_error(result.stderr)
    assert "symbolic link" in result.stderr
    assert link.is_symlink() and link.readlink() == target and digest(target) == before


def test_a_save_into_a_linked_memory_file_is_refused(linked: tuple[Path, Path], root: Path) -> None:
    from chatcli.errors import StorageError

    link, target = linked
    with pytest.raises(StorageError, match="symbolic link"):
        Store(root).append(ALIEN, [human("more")])
    assert link.is_symlink() and read_memory(root, ALIEN) == [human("linked question")]


# ---------------------------------------------------------------------------------------------
# locks: what saving needs, and doctor checking it


def _lock_is_a_folder(store: Store, sid: str) -> Path:
    lock = store.lock_dir / f"{sid}.lock"
    lock.unlink(missing_ok=True)
    lock.mkdir()
    return lock


def _locks_is_a_file(store: Store, sid: str) -> Path:
    for p in store.lock_dir.iterdir():
        p.unlink()
    store.lock_dir.rmdir()
    store.lock_dir.write_text("")
    return store.lock_dir


def _lock_is_a_link(store: Store, sid: str) -> Path:
    lock = store.lock_dir / f"{sid}.lock"
    lock.unlink(missing_ok=True)
    lock.symlink_to(store.root.parent / "outside-file")
    (store.root.parent / "outside-file").write_text("keep me\n")
    return lock


_LOCKS = [_lock_is_a_folder, _locks_is_a_file, _lock_is_a_link]


@pytest.mark.parametrize("spoil", _LOCKS)
def test_a_save_that_cannot_lock_fails_in_one_line(
    store: Store, env: dict[str, str], spoil
) -> None:
    [sid] = store.ids()
    before = tree_digest(store.root)
    path = spoil(store, sid)
    result = bounded(env, "rename", sid, "new title")
    assert result.returncode == 1
    assert_clean_error(result.stderr)
    assert "not a f" in result.stderr and path.name in result.stderr  # not a folder, not a file
    assert tree_digest(store.root) == before
    assert not (store.root.parent / "outside-file").exists() or (
        (store.root.parent / "outside-file").read_text() == "keep me\n"
    )


@pytest.mark.parametrize("spoil", _LOCKS)
def test_doctor_reports_what_stops_saves(store: Store, env: dict[str, str], spoil) -> None:
    [sid] = store.ids()
    path = spoil(store, sid)
    result = bounded(env, "doctor")
    assert result.returncode == 1, result.stdout
    assert "saves fail" in result.stdout and str(path.relative_to(store.root)) in result.stdout


@pytest.mark.parametrize("folder", ["memory", "meta", "db"])
def test_doctor_reports_a_session_folder_that_is_not_a_folder(
    store: Store, env: dict[str, str], folder: str
) -> None:
    path = store.root / folder
    for p in path.iterdir():
        p.unlink()
    path.rmdir()
    path.write_text("")
    result = bounded(env, "doctor")
    assert result.returncode == 1, result.stdout
    assert "saves fail" in result.stdout and f"{folder} " in result.stdout


# ---------------------------------------------------------------------------------------------
# metadata another tool wrote: fields that are not text, titles of megabytes

_BAD_META = [{"title": 5}, {"model": 5}, {"system": {}}, {"title": ["a"], "model": None}]


@pytest.mark.parametrize("meta", _BAD_META, ids=lambda m: next(iter(m)))
def test_resume_ignores_a_metadata_field_that_is_not_text_with_one_note(
    store: Store, env: dict[str, str], meta: dict
) -> None:
    [sid] = store.ids()
    store.meta_path(sid).write_text(json.dumps(meta))
    before = store.meta_path(sid).read_bytes()
    result = bounded(env, "resume", sid, input="first\nsecond\n")
    assert result.returncode == 0, result.stderr
    assert "echo: first" in result.stdout and "echo: second" in result.stdout
    notes = [line for line in result.stderr.splitlines() if "metadata" in line]
    assert len(notes) == 1 and "is not text" in notes[0], result.stderr
    assert [m["data"]["content"] for m in read_memory(store.root, sid)][1:] == [
        "first",
        "echo: first",
        "second",
        "echo: second",
    ]
    assert store.meta_path(sid).read_bytes() == before  # ignored, not rewritten


@pytest.mark.parametrize("meta", _BAD_META, ids=lambda m: next(iter(m)))
def test_doctor_reports_a_field_that_is_not_text_and_fix_rebuilds_the_file(
    store: Store, env: dict[str, str], meta: dict
) -> None:
    [sid] = store.ids()
    store.meta_path(sid).write_text(json.dumps({**meta, "created": "2026-01-01T00:00:00"}))
    memory = digest(store.memory_path(sid))
    result = bounded(env, "doctor")
    assert result.returncode == 1 and "damaged metadata" in result.stdout
    assert "is not text" in result.stdout
    result = bounded(env, "doctor", "--fix")
    assert result.returncode == 0, result.stdout
    rebuilt = json.loads(store.meta_path(sid).read_text())
    assert rebuilt["created"] == "2026-01-01T00:00:00"
    assert all(isinstance(rebuilt.get(k, ""), str) for k in ("title", "model", "system"))
    assert digest(store.memory_path(sid)) == memory
    assert bounded(env, "doctor").returncode == 0


def test_resume_in_a_terminal_with_non_text_metadata_chats_normally(
    store: Store, env: dict[str, str]
) -> None:
    from test_repl_pty import FIRST_REPLY_TIMEOUT, Term

    [sid] = store.ids()
    store.meta_path(sid).write_text('{"title": 5, "model": 5, "system": {}}')
    term = Term(env, "resume", sid)
    try:
        term.prompt()
        term.send_line("are you there")
        term.expect("echo: are you there", FIRST_REPLY_TIMEOUT)
        term.prompt()
        term.child.sendeof()
        assert term.exit_status() == 0
    finally:
        term.child.close(force=True)
    assert "Traceback" not in term.output() and "unexpected" not in term.output()
    assert term.output().count("is not text") == 3  # one note per bad field, once
    contents = [m["data"]["content"] for m in read_memory(store.root, sid)]
    assert contents == ["hello world", "are you there", "echo: are you there"]


@pytest.mark.slow  # seconds of waiting: the full run (CI) has it
def test_titles_of_megabytes_are_shortened_when_read(root: Path, env: dict[str, str]) -> None:
    (root / "memory").mkdir(parents=True)
    (root / "meta").mkdir()
    big = root / "big-title.json"
    big.write_text(json.dumps({"title": "x" * (2 << 20), "model": "m"}))
    for i in range(1000):
        sid = f"00000000-0000-4000-8000-{i:012d}"
        (root / "memory" / f"{sid}.json").write_text("[]")
        os.link(big, root / "meta" / f"{sid}.json")  # 1,000 titles, 2 MB of disk
    result = bounded(env, "list", "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert len(rows) == 1000 and all(len(r["title"]) <= 1000 for r in rows)
    conn = sqlite3.connect(root / "index.sqlite")
    assert conn.execute("SELECT max(length(title)) FROM sessions").fetchone()[0] <= 1000
    conn.close()
    assert (root / "index.sqlite").stat().st_size < 10 << 20  # not the 2 GB it used to grow to


# ---------------------------------------------------------------------------------------------
# the REPL, the config file and the input history


def test_switch_to_a_fifo_session_refuses_in_one_line_and_the_repl_goes_on(
    store: Store, env: dict[str, str]
) -> None:
    from test_repl_pty import FIRST_REPLY_TIMEOUT, Term

    plant(store.root, "memory", "fifo")
    [sid] = [s for s in store.ids() if s != ALIEN]
    term = Term(env, "resume", sid)
    try:
        term.prompt()
        term.send_line(f"/switch {ALIEN[:8]}")
        term.expect("not a regular file")
        term.prompt()
        term.send_line("still here")
        term.expect("echo: still here", FIRST_REPLY_TIMEOUT)
        term.prompt()
        term.child.sendeof()
        assert term.exit_status() == 0
    finally:
        term.child.close(force=True)


def test_a_config_file_that_is_a_fifo_is_one_clear_error(store: Store, env: dict[str, str]) -> None:
    os.mkfifo(env["CHATCLI_CONFIG"])
    result = bounded(env, "resume", store.ids()[0], input="hi\n")
    assert result.returncode != 0
    assert_clean_error(result.stderr)
    assert "config file" in result.stderr and "not a regular file" in result.stderr


def test_an_input_history_that_is_a_fifo_never_hangs_the_repl(
    store: Store, env: dict[str, str]
) -> None:
    from test_repl_pty import FIRST_REPLY_TIMEOUT, Term

    os.mkfifo(store.root / "input_history")
    term = Term(env, "resume", store.ids()[0])
    try:
        term.expect("input history kept for this run only")
        term.prompt()
        term.send_line("typed")
        term.expect("echo: typed", FIRST_REPLY_TIMEOUT)
        term.prompt()
        term.child.sendeof()
        assert term.exit_status() == 0
    finally:
        term.child.close(force=True)
