"""The REPL in a real pseudo-terminal: the installed chatcli driven by pexpect, keys typed as a user
types them, against the loopback model server."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest
from conftest import CHATCLI, PLAIN, only_session, read_memory
from fake_openai import FakeOpenAI

TIMEOUT = 10
# The first turn also waits for the background import of langchain_openai (~2 s, more when the
# machine is busy).
FIRST_REPLY_TIMEOUT = 20
# prompt_toolkit switches bracketed paste on when it starts reading a line, then draws "› " (the
# space as a cursor move). Matching both tells a live prompt from a "›" in replayed history.
PROMPT = r"\x1b\[\?2004h[^›]*›"
# prompt_toolkit asks where the cursor is at each prompt (it draws the bottom toolbar only once
# it knows); pexpect is no terminal, so Term.expect answers.
CPR_REQUEST = "\x1b\\[6n"
ROWS = 40
UP = "\x1b[A"
ESC_ENTER = "\x1b\r"
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[=>()][0-9A-B]?")


class Term:
    """A chatcli process on a 40x100 pty, with everything it wrote kept for assertions."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.child = pexpect.spawn(
            CHATCLI, list(args), env=env, dimensions=(ROWS, 100), encoding="utf-8", timeout=TIMEOUT
        )
        self._seen: list[str] = []

    def expect(self, pattern: str | type[pexpect.EOF], timeout: float = TIMEOUT) -> None:
        """Wait for ``pattern``, answering cursor-position requests as a terminal would."""
        while self.child.expect([CPR_REQUEST, pattern], timeout=timeout) == 0:
            self._seen.append(self.child.before)
            row = min(ROWS, self.output().count("\n") + 1)  # roughly where the cursor is
            self.child.send(f"\x1b[{row};1R")
        self._seen.append(self.child.before)
        if isinstance(self.child.after, str):
            self._seen.append(self.child.after)

    def prompt(self, timeout: float = TIMEOUT) -> None:
        self.expect(PROMPT, timeout)

    def send_line(self, text: str) -> None:
        self.child.send(text + "\r")

    def output(self) -> str:
        """Everything read so far with escape sequences removed (text as it reached the screen)."""
        return _ANSI.sub("", self.raw())

    def raw(self) -> str:
        return "".join(self._seen)

    def exit_status(self) -> int | None:
        self.expect(pexpect.EOF)
        self.child.close()
        return self.child.exitstatus


@pytest.fixture
def term(env: dict[str, str]) -> Iterator[Term]:
    t = Term(env, "new", "--title", "pty test")
    t.prompt()
    yield t
    t.child.close(force=True)


def _memory(root: Path) -> list[dict]:
    return read_memory(root, only_session(root))


def _user_messages(server: FakeOpenAI) -> list[str]:
    """The newest user message of each request the model server received."""
    return [r["messages"][-1]["content"] for r in server.requests]


def test_a_typed_message_streams_a_markdown_reply_and_saves_the_turn(
    term: Term, server: FakeOpenAI, root: Path
) -> None:
    server.reply("Hello **bold** friend, and `code`.")
    term.send_line("hi there")
    term.expect("friend", FIRST_REPLY_TIMEOUT)
    term.prompt()
    shown = term.output().split("hi there", 1)[1]
    assert "bold" in shown and "**" not in shown and "`" not in shown
    memory = _memory(root)
    assert [(m["type"], m["data"]["content"]) for m in memory] == [
        ("human", "hi there"),
        ("ai", "Hello **bold** friend, and `code`."),
    ]


def test_ctrl_c_while_streaming_keeps_the_partial_reply_and_the_repl(
    term: Term, server: FakeOpenAI, root: Path
) -> None:
    text = " ".join(f"word{i}" for i in range(300))
    server.reply(text, delay=0.05)
    term.send_line("a long one please")
    term.expect("word10", FIRST_REPLY_TIMEOUT)
    term.child.sendintr()
    term.expect("interrupted")
    term.prompt()
    partial = _memory(root)[-1]
    assert partial["type"] == "ai"
    assert partial["data"]["response_metadata"]["finish_reason"] == "interrupted"
    assert partial["data"]["content"].strip() and text.startswith(partial["data"]["content"])
    # The tty's echo of "^C" would move the cursor under the live display, which then erases
    # the wrong lines and leaves a stale copy of the reply on screen.
    assert "^C" not in term.output() and "Traceback" not in term.output()
    term.send_line("still there?")
    term.expect("echo: still there?")
    term.prompt()
    assert _memory(root)[-1]["data"]["content"] == "echo: still there?"


def test_ctrl_c_at_an_empty_prompt_once_only_shows_a_hint(term: Term) -> None:
    term.child.sendcontrol("c")
    term.expect("Ctrl-C again")
    term.prompt()
    assert term.child.isalive()


def test_ctrl_c_twice_at_an_empty_prompt_leaves_with_status_0(term: Term) -> None:
    term.child.sendcontrol("c")
    term.expect("Ctrl-C again")
    term.prompt()
    term.child.sendcontrol("c")
    assert term.exit_status() == 0


def test_ctrl_c_on_a_line_with_text_clears_the_line(term: Term, server: FakeOpenAI) -> None:
    term.child.send("a draft I regret")
    term.child.sendcontrol("c")
    term.send_line("the real question")
    term.expect("echo: the real question", FIRST_REPLY_TIMEOUT)
    term.prompt()
    assert _user_messages(server) == ["the real question"]
    assert "Ctrl-C again" not in term.output()


def test_ctrl_d_leaves_with_status_0(term: Term) -> None:
    term.child.sendcontrol("d")
    assert term.exit_status() == 0


def test_esc_enter_inserts_a_newline_into_one_message(term: Term, server: FakeOpenAI) -> None:
    term.child.send("line one" + ESC_ENTER + "line two")
    term.send_line("")
    term.expect("echo: line one", FIRST_REPLY_TIMEOUT)
    term.prompt()
    assert _user_messages(server) == ["line one\nline two"]


def test_resume_shows_the_last_turns_before_the_prompt(
    env: dict[str, str], example_root: Path
) -> None:
    t = Term({**env, "CHATCLI_STORAGE": str(example_root)}, "resume", PLAIN[:8])
    try:
        t.prompt()
        shown = t.output()
        assert "What is the capital of France?" in shown
        assert "The capital of France is Paris." in shown  # rendered: no ** left
        assert shown.index("And its population?") < shown.index("2.1 million")
    finally:
        t.child.close(force=True)


def test_http_500_prints_one_red_line_and_the_next_message_works(
    term: Term, server: FakeOpenAI
) -> None:
    server.error(500, "model exploded")
    server.error(500, "model exploded")  # the client retries once
    term.send_line("first try")
    term.expect("HTTP 500", FIRST_REPLY_TIMEOUT)
    term.prompt()
    assert re.search(r"\x1b\[[0-9;]*31m[^\x1b]*chatcli: error: [^\n]*HTTP 500", term.raw())  # red
    assert term.output().count("chatcli: error") == 1
    assert "Traceback" not in term.output()
    term.send_line("second try")
    term.expect("echo: second try")
    term.prompt()


def test_up_arrow_brings_back_a_message_the_server_refused(term: Term, server: FakeOpenAI) -> None:
    server.error(500)
    server.error(500)
    term.send_line("please answer")
    term.expect("HTTP 500", FIRST_REPLY_TIMEOUT)
    term.prompt()
    term.child.send(UP)
    term.send_line("")
    term.expect("echo: please answer")
    term.prompt()
    assert _user_messages(server)[-1] == "please answer"


def test_an_unknown_command_prints_a_hint_and_sends_nothing(term: Term, server: FakeOpenAI) -> None:
    term.send_line("/foo")
    term.expect("unknown command /foo")
    term.prompt()
    assert "/help" in term.output().split("unknown command /foo", 1)[1]
    assert server.requests == []


def test_help_lists_the_commands(term: Term) -> None:
    term.send_line("/help")
    term.expect("/schema")
    term.prompt()
    shown = term.output().split("/help", 1)[1]
    for command in ("/exit", "/new", "/switch", "/history", "/export", "/attach", "/sql"):
        assert command in shown


def test_typing_a_slash_lists_matching_commands(term: Term) -> None:
    term.child.send("/sw")
    term.expect("open another session")  # /switch's help text, in the completion menu
    term.child.sendcontrol("u")


def test_exit_command_leaves_with_status_0(term: Term) -> None:
    term.send_line("/exit")
    assert term.exit_status() == 0


def test_bottom_toolbar_shows_title_and_model(env: dict[str, str]) -> None:
    t = Term(env, "new", "--title", "Toolbar check", "--model", "tb-model-7")
    try:
        t.prompt()
        t.expect("Toolbar check · tb-model-7")  # drawn below the prompt line, in reverse video
    finally:
        t.child.close(force=True)
