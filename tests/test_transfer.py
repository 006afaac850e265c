"""export / import / rename / rm / rm --restore and shell completion of session ids, as a user runs
them: Typer's CliRunner, the installed chatcli as a subprocess, and a real pty for the prompt."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pexpect
import pytest
from conftest import CHATCLI, PLAIN, TOOLS, digest, help_commands, invoke, tree_digest
from typer.testing import CliRunner

from chatcli.cli import app
from chatcli.store import Store

OPENAI_CHAT = [
    {"role": "system", "content": "You answer questions about the user's database."},
    {"role": "user", "content": "How many orders?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_9",
                "type": "function",
                "function": {
                    "name": "run_sql",
                    "arguments": '{"query": "SELECT count(*) FROM orders"}',
                },
            }
        ],
    },
    {"role": "tool", "tool_call_id": "call_9", "content": "count(*)\n12"},
    {"role": "assistant", "content": "There are **12** orders."},
]


USER_FILES = ("memory", "db", "meta")  # what rm, restore and a refused import must keep intact


def _sessions(root: Path) -> list[str]:
    return sorted(Store(root).ids())


def test_help_lists_the_new_commands() -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert {"search", "export", "import", "rename", "rm"} <= set(help_commands(result.output))
    assert "--install-completion" in result.output


# ---------------------------------------------------------------------------------------------
# export


def test_export_markdown_shows_tool_calls_and_sql(example_root: Path) -> None:
    result = invoke(example_root, "export", TOOLS[:8])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("# How many customers do we have?")
    assert "```sql\nSELECT count(*) FROM customers\n```" in result.stdout
    assert "### Tool result (run_sql)" in result.stdout


def test_export_json_is_the_sessions_messages(example_root: Path) -> None:
    result = invoke(example_root, "export", PLAIN, "--format", "json")
    assert result.exit_code == 0
    memory = example_root / "memory" / f"{PLAIN}.json"
    assert json.loads(result.stdout) == json.loads(memory.read_text())


def test_export_of_an_empty_session_is_an_empty_array(example_root: Path) -> None:
    result = invoke(example_root, "export", "9a1f", "-f", "json")  # zero-byte memory file
    assert result.exit_code == 0 and json.loads(result.stdout) == []


def test_export_to_a_file(example_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "t.md"
    result = invoke(example_root, "export", PLAIN, "-o", str(out))
    assert result.exit_code == 0 and result.stdout == ""
    assert "The capital of France is **Paris**." in out.read_text()


def test_export_of_a_damaged_session_is_one_line(tmp_path: Path, chatcli) -> None:
    root = tmp_path / "damaged"
    shutil.copytree(Path(__file__).parent.parent / "storage" / "damaged", root)
    result = chatcli("export", "1111", "-f", "json", CHATCLI_STORAGE=str(root))
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith("chatcli: error:") and len(result.stderr.splitlines()) == 1


# ---------------------------------------------------------------------------------------------
# import


def test_export_then_import_round_trips(example_root: Path, tmp_path: Path) -> None:
    exported = tmp_path / "s.json"
    invoke(example_root, "export", TOOLS, "-f", "json", "-o", str(exported))
    result = invoke(example_root, "import", str(exported), "--title", "copy")
    assert result.exit_code == 0, result.output
    sid = result.stdout.split()[-1]
    store = Store(example_root)
    assert store.load_messages(sid) == store.load_messages(TOOLS)
    assert store.infos([sid])[sid].title == "copy"


def test_import_openai_messages_converts_tool_calls(root: Path, tmp_path: Path) -> None:
    src = tmp_path / "openai.json"
    src.write_text(json.dumps(OPENAI_CHAT))
    result = invoke(root, "import", str(src))
    assert result.exit_code == 0, result.output
    assert "imported 5 messages" in result.stdout
    messages = Store(root).load_messages(result.stdout.split()[-1])
    assert [m["type"] for m in messages] == ["system", "human", "ai", "tool", "ai"]
    (call,) = messages[2]["data"]["tool_calls"]
    assert call == {
        "name": "run_sql",
        "args": {"query": "SELECT count(*) FROM orders"},
        "id": "call_9",
        "type": "tool_call",
    }
    assert messages[3]["data"]["tool_call_id"] == "call_9"
    assert messages[3]["data"]["name"] == "run_sql"

    from langchain_core.messages import messages_from_dict

    loaded = messages_from_dict(messages)  # what resume will do
    assert loaded[2].tool_calls[0]["args"] == {"query": "SELECT count(*) FROM orders"}


def test_import_from_stdin(root: Path) -> None:
    result = invoke(root, "import", "-", input=json.dumps(OPENAI_CHAT[1:2]))
    assert result.exit_code == 0
    assert Store(root).list_sessions()[0].title == "How many orders?"


def test_imported_sessions_are_listed_and_searchable(root: Path, tmp_path: Path, chatcli) -> None:
    src = tmp_path / "openai.json"
    src.write_text(json.dumps(OPENAI_CHAT))
    sid = chatcli("import", str(src), "-t", "Orders").stdout.split()[-1]
    listed = json.loads(chatcli("list", "--json").stdout)
    assert [(r["id"], r["title"], r["messages"]) for r in listed] == [(sid, "Orders", 5)]
    assert json.loads(chatcli("search", "--json", "orders").stdout)[0]["id"] == sid


@pytest.mark.parametrize(
    "content, why",
    [
        (b"", "not valid JSON"),
        (b'{"role": "user"}', "expected a JSON array"),
        (b"[]", "no messages"),
        (b"[1, 2]", "neither a LangChain message"),
        (b'[{"role": "wizard", "content": "hi"}]', "unknown role 'wizard'"),
        (b'[{"role": "tool", "content": "3"}]', "no tool_call_id"),
        (
            b'[{"role": "assistant", "content": null, "tool_calls": [{"id": "c",'
            b' "type": "function", "function": {"name": "f", "arguments": "{oops"}}]}]',
            "not valid JSON",
        ),
        (
            b'[{"type": "human", "data": {"content": "ok"}}, {"type": "alien", "data": {}}]',
            "unknown type 'alien'",
        ),
        (b'[{"type": "tool", "data": {"content": "x"}}]', "has no 'tool_call_id'"),
        (
            b'[{"role": "user", "content": "hi"}, {"type": "human", "data": {"content": "x"}}]',
            "message 1 has unknown role",
        ),
        (b"\xff\xfe garbage", "not valid JSON"),
        # UTF-8 only, as memory files: a later save appends UTF-8 bytes to what was imported
        (json.dumps([{"role": "user", "content": "hi"}]).encode("utf-16"), "not valid JSON"),
    ],
)
def test_a_bad_file_is_one_line_and_creates_nothing(
    root: Path, tmp_path: Path, chatcli, content: bytes, why: str
) -> None:
    src = tmp_path / "bad.json"
    src.write_bytes(content)
    result = chatcli("import", str(src))
    assert result.returncode == 1
    assert result.stderr.startswith("chatcli: error: cannot import: ")
    assert why in result.stderr and len(result.stderr.splitlines()) == 1
    assert _sessions(root) == [] and not (root / "meta").exists()


def test_import_of_a_missing_file_is_one_line(root: Path, tmp_path: Path) -> None:
    result = invoke(root, "import", str(tmp_path / "nope.json"))
    assert result.exit_code == 1 and "cannot read" in result.stderr
    assert _sessions(root) == []


# ---------------------------------------------------------------------------------------------
# rename


def test_rename_changes_the_title_and_not_the_memory_file(example_root: Path) -> None:
    memory = example_root / "memory" / f"{PLAIN}.json"
    before = digest(memory)
    result = invoke(example_root, "rename", PLAIN[:6], "  Paris   facts ")
    assert result.exit_code == 0
    assert Store(example_root).infos([PLAIN])[PLAIN].title == "Paris facts"
    assert (
        json.loads(invoke(example_root, "search", "--json", "capital").stdout)[0]["title"]
        == "Paris facts"
    )
    assert digest(memory) == before


def test_rename_to_nothing_is_refused(example_root: Path) -> None:
    result = invoke(example_root, "rename", PLAIN, "   ")
    assert result.exit_code == 2 and "title is empty" in result.output


# ---------------------------------------------------------------------------------------------
# rm / rm --restore


def test_rm_moves_every_file_to_the_trash_unchanged(example_root: Path) -> None:
    invoke(example_root, "rename", TOOLS, "keep my meta")
    before = tree_digest(example_root, USER_FILES)
    result = invoke(example_root, "rm", "--yes", TOOLS[:8])
    assert result.exit_code == 0, result.output
    trash = example_root / "trash" / TOOLS
    for folder in ("memory", "meta", "db"):
        name = f"{TOOLS}.db" if folder == "db" else f"{TOOLS}.json"
        assert not (example_root / folder / name).exists()
        assert digest(trash / folder / name) == before[f"{folder}/{name}"]
    assert TOOLS not in invoke(example_root, "list", "--json").stdout
    assert invoke(example_root, "search", "customers").exit_code == 1


def test_restore_brings_back_exactly_what_was_removed(example_root: Path) -> None:
    search_first = invoke(example_root, "search", "customers")
    assert search_first.exit_code == 0
    before = tree_digest(example_root, USER_FILES)
    invoke(example_root, "rm", "-y", TOOLS, PLAIN)
    result = invoke(example_root, "rm", "--restore", TOOLS[:4], PLAIN[:4])
    assert result.exit_code == 0, result.output
    assert tree_digest(example_root, USER_FILES) == before
    assert not (example_root / "trash" / TOOLS).exists()
    assert invoke(example_root, "search", "customers").exit_code == 0


def test_restore_refuses_when_the_session_exists_again(example_root: Path) -> None:
    memory = example_root / "memory" / f"{PLAIN}.json"
    invoke(example_root, "rm", "-y", PLAIN)
    memory.write_text("[]")  # a session with that id came back (a backup, another tool)
    result = invoke(example_root, "rm", "--restore", PLAIN)
    assert result.exit_code == 1 and "exists again" in result.stderr
    assert memory.read_text() == "[]"
    assert (example_root / "trash" / PLAIN / "memory" / f"{PLAIN}.json").exists()


def test_rm_with_an_unknown_id_removes_nothing(example_root: Path) -> None:
    before = tree_digest(example_root, USER_FILES)
    result = invoke(example_root, "rm", "-y", PLAIN, "ffffffff")
    assert result.exit_code == 2 and "no session matches 'ffffffff'" in result.stderr
    assert tree_digest(example_root, USER_FILES) == before


def test_restore_of_a_session_not_in_the_trash(example_root: Path) -> None:
    result = invoke(example_root, "rm", "--restore", PLAIN)
    assert result.exit_code == 2 and "no trashed session" in result.stderr


def test_rm_with_piped_input_and_no_yes_refuses(example_root: Path, chatcli) -> None:
    before = tree_digest(example_root, USER_FILES)
    result = chatcli("rm", PLAIN, CHATCLI_STORAGE=str(example_root), input="y\n")
    assert result.returncode == 2
    assert "without confirmation" in result.stderr and "--yes" in result.stderr
    assert tree_digest(example_root, USER_FILES) == before


@pytest.mark.parametrize("answer, removed", [("y", True), ("n", False), ("", False)])
def test_rm_asks_on_a_terminal(
    example_root: Path, env: dict[str, str], answer: str, removed: bool
) -> None:
    child = pexpect.spawn(
        CHATCLI,
        ["rm", PLAIN[:8]],
        encoding="utf-8",
        timeout=20,
        env={**env, "CHATCLI_STORAGE": str(example_root)},
    )
    child.expect(r"What is the capital of France\?")
    child.expect(r"Move 1 session\(s\) to the trash\? \[y/N\]")
    child.sendline(answer)
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == (0 if removed else 1)
    assert (example_root / "memory" / f"{PLAIN}.json").exists() is not removed


# ---------------------------------------------------------------------------------------------
# shell completion


def _complete(chatcli, root: Path, words: str, shell: str = "zsh") -> str:
    cword = len(words.split()) - (not words.endswith(" "))
    extra = (
        {"COMP_WORDS": words, "COMP_CWORD": str(cword)}
        if shell == "bash"
        else {"_TYPER_COMPLETE_ARGS": words}
    )
    result = chatcli(CHATCLI_STORAGE=str(root), _CHATCLI_COMPLETE=f"complete_{shell}", **extra)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_completion_offers_ids_with_titles(example_root: Path, chatcli) -> None:
    out = _complete(chatcli, example_root, "chatcli resume ")
    assert f'"{PLAIN}":"What is the capital of France?"' in out
    assert f'"{TOOLS}":"How many customers do we have?"' in out


@pytest.mark.parametrize("command", ["resume", "attach-db", "export", "rename", "rm"])
def test_every_id_argument_completes_by_prefix(example_root: Path, chatcli, command: str) -> None:
    out = _complete(chatcli, example_root, f"chatcli {command} 5e", shell="bash")
    assert out.split() == [TOOLS]


def test_restore_completes_the_trashed_ids(example_root: Path, chatcli) -> None:
    invoke(example_root, "rm", "-y", PLAIN)
    out = _complete(chatcli, example_root, "chatcli rm --restore ")
    assert PLAIN in out and TOOLS not in out


def test_export_to_an_existing_file_needs_force(example_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "t.md"
    out.write_text("precious")
    args = ["export", "0b7c", "-o", str(out)]
    result = invoke(example_root, *args)
    assert result.exit_code == 1 and "file exists" in result.stderr
    assert out.read_text() == "precious"
    assert invoke(example_root, *args, "--force").exit_code == 0
    assert out.read_text().startswith("# What is the capital")
