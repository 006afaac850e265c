"""The chat loop end to end in piped mode: the installed chatcli talking to the loopback server."""

from __future__ import annotations

import socket
from pathlib import Path

from conftest import only_session, read_memory
from fake_openai import FakeOpenAI

from chatcli.store import Store


def test_piped_message_streams_the_reply_and_saves_the_turn(
    root: Path, server: FakeOpenAI, chatcli
) -> None:
    server.reply("Hello **there**, friend.")
    result = chatcli("new", "--title", "greeting", input="hi\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Hello **there**, friend.\n"  # plain text, as streamed
    assert "\x1b" not in result.stdout
    sid = only_session(root)
    memory = read_memory(root, sid)
    assert [m["type"] for m in memory] == ["human", "ai"]
    assert memory[1]["data"]["content"] == "Hello **there**, friend."
    assert memory[1]["data"]["response_metadata"]["finish_reason"] == "stop"
    sent = server.requests[0]
    assert sent["stream"] is True
    assert sent["messages"][-1] == {"role": "user", "content": "hi"}


def test_resume_sends_the_history_and_the_system_prompt(
    example_root: Path, server: FakeOpenAI, chatcli
) -> None:
    sid = "0b7c6a52-3f0e-4a8e-9a57-1f6d2c9e4b11"
    result = chatcli(
        "resume",
        sid[:6],
        "--model",
        "other-model",
        input="and its river?\n",
        CHATCLI_STORAGE=str(example_root),
    )
    assert result.returncode == 0, result.stderr
    sent = server.requests[0]
    assert sent["model"] == "other-model"
    roles = [m["role"] for m in sent["messages"]]
    assert roles == ["system", "user", "assistant", "user", "assistant", "user"]
    assert sent["messages"][1]["content"] == "What is the capital of France?"
    assert len(read_memory(example_root, sid)) == 6


def test_switch_sends_the_other_sessions_history(
    example_root: Path, server: FakeOpenAI, chatcli
) -> None:
    result = chatcli(
        "resume",
        "c3d4e5f6",
        input="first\n/switch 0b7c\nsecond\n",
        CHATCLI_STORAGE=str(example_root),
    )
    assert result.returncode == 0, result.stderr
    first, second = server.requests
    assert [m["content"] for m in first["messages"][1:]] == ["first"]
    assert second["messages"][1]["content"] == "What is the capital of France?"
    assert second["messages"][-1]["content"] == "second"


def test_http_500_is_one_line_and_the_question_is_kept(
    root: Path, server: FakeOpenAI, chatcli
) -> None:
    server.error(500, "model exploded")
    server.error(500, "model exploded")  # the client retries once
    server.reply("fine now")
    result = chatcli("new", input="first try\nsecond try\n")
    assert result.returncode == 1  # the loop went on, but a script must learn a turn failed
    assert "HTTP 500" in result.stderr and "Traceback" not in result.stderr
    assert result.stdout == "fine now\n"
    memory = read_memory(root, only_session(root))
    assert [m["data"]["content"] for m in memory] == ["first try", "second try", "fine now"]


def test_a_dropped_stream_keeps_what_arrived(root: Path, server: FakeOpenAI, chatcli) -> None:
    server.drop("one two three four five six", after_chunks=3)
    result = chatcli("new", input="tell me\n")
    assert "broke off" in result.stderr and "Traceback" not in result.stderr
    memory = read_memory(root, only_session(root))
    assert memory[-1]["type"] == "ai"
    assert memory[-1]["data"]["content"] == "one two three "
    assert memory[-1]["data"]["response_metadata"]["finish_reason"] == "incomplete"


def test_a_stream_ending_without_finish_reason_is_incomplete(
    root: Path, server: FakeOpenAI, chatcli
) -> None:
    server.truncate("half an answer")
    result = chatcli("new", input="tell me\n")
    assert result.returncode == 1  # a script must learn that the reply broke off
    assert "broke off" in result.stderr
    memory = read_memory(root, only_session(root))
    assert memory[-1]["data"]["content"] == "half an answer"
    assert memory[-1]["data"]["response_metadata"]["finish_reason"] == "incomplete"


def test_an_unreachable_server_is_a_clear_error(root: Path, chatcli) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    result = chatcli("new", input="hello?\n", OPENAI_BASE_URL=f"http://127.0.0.1:{port}/v1")
    assert "cannot reach the model server" in result.stderr
    assert "Traceback" not in result.stderr
    memory = read_memory(root, only_session(root))
    assert [m["data"]["content"] for m in memory] == ["hello?"]


def test_slash_commands_in_piped_mode(
    root: Path, server: FakeOpenAI, chatcli, tmp_path: Path
) -> None:
    out = tmp_path / "t.md"
    result = chatcli("new", input=f"/title My chat\n/model m2\nhi\n/frobnicate\n/export {out}\n")
    assert result.returncode == 1  # /frobnicate is unknown
    assert "unknown command /frobnicate" in result.stderr
    assert server.requests[0]["model"] == "m2"
    text = out.read_text()
    assert text.startswith("# My chat") and "## You" in text and "echo: hi" in text
    [row] = Store(root).list_sessions()
    assert row.title == "My chat" and row.model == "m2"


def test_new_and_leave_without_a_message_keeps_no_empty_session(root: Path, chatcli) -> None:
    result = chatcli("new", input="")
    assert result.returncode == 0
    assert Store(root).ids() == []


def test_api_key_is_never_written_to_disk(
    root: Path, server: FakeOpenAI, chatcli, tmp_path: Path
) -> None:
    chatcli("new", input="hi\n/export " + str(root / "x.md") + "\n")
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert b"sk-test-secret-key-1234" not in path.read_bytes(), path


def test_escape_sequences_from_the_model_never_reach_the_terminal_raw(
    root: Path, server: FakeOpenAI, chatcli
) -> None:
    server.reply("evil \x1b]0;pwned\x07 \x1b[2J text")
    result = chatcli("new", input="hi\n")
    assert "\x1b" not in result.stdout and "\x07" not in result.stdout
    memory = read_memory(root, only_session(root))
    assert memory[-1]["data"]["content"] == "evil \x1b]0;pwned\x07 \x1b[2J text"  # stored exactly


def test_a_history_that_starts_with_a_system_message_keeps_it(
    example_root: Path, server: FakeOpenAI, chatcli
) -> None:
    result = chatcli("resume", "5e2d9c1a", input="and now?\n", CHATCLI_STORAGE=str(example_root))
    assert result.returncode == 0, result.stderr
    system = [m for m in server.requests[0]["messages"] if m["role"] == "system"]
    assert [m["content"] for m in system][0].startswith(
        "You answer questions about the user's database."
    )
    assert len(system) == 1


def test_switching_sessions_evicts_the_previous_history(example_root: Path) -> None:
    import gc
    import weakref

    from chatcli import config
    from chatcli.render import Terminal
    from chatcli.repl import Chat

    chat = Chat(Store(example_root), config.Settings(), "unused-key", term=Terminal.in_memory())
    chat.open("0b7c6a52-3f0e-4a8e-9a57-1f6d2c9e4b11")
    before = weakref.ref(chat.session)
    chat.open("5e2d9c1a-7b44-4c0f-8d3e-2a9b6f0c7d22")
    gc.collect()
    assert before() is None  # nothing keeps the first session (and its messages) alive
    assert chat.session.messages[0]["type"] == "system"


def test_sigterm_mid_reply_saves_what_arrived(root: Path, server: FakeOpenAI, env) -> None:
    import signal
    import subprocess
    import time

    from conftest import CHATCLI

    server.reply("word " * 200, delay=0.02)
    proc = subprocess.Popen(
        [CHATCLI, "new"], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    proc.stdin.write("talk\n")
    proc.stdin.flush()
    assert proc.stdout.read(20)  # the reply is streaming
    time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 128 + signal.SIGTERM
    memory = read_memory(root, only_session(root))
    assert memory[-1]["data"]["response_metadata"]["finish_reason"] == "interrupted"
    assert memory[-1]["data"]["content"].startswith("word word")


def test_switching_to_the_open_session_keeps_it(root: Path, server: FakeOpenAI, chatcli) -> None:
    result = chatcli("new", "--title", "fresh", input="/new other\n/switch ")
    assert result.returncode == 1  # "/switch" with no id is a usage error
    assert Store(root).ids() == []  # both unused sessions were forgotten
    chatcli("new", "--title", "fresh", input="hello\n")
    [sid] = Store(root).ids()
    result = chatcli("resume", sid, input=f"/switch {sid[:8]}\nagain\n")
    assert result.returncode == 0, result.stderr
    [row] = Store(root).list_sessions()
    assert row.title == "fresh" and row.messages == 4


def test_a_line_starting_with_a_path_or_two_slashes_is_a_message(
    root: Path, server: FakeOpenAI, chatcli
) -> None:
    result = chatcli("new", input="/etc/hosts: what is it?\n//help me\n/nope\n")
    assert result.returncode == 1  # /nope is unknown: a script learns of it
    sent = [r["messages"][-1]["content"] for r in server.requests]
    assert sent == ["/etc/hosts: what is it?", "/help me"]
    assert "unknown command /nope" in result.stderr


def test_export_never_overwrites_a_file(root: Path, server: FakeOpenAI, chatcli, tmp_path) -> None:
    keep = tmp_path / "keep.md"
    keep.write_text("precious")
    result = chatcli("new", input=f"hi\n/export {keep}\n")
    assert result.returncode == 1 and "file exists" in result.stderr
    assert keep.read_text() == "precious"


def test_an_empty_reply_is_pointed_out(root: Path, server: FakeOpenAI, chatcli) -> None:
    server.reply("")
    result = chatcli("new", input="hi\n")
    assert result.returncode == 0 and "empty reply" in result.stderr
