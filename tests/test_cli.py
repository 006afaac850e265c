"""The commands as a user runs them: Typer's CliRunner and the installed ``chatcli`` process."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest
from conftest import (
    DAMAGED,
    PLAIN,
    TOOLS,
    assert_clean_error,
    digest,
    help_commands,
    human,
    invoke,
    make_db,
    new_session,
    tree_digest,
)
from typer.testing import CliRunner

from chatcli.cli import app


def test_help_explains_every_command() -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    assert {"new", "resume", "list", "attach-db"} <= set(help_commands(result.output))


def test_list_json_has_the_documented_fields(example_root: Path) -> None:
    result = invoke(example_root, "list", "--json")
    assert result.exit_code == 0
    rows = {r["id"]: r for r in json.loads(result.stdout)}
    assert set(rows[PLAIN]) >= {"id", "title", "messages", "updated", "db"}
    assert rows[PLAIN]["messages"] == 4
    assert rows[PLAIN]["db"] is None  # zero-byte .db: nothing attached
    assert rows[TOOLS]["db"].endswith(f"{TOOLS}.db")


def test_list_is_newest_first_and_limited(root: Path, chatcli) -> None:
    from chatcli.store import Store

    store = Store(root)
    ids = [store.create(title=f"s{i}") for i in range(5)]
    for i, sid in enumerate(ids):  # make their order unambiguous
        store.append(sid, [human(f"m{i}")])
    rows = json.loads(chatcli("list", "--json", "-n", "3").stdout)
    assert [r["title"] for r in rows] == ["s4", "s3", "s2"]
    table = chatcli("list", "-n", "2").stdout
    assert "s4" in table and "s2" not in table and "2 of 5" in table


def test_list_plain_output_has_no_escape_codes(example_root: Path, chatcli) -> None:
    out = chatcli("list", CHATCLI_STORAGE=str(example_root)).stdout
    assert "\x1b" not in out
    assert "What is the capital" in out


def test_list_cuts_cjk_titles_at_the_same_width_as_latin_ones(root: Path) -> None:
    from rich.cells import cell_len

    from chatcli.store import Store

    store = Store(root)
    new_session(store, [human("東京" * 50)])  # a title taken from the first message
    new_session(store, [human("x" * 100)])
    new_session(store, [human("hi")], title="大阪" * 50)
    lines = invoke(root, "list").stdout.splitlines()[2:-1]  # between the header and the note
    widths = sorted(cell_len(line.split()[1]) for line in lines)  # no title has a space
    assert len(widths) == 3 and 59 <= min(widths) and max(widths) <= 60  # never twice the room


def test_list_marks_damaged_files_and_still_succeeds(tmp_path: Path, chatcli) -> None:
    root = tmp_path / "damaged"
    shutil.copytree(DAMAGED, root)
    before = tree_digest(root)
    result = chatcli("list", CHATCLI_STORAGE=str(root))
    assert result.returncode == 0
    assert result.stdout.count("DAMAGED") == 4
    assert tree_digest(root) == before


def test_list_never_writes_into_memory_or_db(example_root: Path, chatcli) -> None:
    before = tree_digest(example_root)
    chatcli("list", CHATCLI_STORAGE=str(example_root))
    chatcli("list", "--json", CHATCLI_STORAGE=str(example_root))
    assert tree_digest(example_root) == before


@pytest.mark.parametrize("ref", ["../../etc/passwd", "/etc/passwd", "..", "nope"])
def test_resume_refuses_what_is_not_a_session(example_root: Path, chatcli, ref: str) -> None:
    result = chatcli("resume", ref, CHATCLI_STORAGE=str(example_root))
    assert result.returncode != 0
    assert_clean_error(result.stderr)


def test_resume_of_a_damaged_file_names_it_and_leaves_it(tmp_path: Path, chatcli) -> None:
    root = tmp_path / "damaged"
    shutil.copytree(DAMAGED, root)
    before = tree_digest(root)
    result = chatcli("resume", "1111", CHATCLI_STORAGE=str(root), input="hello\n")
    assert result.returncode == 1
    assert (
        "damaged" in result.stderr and "11111111-1111-4111-8111-111111111111.json" in result.stderr
    )
    assert len(result.stderr.strip().splitlines()) == 1
    assert tree_digest(root) == before


def test_ambiguous_prefix_lists_the_candidates(root: Path, chatcli) -> None:
    (root / "memory").mkdir(parents=True)
    for sid in ("abcd0000-0000-4000-8000-000000000001", "abcd0000-0000-4000-8000-000000000002"):
        (root / "memory" / f"{sid}.json").write_text("[]")
    result = chatcli("resume", "abcd")
    assert result.returncode == 2
    assert "matches 2 sessions" in result.stderr
    assert "abcd0000-0000-4000-8000-000000000002" in result.stderr


def test_resume_last_needs_a_session(chatcli) -> None:
    result = chatcli("resume", "--last")
    assert result.returncode != 0
    assert "no sessions yet" in result.stderr


def test_attach_db_copies_and_never_touches_the_original(
    example_root: Path, tmp_path: Path, chatcli
) -> None:
    src = make_db(tmp_path / "data.db")
    before = digest(src)
    result = chatcli("attach-db", PLAIN[:8], str(src), CHATCLI_STORAGE=str(example_root))
    assert result.returncode == 0, result.stderr
    copy = example_root / "db" / f"{PLAIN}.db"
    assert sqlite3.connect(copy).execute("SELECT count(*) FROM t").fetchone() == (3,)
    assert digest(src) == before
    listed = {
        r["id"]: r
        for r in json.loads(chatcli("list", "--json", CHATCLI_STORAGE=str(example_root)).stdout)
    }
    assert listed[PLAIN]["db"] == str(copy)


@pytest.mark.parametrize("kind", ["missing", "directory", "text", "garbage", "empty"])
def test_attach_db_refuses_bad_files_and_keeps_the_old_attachment(
    example_root: Path, tmp_path: Path, chatcli, kind: str
) -> None:
    bad = tmp_path / "bad.db"
    if kind == "directory":
        bad.mkdir()
    elif kind == "text":
        bad.write_text("just some notes\n")
    elif kind == "garbage":
        bad.write_bytes(b"SQLite format 3\x00" + b"\xff" * 2000)
    elif kind == "empty":
        bad.write_bytes(b"")
    before = tree_digest(example_root)
    result = chatcli("attach-db", TOOLS, str(bad), CHATCLI_STORAGE=str(example_root))
    assert result.returncode != 0
    assert_clean_error(result.stderr)
    assert len(result.stderr.strip().splitlines()) == 1
    assert tree_digest(example_root) == before


def test_attach_db_to_an_unknown_session_is_refused(
    example_root: Path, tmp_path: Path, chatcli
) -> None:
    src = make_db(tmp_path / "data.db")
    result = chatcli("attach-db", "ffffffff", str(src), CHATCLI_STORAGE=str(example_root))
    assert result.returncode == 2
    assert "no session" in result.stderr


def test_new_without_api_key_creates_nothing(root: Path, chatcli) -> None:
    result = chatcli("new", OPENAI_API_KEY="", input="hi\n")
    assert result.returncode != 0
    assert "OPENAI_API_KEY" in result.stderr
    assert not (root / "memory").exists() or not list((root / "memory").iterdir())


def test_new_with_a_bad_db_creates_nothing(root: Path, tmp_path: Path, chatcli) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    result = chatcli("new", "--db", str(tmp_path / "notes.txt"), input="hi\n")
    assert result.returncode != 0
    assert not (root / "memory").exists() or not list((root / "memory").iterdir())
