"""The store's sessions: seed layout, lazy loads, append-only atomic saves, locks, damaged files."""

from __future__ import annotations

import json
import os
import random
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import DAMAGED, PLAIN, TOOLS, assert_clean_error, digest, human
from langchain_core.messages import (
    AIMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
    message_to_dict,
    messages_from_dict,
)

from chatcli.errors import AmbiguousSession, DamagedSession, SessionNotFound
from chatcli.store import Store

EMPTY_FILE = "9a1f3e6b-2c5d-4e7f-8a9b-0c1d2e3f4a55"
EMPTY_ARRAY = "c3d4e5f6-a7b8-4c9d-8e0f-1a2b3c4d5e66"


def _every_kind() -> list:
    return [
        SystemMessage("be brief"),
        HumanMessage("hi ✨ 你好 مرحبا \x1b[31m"),
        AIMessage(
            "",
            tool_calls=[
                {
                    "name": "run_sql",
                    "args": {"query": "SELECT 1"},
                    "id": "call_1",
                    "type": "tool_call",
                }
            ],
            response_metadata={"finish_reason": "tool_calls", "model_name": "m"},
            usage_metadata={"input_tokens": 3, "output_tokens": 4, "total_tokens": 7},
        ),
        ToolMessage("1", tool_call_id="call_1", name="run_sql"),
        AIMessage("done", response_metadata={"finish_reason": "stop"}, id="run-7"),
    ]


def test_every_message_type_round_trips_through_append(root: Path) -> None:
    store = Store(root)
    sid = store.create()
    originals = _every_kind()
    store.append(sid, [message_to_dict(m) for m in originals])
    loaded = messages_from_dict(json.loads(store.memory_path(sid).read_bytes()))
    assert loaded == originals


def test_seed_layout_sessions_load_as_they_are(example_root: Path) -> None:
    store = Store(example_root)
    assert sorted(store.ids()) == sorted([PLAIN, TOOLS, EMPTY_FILE, EMPTY_ARRAY])
    assert len(store.open(PLAIN).messages) == 4
    assert store.open(EMPTY_FILE).messages == []
    assert store.open(EMPTY_ARRAY).messages == []
    assert store.open(PLAIN).title == "What is the capital of France?"
    assert not store.has_db(PLAIN)  # zero-byte .db: nothing attached
    assert store.has_db(TOOLS)


def test_opening_and_listing_never_write_into_memory_or_db(example_root: Path) -> None:
    before = {p: (digest(p), p.stat().st_mtime_ns) for p in example_root.rglob("*") if p.is_file()}
    store = Store(example_root)
    store.list_sessions()
    for sid in store.ids():
        store.open(sid)
    after = {p: (digest(p), p.stat().st_mtime_ns) for p in before}
    assert before == after


def test_append_keeps_every_existing_byte(example_root: Path) -> None:
    store = Store(example_root)
    path = store.memory_path(PLAIN)
    original = path.read_bytes().rstrip()
    store.append(PLAIN, [message_to_dict(HumanMessage("more"))])
    data = path.read_bytes()
    assert data.startswith(original[:-1].rstrip())  # all before the closing bracket is untouched
    assert len(json.loads(data)) == 5


@pytest.mark.parametrize("name", sorted(p.name for p in (DAMAGED / "memory").iterdir()))
def test_damaged_file_is_refused_and_never_rewritten(tmp_path: Path, name: str) -> None:
    store = Store(tmp_path)
    store.ensure()
    path = store.memory_dir / name
    path.write_bytes((DAMAGED / "memory" / name).read_bytes())
    sid = name[:-5]
    before = digest(path)
    with pytest.raises(DamagedSession) as e:
        store.open(sid)
    assert str(path) in str(e.value)
    with pytest.raises(DamagedSession):
        store.append(sid, [message_to_dict(HumanMessage("x"))])
    [row] = store.list_sessions()
    assert row.damaged
    assert digest(path) == before


@pytest.mark.parametrize(
    "ref",
    [
        "../../etc/passwd",
        "/etc/passwd",
        "..",
        "",
        "x" * 40,
        "0b7c6a52-3f0e-4a8e-9a57-1f6d2c9e4b11/../x",
        "ZZZ",
    ],
)
def test_ids_that_are_not_uuids_are_refused_before_any_path_is_built(
    example_root: Path, ref: str
) -> None:
    with pytest.raises(SessionNotFound):
        Store(example_root).resolve(ref)


def test_prefixes_resolve_and_ambiguity_lists_candidates(root: Path) -> None:
    store = Store(root)
    store.ensure()
    a, b = "abcd0000-0000-4000-8000-000000000001", "abcd0000-0000-4000-8000-000000000002"
    for sid in (a, b):
        store.memory_path(sid).write_text("[]")
    assert store.resolve("ABCD0000-0000-4000-8000-000000000001") == a
    assert store.resolve(b[:-1] + "2") == b
    with pytest.raises(AmbiguousSession) as e:
        store.resolve("abcd")
    assert e.value.candidates == [a, b]
    with pytest.raises(SessionNotFound):
        store.resolve("ffff")


def test_files_and_folders_are_private_even_with_a_permissive_umask(root: Path) -> None:
    old = os.umask(0o000)
    try:
        store = Store(root)
        sid = store.create(title="t")
        store.append(sid, [message_to_dict(HumanMessage("x"))])
        store.list_sessions()
    finally:
        os.umask(old)
    for path in [root, *root.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), path


_WRITER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from chatcli.store import Store
    store, sid, tag, n = Store(Path(sys.argv[1])), sys.argv[2], sys.argv[3], int(sys.argv[4])
    for i in range(n):
        store.append(sid, [{"type": "human", "data": {"content": f"{tag}-{i}"}},
                           {"type": "ai", "data": {"content": f"re {tag}-{i}"}}])
        print(i, flush=True)
""")


def test_two_processes_appending_to_one_session_lose_nothing(root: Path) -> None:
    store = Store(root)
    sid = store.create()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(root), sid, tag, "30"], stdout=subprocess.PIPE
        )
        for tag in ("a", "b")
    ]
    for p in procs:
        p.communicate(timeout=60)
        assert p.returncode == 0
    contents = [m["data"]["content"] for m in store.open(sid).messages]
    for tag in ("a", "b"):
        mine = [c for c in contents if c.startswith(f"{tag}-")]
        assert mine == [f"{tag}-{i}" for i in range(30)]
    assert len(contents) == 120


@pytest.mark.slow  # a kill loop: the full run only
def test_kill_9_during_saves_never_tears_or_loses_a_file(root: Path) -> None:
    store = Store(root)
    sid = store.create()
    store.append(sid, [human("x" * 200)] * 2000)
    rng = random.Random(1234)
    count = len(store.open(sid).messages)
    torn = lost = 0
    for _ in range(10):
        p = subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(root), sid, "k", "1000"], stdout=subprocess.PIPE
        )
        p.stdout.readline()  # it is saving now
        time.sleep(rng.uniform(0, 0.2))
        p.send_signal(signal.SIGKILL)
        p.wait()
        try:
            now = len(json.loads(store.memory_path(sid).read_bytes()))
        except ValueError:
            torn += 1
            continue
        lost += now < count
        count = now
    assert (torn, lost) == (0, 0)


def test_a_session_trashed_while_open_is_not_split_by_the_next_save(example_root: Path) -> None:
    store = Store(example_root)
    store.trash(PLAIN)
    with pytest.raises(SessionNotFound, match="removed while open"):
        store.append(PLAIN, [message_to_dict(HumanMessage("late"))])
    assert not store.memory_path(PLAIN).exists()
    store.restore(PLAIN)
    assert len(store.open(PLAIN).messages) == 4


@pytest.mark.parametrize("content", [b'{"title": "t", "db_url": "postgresql://h/d"', b"\xff\xfe"])
def test_metadata_that_cannot_be_parsed_is_never_rewritten(root: Path, chatcli, content) -> None:
    sid = Store(root).create(title="kept")
    meta = root / "meta" / f"{sid}.json"
    meta.write_bytes(content)
    result = chatcli("rename", sid, "new title")
    assert result.returncode != 0
    assert_clean_error(result.stderr)
    assert len(result.stderr.splitlines()) == 1
    assert meta.read_bytes() == content


def test_metadata_that_cannot_be_read_is_never_replaced(root: Path, chatcli) -> None:
    """A FIFO where the metadata file should be is refused (not read, not replaced by a file
    holding only the new model)."""
    sid = Store(root).create(title="kept")
    meta = root / "meta" / f"{sid}.json"
    meta.unlink()
    os.mkfifo(meta)
    result = chatcli("ask", "-s", sid, "--model", "other", "hi")
    assert result.returncode != 0
    assert_clean_error(result.stderr)
    assert stat.S_ISFIFO(os.lstat(meta).st_mode)


def test_a_long_title_is_kept_whole_when_another_field_changes(root: Path, chatcli) -> None:
    """Reading shortens a title of over 1,000 characters; saving the model must not."""
    sid = Store(root).create()
    meta = root / "meta" / f"{sid}.json"
    title = "word " * 400 + "end"
    meta.write_text(json.dumps({"title": title, "db_url": "postgresql://h/d"}))
    result = chatcli("ask", "-s", sid, "--model", "other", "hi")
    assert result.returncode == 0, result.stderr
    saved = json.loads(meta.read_text())
    assert saved == {"title": title, "db_url": "postgresql://h/d", "model": "other"}


def test_a_session_holding_only_a_database_url_is_not_discarded(root: Path) -> None:
    store = Store(root)
    sid = store.create(title="pg")
    store.update_meta(sid, db_url="postgresql://reader@localhost/shop")
    assert store.discard_if_empty(sid) is False
    assert store.read_meta(sid)["db_url"] == "postgresql://reader@localhost/shop"
    assert store.memory_path(sid).exists()


def test_a_session_whose_metadata_cannot_be_parsed_is_not_discarded(root: Path) -> None:
    store = Store(root)
    sid = store.create()
    store.meta_path(sid).write_bytes(b'{"db_url": "postgresql://h/d"')
    assert store.discard_if_empty(sid) is False
    assert store.meta_path(sid).read_bytes() == b'{"db_url": "postgresql://h/d"'


def test_an_unused_session_is_discarded(root: Path) -> None:
    store = Store(root)
    sid = store.create(title="nothing", model="m")
    assert store.discard_if_empty(sid) is True
    assert not store.memory_path(sid).exists() and not store.meta_path(sid).exists()


def test_replacing_or_detaching_a_database_keeps_the_old_copy(example_root: Path) -> None:
    store = Store(example_root)
    old = store.db_path(TOOLS).read_bytes()
    kept = store.detach_db(TOOLS)
    assert not store.has_db(TOOLS)
    assert kept is not None and kept.read_bytes() == old
    with pytest.raises(RuntimeError):
        with store.replacing_db(PLAIN):  # nothing attached: nothing kept
            raise RuntimeError
    assert not (store.trash_dir / "replaced" / f"{PLAIN}.db").exists()
