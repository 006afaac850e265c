"""What the installed chatcli writes to a real terminal (a pty): no raw ESC or C1 control from a
title or a file name ever reaches it; JSON to a terminal escapes C1 too, JSON to a pipe is exact."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pexpect
import pytest
from conftest import CHATCLI, make_db, new_session

# What a hostile title or file name holds: ESC (an OSC title change), CSI and OSC as C1 controls.
HOSTILE = "\x1b]0;PWN\x07 csi\x9b31m osc\x9d0;X\x9c del\x7f"
RAW_CONTROLS = ("\x1b", "\x9b", "\x9d", "\x9c", "\x07")


def _on_a_terminal(env: dict[str, str], *args: str) -> tuple[str, int]:
    """Run chatcli on a pty (stdin, stdout and stderr all the terminal): what it wrote, status."""
    child = pexpect.spawn(
        CHATCLI, list(args), env=env, dimensions=(40, 200), encoding="utf-8", timeout=30
    )
    child.expect(pexpect.EOF)
    output = child.before
    child.close()
    return output, child.exitstatus


def _assert_no_raw_controls(output: str) -> None:
    # Rich styles its own output with CSI sequences: only ESC that chatcli itself emits as
    # "ESC [" ... are allowed; nothing else of the hostile text may arrive raw.
    stripped = re.sub(r"\x1b\[[0-?]*[ -/]*[@-~]", "", output)
    for control in RAW_CONTROLS:
        assert control not in stripped, (control, output)


@pytest.fixture
def hostile_session(root: Path) -> str:
    from chatcli.store import Store

    return new_session(Store(root), [], title="title " + HOSTILE)


def test_list_json_on_a_terminal_escapes_c1_controls(
    env: dict[str, str], hostile_session: str
) -> None:
    output, status = _on_a_terminal(env, "list", "--json")
    assert status == 0
    _assert_no_raw_controls(output)
    assert "\\u009b" in output and "\\u009d" in output
    [row] = json.loads(output)
    assert row["title"] == "title " + HOSTILE  # still the exact value, once parsed


def test_list_json_to_a_pipe_is_exact(chatcli, hostile_session: str) -> None:
    result = chatcli("list", "--json")
    assert result.returncode == 0
    assert "\x9b" in result.stdout and "\\u009b" not in result.stdout
    [row] = json.loads(result.stdout)
    assert row["title"] == "title " + HOSTILE


def test_search_json_on_a_terminal_escapes_c1_controls(env: dict[str, str], root: Path) -> None:
    from chatcli.store import Store

    new_session(
        Store(root),
        [{"type": "human", "data": {"content": "needle"}}],
        title="found " + HOSTILE,
    )
    output, status = _on_a_terminal(env, "search", "--json", "needle")
    assert status == 0
    _assert_no_raw_controls(output)
    [hit] = json.loads(output)
    assert hit["title"] == "found " + HOSTILE


def test_search_json_to_a_pipe_is_exact(chatcli, root: Path) -> None:
    from chatcli.store import Store

    new_session(Store(root), [{"type": "human", "data": {"content": "needle"}}], title=HOSTILE)
    result = chatcli("search", "--json", "needle")
    assert result.returncode == 0
    assert json.loads(result.stdout)[0]["title"] == HOSTILE
    assert "\x9b" in result.stdout


def test_rename_echoes_the_new_title_sanitized(env: dict[str, str], hostile_session: str) -> None:
    output, status = _on_a_terminal(env, "rename", hostile_session, "new " + HOSTILE)
    assert status == 0
    assert "renamed" in output
    _assert_no_raw_controls(output)


def test_attach_db_success_line_sanitizes_the_file_name(
    env: dict[str, str], hostile_session: str, tmp_path: Path
) -> None:
    path = make_db(tmp_path / "data\x1b]0;PWN\x07\x9b.db")
    output, status = _on_a_terminal(env, "attach-db", hostile_session, str(path))
    assert status == 0, output
    assert "attached" in output
    _assert_no_raw_controls(output)


def test_attach_db_again_names_the_kept_copy_sanitized(env: dict[str, str], tmp_path: Path) -> None:
    from chatcli.store import Store

    root = tmp_path / "store\x9d]0;PWN\x07"  # the kept copy's path is inside the storage folder
    sid = new_session(Store(root), [])
    env = {**env, "CHATCLI_STORAGE": str(root)}
    make_db(tmp_path / "a.db")
    _on_a_terminal(env, "attach-db", sid, str(tmp_path / "a.db"))
    output, status = _on_a_terminal(env, "attach-db", sid, str(tmp_path / "a.db"))
    assert status == 0 and "kept" in output, output
    _assert_no_raw_controls(output)


def test_export_to_a_file_sanitizes_its_name_in_the_success_line(
    env: dict[str, str], hostile_session: str, tmp_path: Path
) -> None:
    target = tmp_path / "out\x1b]0;PWN\x07\x9b.md"
    output, status = _on_a_terminal(env, "export", hostile_session, "-o", str(target))
    assert status == 0, output
    assert "exported" in output and target.exists()
    _assert_no_raw_controls(output)


def test_import_with_a_hostile_file_name_fails_without_raw_controls(
    env: dict[str, str], tmp_path: Path
) -> None:
    path = tmp_path / "in\x1b]0;PWN\x07\x9b.json"
    path.write_text("not json")
    output, status = _on_a_terminal(env, "import", str(path))
    assert status != 0
    _assert_no_raw_controls(output)


def test_search_without_a_match_sanitizes_the_words(env: dict[str, str], root: Path) -> None:
    output, status = _on_a_terminal(env, "search", "nothing" + HOSTILE)
    assert status == 1
    _assert_no_raw_controls(output)


def test_doctor_on_a_terminal_shows_a_hostile_file_name_sanitized(
    env: dict[str, str], root: Path
) -> None:
    (root / "memory").mkdir(parents=True)
    (root / "memory" / ".x\x1b]0;PWN\x07\x9b.json.1.tmp").write_text("{}")
    output, _ = _on_a_terminal(env, "doctor")
    _assert_no_raw_controls(output)


def test_list_on_a_terminal_sanitizes_titles(env: dict[str, str], hostile_session: str) -> None:
    output, status = _on_a_terminal(env, "list")
    assert status == 0 and "title" in output
    _assert_no_raw_controls(output)
