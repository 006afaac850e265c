"""The listing (chatcli/store/listing.py): index.sqlite follows memory/ and meta/, whoever writes
them, and is only a cache."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from conftest import PLAIN, human, new_session, settle

from chatcli.store import Store, listing


def _session(store: Store, text: str) -> str:
    return new_session(store, [human(text)])


def _updated(store: Store, sid: str, seconds_ago: float) -> None:
    """Set when a session was last updated (its memory file's mtime)."""
    when = time.time() - seconds_ago
    os.utime(store.memory_path(sid), (when, when))


def test_index_notices_sessions_added_and_changed_by_other_tools(example_root: Path) -> None:
    store = Store(example_root)
    assert len(store.list_sessions()) == 4
    new = "dddddddd-0000-4000-8000-000000000000"
    store.memory_path(new).write_text(json.dumps([human("fresh")]))
    rows = {r.id: r for r in Store(example_root).list_sessions()}
    assert rows[new].title == "fresh"
    # an in-place rewrite (no rename, so the folder's mtime may not move)
    path = store.memory_path(PLAIN)
    data = json.loads(path.read_text()) + [human("again")]
    with open(path, "r+") as f:
        f.write(json.dumps(data))
        f.truncate()
    rows = {r.id: r for r in Store(example_root).list_sessions(limit=50)}  # as `chatcli list`
    assert rows[PLAIN].messages == 5


def test_a_damaged_index_is_rebuilt(example_root: Path) -> None:
    store = Store(example_root)
    store.list_sessions()
    (example_root / "index.sqlite").write_bytes(b"garbage" * 100)
    assert len(Store(example_root).list_sessions()) == 4


def test_listing_works_on_a_read_only_storage_folder(example_root: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root ignores folder permissions")
    example_root.chmod(0o500)
    try:
        assert len(Store(example_root).list_sessions()) == 4
    finally:
        example_root.chmod(0o700)


# Folder checks (chatcli/store/cachedb.py folders_unchanged)


def test_a_session_added_within_the_clock_tick_of_the_last_listing_is_listed(root: Path) -> None:
    store = Store(root)
    first = _session(store, "one")
    folders = [root / name for name in ("memory", "meta", "db")]
    tick = time.time()
    for folder in folders:
        os.utime(folder, (tick, tick))
    assert [r.id for r in store.list_sessions()] == [first]
    second = _session(store, "two")
    for folder in folders:  # a coarse clock (1-2 s on FAT, HFS+): the same mtime as before
        os.utime(folder, (tick, tick))
    assert {r.id for r in store.list_sessions()} == {first, second}


def test_settled_unchanged_folders_are_not_scanned_again(root: Path, monkeypatch) -> None:
    store = Store(root)
    _session(store, "one")
    settle(*(root / name for name in ("memory", "meta", "db")))
    assert len(Store(root).list_sessions()) == 1

    def no_scanning(*args):
        raise AssertionError("scanned again")

    monkeypatch.setattr(listing, "scan_stats", no_scanning)
    assert len(Store(root).list_sessions()) == 1


def test_a_session_rewritten_in_place_moves_up_the_listing(root: Path) -> None:
    store = Store(root)
    older, newer = _session(store, "older"), _session(store, "newer")
    _updated(store, older, 200)
    _updated(store, newer, 100)
    folder = root / "memory"
    settle(folder, root / "meta", root / "db")
    assert [r.id for r in Store(root).list_sessions(limit=10)] == [newer, older]
    st = folder.stat()
    store.memory_path(older).write_text(json.dumps([human("older, rewritten by another tool")]))
    os.utime(folder, ns=(st.st_atime_ns, st.st_mtime_ns))
    rows = Store(root).list_sessions(limit=10)
    assert [(r.id, r.messages) for r in rows] == [(older, 1), (newer, 1)]
