"""Steering a conversation through the installed chatcli against the loopback server: tokens in
sight, /compress, /retry and /fork, read from the request bodies the server received and the
memory files on disk."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    TOOLS,
    conversation,
    digest,
    new_session,
    only_session,
    read_memory,
    sqlite_dump,
    tree_digest,
)
from fake_openai import FakeOpenAI
from langchain_core.messages import messages_from_dict

from chatcli.store import Store

USAGE_LINE = re.compile(r"^(≈?)(\d+) in · ≈?(\d+) out$", re.M)


def _contents(request: dict[str, Any]) -> list[tuple[str, str]]:
    return [(m["role"], str(m.get("content") or "")) for m in request["messages"]]


def _sent_text(request: dict[str, Any]) -> str:
    return "\n".join(text for _, text in _contents(request))


def _list_row(chatcli: Any, sid: str) -> dict[str, Any]:
    rows = json.loads(chatcli("list", "--json").stdout)
    return next(r for r in rows if r["id"] == sid)


def _session(root: Path, messages: list[dict[str, Any]], title: str = "long talk") -> str:
    return new_session(Store(root), messages, title=title)


# -- tokens ------------------------------------------------------------------------------------


def _in_terminal(env: dict[str, str], lines: list[str], **extra: str) -> str:
    """What a REPL on a pty showed for these lines (each answered before the next is typed)."""
    from test_repl_pty import FIRST_REPLY_TIMEOUT, Term

    t = Term({**env, **extra}, "new", "--title", "tokens")
    try:
        t.prompt()
        for line in lines:
            t.send_line(line)
            t.expect(f"echo: {line}", FIRST_REPLY_TIMEOUT)
            t.prompt()
        return t.output().replace("\r", "")
    finally:
        t.child.close(force=True)


def test_each_reply_shows_the_tokens_the_server_reported(
    env: dict[str, str], server: FakeOpenAI
) -> None:
    shown = _in_terminal(env, ["hello there", "and again"])
    lines = [(int(i), int(o)) for _, i, o in USAGE_LINE.findall(shown)]
    texts = ["echo: hello there", "echo: and again"]
    reported = [FakeOpenAI._usage(r, t) for r, t in zip(server.requests, texts, strict=True)]
    assert lines == [(u["prompt_tokens"], u["completion_tokens"]) for u in reported]
    assert "≈" not in shown


def test_list_json_and_usage_sum_every_reply_of_the_session(
    chatcli: Any, server: FakeOpenAI, root: Path
) -> None:
    result = chatcli("new", input="hello there\nand again\nthird one\n")
    assert result.returncode == 0 and result.stderr == ""  # piped: no tokens line
    texts = ["echo: hello there", "echo: and again", "echo: third one"]
    reported = [FakeOpenAI._usage(r, t) for r, t in zip(server.requests, texts, strict=True)]
    total_in = sum(u["prompt_tokens"] for u in reported)
    total_out = sum(u["completion_tokens"] for u in reported)
    sid = only_session(root)
    row = _list_row(chatcli, sid)
    assert (row["input_tokens"], row["output_tokens"]) == (total_in, total_out)
    assert row["tokens_estimated"] is False
    usage = chatcli("resume", sid, input="/usage\n").stdout
    assert re.search(rf"gpt-4o-mini\s+{total_in}\s+{total_out}\s+{total_in + total_out}", usage)


def test_tokens_are_estimated_and_marked_when_the_server_reports_none(
    env: dict[str, str], chatcli: Any, server: FakeOpenAI, root: Path
) -> None:
    server.profile = "groq"  # refuses stream_options: no usage comes back
    [(approx, _, _)] = USAGE_LINE.findall(_in_terminal(env, ["hello there"]))
    assert approx == "≈"
    sid = only_session(root)
    reply = read_memory(root, sid)[-1]["data"]
    assert not reply.get("usage_metadata")  # the server's field stays the server's word
    assert reply["additional_kwargs"]["chatcli"]["usage"]["estimated"] is True
    assert _list_row(chatcli, sid)["tokens_estimated"] is True


def test_the_tokens_line_can_be_switched_off(env: dict[str, str], server: FakeOpenAI) -> None:
    shown = _in_terminal(env, ["hello there"], CHATCLI_SHOW_USAGE="false")
    assert "echo: hello there" in shown and not USAGE_LINE.search(shown)


def test_trimming_is_told_once_per_session_and_points_at_compress(
    chatcli: Any, server: FakeOpenAI
) -> None:
    lines = "".join(f"question {i} " + "word " * 30 + "\n" for i in range(5))
    result = chatcli("new", input=lines, CHATCLI_CONTEXT_TOKENS="100")
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("/compress") == 1
    assert "left out of the request" in result.stderr
    assert len(server.requests[-1]["messages"]) < 1 + 2 * 5  # trimming did leave messages out


# -- /compress ---------------------------------------------------------------------------------


def _long_talk(root: Path) -> str:
    return _session(root, conversation(4, question="question {i} about topic{i}x"))


def test_compress_sends_the_summary_instead_of_what_it_covers(
    chatcli: Any, server: FakeOpenAI, root: Path
) -> None:
    sid = _long_talk(root)
    server.reply("SUMMARY: the user asked about topics.")
    result = chatcli("resume", sid, input="/compress\nnew question\n")
    assert result.returncode == 0, result.stderr
    summarising, after = server.requests
    assert "topic0x" in _sent_text(summarising) and "topic1x" in _sent_text(summarising)
    assert "topic2x" not in _sent_text(summarising)  # the newest 2 turns stay verbatim
    sent = _sent_text(after)
    assert "SUMMARY: the user asked about topics." in after["messages"][0]["content"]
    assert "topic0x" not in sent and "topic1x" not in sent
    assert [c for _, c in _contents(after)[1:]] == [
        "question 2 about topic2x",
        "answer 2",
        "question 3 about topic3x",
        "answer 3",
        "new question",
    ]


def test_compress_only_appends_and_the_file_still_loads_with_every_message(
    chatcli: Any, server: FakeOpenAI, root: Path
) -> None:
    sid = _long_talk(root)
    path = root / "memory" / f"{sid}.json"
    before, old = path.read_bytes(), read_memory(root, sid)
    server.reply("SUMMARY TEXT")
    assert chatcli("resume", sid, input="/compress\n").returncode == 0
    after = path.read_bytes()
    assert after.startswith(before.rstrip()[:-1].rstrip())  # the old bytes up to the "]"
    memory = read_memory(root, sid)
    assert memory[: len(old)] == old and len(memory) == len(old) + 1
    summary = memory[-1]
    assert summary["type"] == "system" and summary["data"]["content"] == "SUMMARY TEXT"
    assert summary["data"]["additional_kwargs"]["chatcli"]["summary"] == {"covers": 4}
    assert len(messages_from_dict(memory)) == len(memory)


def test_history_export_and_search_still_show_what_a_summary_covers(
    chatcli: Any, server: FakeOpenAI, root: Path
) -> None:
    sid = _long_talk(root)
    server.reply("SUMMARY TEXT")
    chatcli("resume", sid, input="/compress\n")
    history = chatcli("resume", sid, input="/history 20\n").stdout
    assert "question 0 about topic0x" in history
    assert "(/compress summary of messages 1–4, sent instead of them)\nSUMMARY TEXT" in history
    exported = chatcli("export", sid).stdout
    assert "question 0 about topic0x" in exported and "## Summary" in exported
    found = chatcli("search", "topic0x", "--json")
    assert [hit["id"] for hit in json.loads(found.stdout)] == [sid]


def test_compress_with_too_few_turns_is_a_clean_error_and_changes_nothing(
    chatcli: Any, server: FakeOpenAI, root: Path
) -> None:
    sid = _session(root, conversation(2))
    before = tree_digest(root)
    result = chatcli("resume", sid, input="/compress\n")
    assert result.returncode == 1
    assert "chatcli: error: nothing to compress" in result.stderr
    assert tree_digest(root) == before and server.requests == []


def test_a_failed_compression_changes_nothing(chatcli: Any, server: FakeOpenAI, root: Path) -> None:
    sid = _long_talk(root)
    before = tree_digest(root)
    server.error(400, "summary refused")  # 4xx: not retried
    result = chatcli("resume", sid, input="/compress\n")
    assert result.returncode == 1 and "summary refused" in result.stderr
    assert tree_digest(root) == before


def test_chatcli_compress_summarises_a_session_without_a_repl(
    chatcli: Any, server: FakeOpenAI, root: Path
) -> None:
    sid = _long_talk(root)
    server.reply("SUMMARY TEXT")
    result = chatcli("compress", sid[:8], "--keep", "1")
    assert result.returncode == 0, result.stderr
    summary = read_memory(root, sid)[-1]
    assert summary["data"]["additional_kwargs"]["chatcli"]["summary"] == {"covers": 6}


def test_auto_compress_summarises_before_a_request_would_leave_messages_out(
    chatcli: Any, server: FakeOpenAI, root: Path
) -> None:
    sid = _session(root, conversation(6, question="question {i} " + "word " * 30))
    server.reply("AUTO SUMMARY")
    result = chatcli(
        "resume", sid, input="next\n", CHATCLI_CONTEXT_TOKENS="200", CHATCLI_AUTO_COMPRESS="on"
    )
    assert result.returncode == 0, result.stderr
    summarising, answering = server.requests
    assert summarising["messages"][0]["content"].startswith("You summarise conversations")
    assert "AUTO SUMMARY" in answering["messages"][0]["content"]
    assert "question 0" not in _sent_text(answering)
    assert "left out of the request" not in result.stderr  # nothing was: the summary fits


def test_auto_compress_is_off_by_default(chatcli: Any, server: FakeOpenAI, root: Path) -> None:
    sid = _session(root, conversation(6, question="question {i} " + "word " * 30))
    result = chatcli("resume", sid, input="next\n", CHATCLI_CONTEXT_TOKENS="200")
    assert result.returncode == 0, result.stderr
    assert len(server.requests) == 1 and "/compress" in result.stderr


# -- /retry ------------------------------------------------------------------------------------


def test_retry_sends_neither_the_replaced_reply_nor_duplicates(
    chatcli: Any, server: FakeOpenAI, root: Path
) -> None:
    server.reply("first try")
    server.reply("second try")
    result = chatcli("new", input="hello there\n/retry\nnext one\n")
    assert result.returncode == 0, result.stderr
    asked, retried, after = server.requests
    assert retried["messages"] == asked["messages"]
    assert [c for _, c in _contents(after)[1:]] == [
        "hello there",
        "second try",
        "next one",
    ]
    memory = read_memory(root, only_session(root))
    assert [m["data"]["content"] for m in memory] == [
        "hello there",
        "first try",
        "second try",
        "next one",
        "echo: next one",
    ]  # the replaced reply stays in the file
    assert memory[2]["data"]["additional_kwargs"]["chatcli"]["retry_of"] == 1
    assert len(messages_from_dict(memory)) == 5


def test_retry_twice_keeps_only_the_newest_reply_current(chatcli: Any, server: FakeOpenAI) -> None:
    for text in ("one", "two", "three"):
        server.reply(text)
    chatcli("new", input="hello there\n/retry\n/retry\nnext\n")
    assert [c for _, c in _contents(server.requests[-1])[1:]] == ["hello there", "three", "next"]


def test_retry_after_a_broken_reply_leaves_the_fragment_out(
    chatcli: Any, server: FakeOpenAI, root: Path
) -> None:
    server.drop("a fragment that breaks off here", after_chunks=2)
    server.reply("a whole answer")
    result = chatcli("new", input="hello there\n/retry\nnext\n")
    assert "broke off" in result.stderr
    _, retried, after = server.requests
    assert _contents(retried)[1:] == [("user", "hello there")]
    assert "fragment" not in _sent_text(after)
    memory = read_memory(root, only_session(root))
    assert memory[1]["data"]["response_metadata"]["finish_reason"] == "incomplete"
    assert memory[2]["data"]["content"] == "a whole answer"


def test_retry_of_an_unanswered_message_just_answers_it(
    chatcli: Any, server: FakeOpenAI, root: Path
) -> None:
    server.error(400, "down")
    chatcli("new", input="hello there\n/retry\n")
    assert _contents(server.requests[1])[1:] == [("user", "hello there")]
    memory = read_memory(root, only_session(root))
    assert [m["data"]["content"] for m in memory] == ["hello there", "echo: hello there"]
    assert "chatcli" not in memory[1]["data"]["additional_kwargs"] or (
        "retry_of" not in memory[1]["data"]["additional_kwargs"]["chatcli"]
    )


def test_retry_with_nothing_said_yet_is_a_clean_error(chatcli: Any, server: FakeOpenAI) -> None:
    result = chatcli("new", input="/retry\n")
    assert result.returncode == 1
    assert "chatcli: error: nothing to retry" in result.stderr and server.requests == []


def test_history_shows_which_reply_is_current(chatcli: Any, server: FakeOpenAI, root: Path) -> None:
    server.reply("first try")
    server.reply("second try")
    chatcli("new", input="hello there\n/retry\n")
    shown = chatcli("resume", only_session(root), input="/history\n").stdout
    assert "(replaced by /retry; no longer sent to the model)\nfirst try\nsecond try" in shown


# -- /fork -------------------------------------------------------------------------------------


def test_fork_copies_exactly_n_messages_and_leaves_the_original_byte_identical(
    chatcli: Any, root: Path
) -> None:
    sid = _session(root, conversation(3), title="Trip")
    before = tree_digest(root, ("memory", "meta", "db"))
    result = chatcli("fork", sid[:8], "--at", "3")
    assert result.returncode == 0, result.stderr
    assert {
        k: v for k, v in tree_digest(root, ("memory", "meta", "db")).items() if k in before
    } == before
    [new] = [s for s in Store(root).ids() if s != sid]
    assert read_memory(root, new) == read_memory(root, sid)[:3]
    assert _list_row(chatcli, new)["title"] == "Trip (fork)"


def test_fork_never_splits_a_tool_call_from_its_results_and_copies_the_database(
    chatcli: Any, example_root: Path
) -> None:
    original = tree_digest(example_root, ("memory", "meta", "db"))
    result = chatcli("fork", TOOLS, "--at", "3")  # message 3 is the call's result
    assert result.returncode == 0, result.stderr
    assert "not 3" in result.stderr
    [new] = [
        s for s in Store(example_root).ids() if s not in {p.split("/")[-1][:-5] for p in original}
    ]
    assert read_memory(example_root, new) == read_memory(example_root, TOOLS)[:2]
    db = example_root / "db"
    assert sqlite_dump(db / f"{new}.db") == sqlite_dump(db / f"{TOOLS}.db")
    after = tree_digest(example_root, ("memory", "meta", "db"))
    assert {k: v for k, v in after.items() if k in original} == original


def test_fork_beyond_the_end_is_a_clean_error_and_creates_nothing(chatcli: Any, root: Path) -> None:
    sid = _session(root, conversation(1))
    before = tree_digest(root, ("memory", "meta", "db"))
    result = chatcli("fork", sid, "--at", "3")
    assert result.returncode == 1
    assert result.stderr.startswith("chatcli: error: the session holds 2 messages")
    assert tree_digest(root, ("memory", "meta", "db")) == before


def test_slash_fork_switches_to_the_new_session(
    chatcli: Any, server: FakeOpenAI, root: Path
) -> None:
    sid = _session(root, conversation(2))
    before = digest(root / "memory" / f"{sid}.json")
    result = chatcli("resume", sid, input="/fork 2\nmore please\n")
    assert result.returncode == 0, result.stderr
    assert digest(root / "memory" / f"{sid}.json") == before
    [new] = [s for s in Store(root).ids() if s != sid]
    assert [m["data"]["content"] for m in read_memory(root, new)] == [
        "question 0",
        "answer 0",
        "more please",
        "echo: more please",
    ]
    assert [c for _, c in _contents(server.requests[0])[1:]] == [
        "question 0",
        "answer 0",
        "more please",
    ]


@pytest.fixture
def attached(root: Path, tmp_path: Path) -> str:
    """A session with a two-turn talk and an attached database copy."""
    sid = _session(root, conversation(2))
    db = tmp_path / "src.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    from chatcli.sql import copy_database

    copy_database(db, Store(root).db_path(sid))
    return sid


def test_slash_fork_copies_the_attached_database(
    chatcli: Any, server: FakeOpenAI, root: Path, attached: str
) -> None:
    result = chatcli("resume", attached, input="/fork\n")
    assert result.returncode == 0, result.stderr
    assert "copy of the attached database" in result.stderr
    [new] = [s for s in Store(root).ids() if s != attached]
    assert sqlite_dump(root / "db" / f"{new}.db") == sqlite_dump(root / "db" / f"{attached}.db")
    assert len(read_memory(root, new)) == 4


# -- in a terminal -----------------------------------------------------------------------------


def test_ctrl_c_during_a_compression_leaves_every_file_byte_identical(
    env: dict[str, str], server: FakeOpenAI, root: Path
) -> None:
    from test_repl_pty import FIRST_REPLY_TIMEOUT, Term

    sid = _long_talk(root)
    before = tree_digest(root, ("memory", "meta", "db"))
    server.reply("A SUMMARY THAT NEVER ENDS " * 200, delay=0.05)
    t = Term(env, "resume", sid)
    try:
        t.prompt()
        t.send_line("/compress")
        t.expect("summarising messages 1–4")
        assert server.wait_for_requests(1, timeout=FIRST_REPLY_TIMEOUT)
        t.child.sendintr()
        t.expect("interrupted")
        t.prompt()
        assert tree_digest(root, ("memory", "meta", "db")) == before
        t.send_line("still there?")
        t.expect("echo: still there?")
        t.prompt()
        assert "Traceback" not in t.output()
    finally:
        t.child.close(force=True)
    assert len(read_memory(root, sid)) == 8 + 2  # no summary, the new turn


def test_the_toolbar_shows_the_session_tokens_and_how_full_the_context_is(
    env: dict[str, str], server: FakeOpenAI
) -> None:
    from test_repl_pty import FIRST_REPLY_TIMEOUT, Term

    t = Term({**env, "CHATCLI_CONTEXT_TOKENS": "16000"}, "new", "--title", "tokens")
    try:
        t.prompt()
        t.send_line("hello there")
        t.expect("echo: hello there", FIRST_REPLY_TIMEOUT)
        t.expect(r"\d+ in · \d+ out · ctx \d+/16k")
    finally:
        t.child.close(force=True)


def test_forking_an_empty_session_is_a_clean_error(chatcli: Any, root: Path) -> None:
    sid = Store(root).create(title="empty")
    result = chatcli("fork", sid)
    assert result.returncode == 1
    assert result.stderr.startswith("chatcli: error: nothing to fork")
    assert Store(root).ids() == [sid]


@pytest.mark.parametrize("fails", ["append", "update_meta"])
def test_an_interrupted_fork_of_a_postgres_session_leaves_no_session(
    root: Path, monkeypatch: pytest.MonkeyPatch, fails: str
) -> None:
    from chatcli.store.layout import URL_KEY

    store = Store(root)
    sid = store.create(title="t", model="m", system=None)
    store.append(sid, [{"type": "human", "data": {"content": "hi", "type": "human"}}])
    store.update_meta(sid, **{URL_KEY: "postgresql://u@h/db"})

    def interrupted(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(Store, fails, interrupted)
    with pytest.raises(KeyboardInterrupt):
        store.fork(sid)
    monkeypatch.undo()
    assert store.ids() == [sid]  # no half fork among the sessions (the trash may keep it)
