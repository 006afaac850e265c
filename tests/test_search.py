"""Full-text search: `chatcli search`, the search.sqlite index, its catch-up and the save hook."""

from __future__ import annotations

import json
import os
import random
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from conftest import PLAIN, TOOLS, human, invoke, new_session, run_read_only, settle, tree_digest

from chatcli.cli.data import _hit_rows
from chatcli.render import Terminal, print_search_hits
from chatcli.store import Store, search


def _session(store: Store, *texts: str, title: str | None = None) -> str:
    return new_session(store, [human(t) for t in texts], title=title)


def _updated(store: Store, sid: str, seconds_ago: float) -> None:
    """Set when a session was last updated (its memory file's mtime)."""
    when = time.time() - seconds_ago
    os.utime(store.memory_path(sid), (when, when))


# ---------------------------------------------------------------------------------------------
# The command


def test_search_prints_id_title_date_and_snippet(example_root: Path) -> None:
    result = invoke(example_root, "search", "population")
    assert result.exit_code == 0, result.output
    head, snippet = result.stdout.splitlines()[:2]
    assert head.startswith(PLAIN) and "What is the capital of France?" in head
    assert "population" in snippet and "\x1b" not in result.stdout


def test_the_id_found_is_one_resume_accepts(example_root: Path) -> None:
    result = invoke(example_root, "search", "capital")
    found = result.stdout.split()[0]
    assert Store(example_root).resolve(found) == PLAIN


def test_search_json_has_the_documented_fields(example_root: Path) -> None:
    result = invoke(example_root, "search", "--json", "customers")
    assert result.exit_code == 0
    (hit,) = json.loads(result.stdout)
    assert hit["id"] == TOOLS and hit["title"] == "How many customers do we have?"
    assert set(hit) == {"id", "title", "updated", "role", "message", "snippet"}
    assert hit["message"] == 4 and hit["role"] == "ai"  # the newest matching message


def test_no_match_exits_1_with_a_note(example_root: Path) -> None:
    result = invoke(example_root, "search", "zeppelin")
    assert result.exit_code == 1
    assert result.stdout == "" and "no session mentions 'zeppelin'" in result.stderr


def test_several_words_must_all_match(example_root: Path) -> None:
    assert invoke(example_root, "search", "capital", "France").exit_code == 0
    assert invoke(example_root, "search", "capital", "customers").exit_code == 1


def test_tool_call_sql_is_searchable(example_root: Path) -> None:
    hits = search.search(Store(example_root), "SELECT")
    assert [(h.id, h.role, h.position) for h in hits] == [(TOOLS, "ai", 2)]
    assert "FROM customers" in hits[0].plain_snippet


def test_search_syntax_in_the_query_is_taken_literally(example_root: Path) -> None:
    for text in ['"', "NEAR(", "capital OR", "-x", "col:umn", "a AND"]:
        result = invoke(example_root, "search", "--", text)
        assert result.exit_code in (0, 1), (text, result.output)
        assert "Traceback" not in result.output


def test_a_query_without_words_is_refused(example_root: Path) -> None:
    result = invoke(example_root, "search", "***")
    assert result.exit_code == 1
    assert "give at least one word" in result.stderr


def test_prefix_and_diacritics(root: Path) -> None:
    store = Store(root)
    sid = _session(store, "Un café au lait, s'il vous plaît")
    assert [h.id for h in search.search(store, "cafe")] == [sid]
    assert [h.id for h in search.search(store, "pla*")] == [sid]


def test_most_recently_updated_first_and_limit(root: Path) -> None:
    store = Store(root)
    ids = [_session(store, f"shared word, session {i}") for i in range(5)]
    for i, sid in enumerate(ids):
        _updated(store, sid, 100 - i)  # ids[4] updated last
    assert [h.id for h in search.search(store, "shared")] == ids[::-1]
    store.append(ids[0], [human("shared again")])
    hits = search.search(store, "shared", limit=2)
    assert [h.id for h in hits] == [ids[0], ids[4]]
    assert (hits[0].position, hits[0].plain_snippet) == (1, "shared again")


def test_the_order_follows_the_updated_time_after_a_restore(root: Path) -> None:
    store = Store(root)
    old, middle, new = (_session(store, f"topic {i}") for i in range(3))
    for sid, age in ((old, 300), (middle, 200), (new, 100)):
        _updated(store, sid, age)
    assert [h.id for h in search.search(store, "topic")] == [new, middle, old]
    store.trash(old)
    assert [h.id for h in search.search(store, "topic")] == [new, middle]
    store.restore(old)  # indexed again last, yet still the oldest session
    assert [h.id for h in search.search(store, "topic")] == [new, middle, old]


def test_the_order_is_exact_for_common_and_rare_words(root: Path) -> None:
    store = Store(root)
    rng = random.Random(7)
    words = {}
    for i in range(40):
        texts = ["common"] * (i % 7 != 3) + ["half"] * (i % 2) + ["rare"] * (i in (2, 5))
        sid = _session(store, "filler", *texts, "filler")
        words[sid] = set(texts)
        _updated(store, sid, rng.randrange(10, 10_000))

    def check() -> None:
        updated = {sid: store.memory_path(sid).stat().st_mtime_ns for sid in words}
        for word in ("common", "half", "rare"):
            matching = [sid for sid in words if word in words[sid]]
            matching.sort(key=lambda sid: (-updated[sid], sid))
            for limit in (1, 3, 10, 50):
                hits = search.search(store, word, limit=limit)
                assert [h.id for h in hits] == matching[:limit], (word, limit)

    check()
    for sid in rng.sample(sorted(words), 8):  # updated now, their matches indexed long ago
        store.append(sid, [human("more filler")])
    check()


def test_the_terminal_gets_highlights_and_a_pipe_plain_text(example_root: Path) -> None:
    hits = search.search(Store(example_root), "Paris")
    styled = Terminal.in_memory(terminal=True, width=100, color_system="standard")
    plain = Terminal.in_memory(terminal=False, width=100)
    rows = _hit_rows(hits, {})
    print_search_hits(styled, rows)
    print_search_hits(plain, rows)
    assert "\x1b[" in styled.stdout.getvalue() and "Paris" in styled.stdout.getvalue()
    assert "\x1b" not in plain.stdout.getvalue() and "Paris" in plain.stdout.getvalue()


def test_control_characters_in_messages_never_reach_the_terminal(root: Path) -> None:
    store = Store(root)
    _session(store, "evil \x1b]0;pwned\x07 title \x1b[2J text")
    term = Terminal.in_memory(terminal=False)
    rows = _hit_rows(search.search(store, "evil"), {})
    print_search_hits(term, rows)
    assert "\x1b" not in term.stdout.getvalue() and "\x07" not in term.stdout.getvalue()


def test_a_long_first_build_is_announced_on_stderr(example_root: Path, monkeypatch) -> None:
    monkeypatch.setattr(search, "_NOTIFY_AT", 2)
    result = invoke(example_root, "search", "--json", "capital")
    assert "indexing 4 sessions for search" in result.stderr
    assert json.loads(result.stdout)[0]["id"] == PLAIN
    assert "indexing" not in invoke(example_root, "search", "capital").stderr


def test_search_never_writes_into_memory_or_db(example_root: Path, chatcli) -> None:
    before = tree_digest(example_root)
    result = chatcli("search", "capital", CHATCLI_STORAGE=str(example_root))
    assert result.returncode == 0 and PLAIN in result.stdout and "\x1b" not in result.stdout
    assert tree_digest(example_root) == before
    assert (example_root / "search.sqlite").stat().st_mode & 0o777 == 0o600


# ---------------------------------------------------------------------------------------------
# Keeping the index current


def test_a_save_is_indexed_by_the_save_itself(root: Path, monkeypatch) -> None:
    store = Store(root)
    sid = _session(store, "first words")
    search.search(store, "first")  # builds search.sqlite
    store.append(sid, [human("a brand new zebra")])

    def no_reading(*args):
        raise AssertionError("the file was read again")

    monkeypatch.setattr(search, "_read_messages", no_reading)
    assert [h.id for h in search.search(store, "zebra")] == [sid]


def test_a_new_session_saved_after_a_search_is_indexed_by_its_save(root: Path) -> None:
    store = Store(root)
    _session(store, "old")
    search.search(store, "old")
    sid = store.create()
    store.append(sid, [human("fresh")])
    conn = sqlite3.connect(root / "search.sqlite")
    assert conn.execute("SELECT count FROM files WHERE id = ?", (sid,)).fetchone() == (1,)


def test_files_written_by_other_tools_are_caught_up(root: Path) -> None:
    store = Store(root)
    _session(store, "mine")
    search.search(store, "mine")
    other = "abcdef01-2345-4678-8abc-def012345678"
    (root / "memory" / f"{other}.json").write_text(json.dumps([human("written elsewhere")]))
    assert [h.id for h in search.search(store, "elsewhere")] == [other]


def test_a_file_rewritten_in_place_is_found_once_the_folder_changes(root: Path) -> None:
    store = Store(root)
    mine = _session(store, "apple pie")
    theirs = _session(store, "plum cake")
    folder = root / "memory"
    settle(folder)
    assert [h.id for h in search.search(store, "apple")] == [mine]
    st = folder.stat()
    # LangChain's FileChatMessageHistory rewrites the file in place: the folder's mtime stays,
    # and a warm search does not stat 10,000 files to notice (its speed target has no room).
    store.memory_path(theirs).write_text(json.dumps([human("plum cake and a quince")]))
    os.utime(folder, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert search.search(store, "quince") == []
    _session(store, "another save")  # any change in the folder brings it in
    assert [h.id for h in search.search(store, "quince")] == [theirs]


def test_a_hit_rewritten_in_place_is_checked_before_it_is_shown(root: Path) -> None:
    store = Store(root)
    sid = _session(store, "apple pie")
    assert search.search(store, "apple")
    folder = root / "memory"
    st = folder.stat()
    # Another tool rewrites the file in place (no rename): the folder's mtime stays.
    store.memory_path(sid).write_text(json.dumps([human("pear tart, longer text")]))
    os.utime(folder, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert search.search(store, "apple") == []
    assert [h.id for h in search.search(store, "pear")] == [sid]


def test_a_damaged_memory_file_is_skipped_and_left_alone(root: Path) -> None:
    store = Store(root)
    sid = _session(store, "fine text")
    bad = root / "memory" / "11111111-1111-4111-8111-111111111111.json"
    bad.write_bytes(b'[{"type": "human", "data": {"content": "fine')
    assert [h.id for h in search.search(store, "fine")] == [sid]
    assert bad.read_bytes() == b'[{"type": "human", "data": {"content": "fine'


def test_a_busy_index_never_fails_or_holds_up_a_save(root: Path) -> None:
    store = Store(root)
    sid = _session(store, "before")
    search.search(store, "before")
    blocker = sqlite3.connect(root / "search.sqlite", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    start = time.perf_counter()
    store.append(sid, [human("during the lock")])
    assert time.perf_counter() - start < 1.0
    blocker.execute("ROLLBACK")
    blocker.close()
    assert [h.id for h in search.search(store, "during")] == [sid]


def test_a_damaged_index_is_rebuilt(root: Path) -> None:
    store = Store(root)
    sid = _session(store, "survivor")
    (root / "search.sqlite").write_bytes(b"this is not a database" * 100)
    store.append(sid, [human("more")])  # the hook must shrug it off
    assert [h.id for h in search.search(store, "survivor")] == [sid]


def test_an_index_that_cannot_be_removed_is_replaced_by_one_in_memory(root: Path) -> None:
    store = Store(root)
    sid = _session(store, "survivor")
    (root / "search.sqlite").mkdir()  # neither a database nor removable
    assert [h.id for h in search.search(store, "survivor")] == [sid]


def test_search_works_on_a_read_only_storage(root: Path, env: dict[str, str]) -> None:
    store = Store(root)
    sid = _session(store, "survivor")
    (root / "search.sqlite").write_bytes(b"this is not a database" * 100)
    result = run_read_only(root, env, "search", "survivor")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(sid) and result.stderr == ""


def test_rebuild_counts_every_session_and_message(example_root: Path) -> None:
    assert search.rebuild(Store(example_root)) == (4, 9)
    assert search.rebuild(Store(example_root)) == (4, 9)


def test_concurrent_searches_and_saves_agree(root: Path) -> None:
    store = Store(root)
    sid = _session(store, "start")
    errors: list[BaseException] = []

    def saver() -> None:
        try:
            for i in range(20):
                store.append(sid, [human(f"token{i}")])
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    thread = threading.Thread(target=saver)
    thread.start()
    while thread.is_alive():
        search.search(store, "start")
    thread.join()
    assert not errors
    for i in range(20):
        assert [h.id for h in search.search(store, f"token{i}")] == [sid]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("hello world", '"hello" "world"'),
        ('say "hi"', '"say" """hi"""'),
        ("data*", '"data"*'),
        ("- * ()", ""),
    ],
)
def test_match_expression_quotes_every_word(text: str, expected: str) -> None:
    assert search.match_expression(text) == expected
