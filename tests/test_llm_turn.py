"""The servers people run, through the installed chatcli: each quirk the fake server replays from
a real family (tests/fake_profiles.py cites the sources) ends in a saved, valid conversation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import conversation, human, make_db, new_session, only_session, read_memory
from fake_openai import FakeOpenAI
from langchain_core.messages import messages_from_dict

COUNT = "SELECT count(*) FROM t"


def _roles(request: dict[str, Any]) -> list[str]:
    return [m["role"] for m in request["messages"]]


def _alternate(request: dict[str, Any]) -> bool:
    body = [m["role"] for m in request["messages"] if m["role"] != "system"]
    plain = [r for r in body if r != "tool"]
    return body[0] == "user" and all(a != b for a, b in zip(plain, plain[1:], strict=False))


def _loads(root: Path) -> list[Any]:
    return messages_from_dict(read_memory(root, only_session(root)))


# --- a failed turn never breaks the conversation ---------------------------------------------


def test_after_a_failed_turn_a_strict_template_still_answers(
    root: Path, server: FakeOpenAI, chatcli
) -> None:
    server.profile = "llamacpp-gemma"  # 400 "Conversation roles must alternate" otherwise
    server.error(500, "server overloaded")
    server.error(500, "server overloaded")  # the one retry the client makes
    result = chatcli("new", input="first try\nsecond try\nthird\n")
    assert result.returncode == 1  # the failed line is reported to scripts
    second, third = server.requests[2:]
    assert _alternate(second) and _alternate(third)
    assert second["messages"][-1]["content"] == "second try"
    memory = read_memory(root, only_session(root))
    assert [m["data"]["content"] for m in memory if m["type"] == "human"] == [
        "first try",
        "second try",
        "third",
    ]  # the unanswered message stays in the record


def test_a_session_with_unanswered_messages_written_by_another_tool_still_works(
    root: Path, server: FakeOpenAI, chatcli
) -> None:
    from chatcli.store import Store

    server.profile = "llamacpp-gemma"
    sid = new_session(Store(root), [human("a"), human("b"), *conversation(1), human("c")])
    before = read_memory(root, sid)
    result = chatcli("resume", sid, input="d\n")
    assert result.returncode == 0, result.stderr
    assert _alternate(server.requests[0])
    assert read_memory(root, sid)[: len(before)] == before  # appended to, never rewritten


def test_a_message_over_the_context_is_explained_and_later_turns_work(
    root: Path, server: FakeOpenAI, chatcli
) -> None:
    server.profile = "llamacpp"  # context 4096 "tokens" (a word each), the real 400 body
    huge = "word " * 6000
    result = chatcli("new", input=f"{huge}\nshort question\n")
    assert result.returncode == 1
    assert "too long for the server's context (4096 tokens)" in result.stderr
    assert "Traceback" not in result.stderr
    last = server.requests[-1]
    assert last["messages"][-1]["content"] == "short question"
    assert all(len(m["content"] or "") < 1000 for m in last["messages"])
    assert result.stdout.strip() == "echo: short question"


def test_the_context_size_from_props_trims_a_long_history_before_sending(
    root: Path, server: FakeOpenAI, chatcli
) -> None:
    from chatcli.store import Store

    server.profile = "llamacpp"
    words = "tell me more about the history of this interesting place " * 5  # ~4 chars a token
    long = conversation(200, question="question {i} " + words, answer="answer {i}")
    sid = new_session(Store(root), long)
    result = chatcli("resume", sid, input="newest\n", CHATCLI_CONTEXT_TOKENS="100000")
    assert result.returncode == 0, result.stderr
    [request] = server.requests  # no refusal: it fit the first time
    assert len(request["messages"]) < len(long)
    assert request["messages"][-1]["content"] == "newest"


def test_a_context_refusal_is_retried_once_trimmed_and_said_in_one_line(
    root: Path, server: FakeOpenAI, chatcli
) -> None:
    from chatcli.store import Store

    server.profile = "openai"  # says its context only in the 400
    server.profile = server.profile.__class__(**{**server.profile.__dict__, "n_ctx": 3000})
    words = "tell me more about the history of this interesting place " * 5  # ~4 chars a token
    sid = new_session(Store(root), conversation(100, question="q{i} " + words))
    result = chatcli(
        "resume", sid, input="newest\n", CHATCLI_CONTEXT_TOKENS="100000", CHATCLI_MODEL=server.model
    )
    assert result.returncode == 0, result.stderr
    refused, answered = server.requests
    assert len(answered["messages"]) < len(refused["messages"])
    notes = [line for line in result.stderr.splitlines() if "over the server's context" in line]
    assert len(notes) == 1 and "(3000 tokens)" in notes[0]


# --- tool calls as real servers stream them ----------------------------------------------------


def _db(tmp_path: Path) -> Path:
    return make_db(tmp_path / "data.db")


def test_tool_arguments_that_are_not_json_get_an_error_result_and_the_model_tries_again(
    root: Path, tmp_path: Path, server: FakeOpenAI, chatcli
) -> None:
    server.tool_calls([("run_sql", "SELECT count(*) FROM t")])  # not JSON at all
    server.tool_calls([("run_sql", {"query": COUNT})])
    server.reply("there are 3")
    result = chatcli("new", "--db", str(_db(tmp_path)), input="how many?\n")
    assert result.returncode == 0, result.stderr
    assert "not valid JSON" in result.stderr
    retry = server.requests[1]
    [told] = [m for m in retry["messages"] if m["role"] == "tool"]
    assert told["content"].startswith("error: the arguments were not valid JSON")
    call_ids = [c["id"] for c in retry["messages"][-2]["tool_calls"]]
    assert told["tool_call_id"] in call_ids
    assert result.stdout.splitlines()[-1] == "there are 3"
    assert len(_loads(root)) == 6  # human, bad call, its error, call, result, answer


@pytest.mark.parametrize("profile", ["ollama", "ollama-old", "litellm", "vllm-nofinish"])
def test_parallel_tool_calls_are_neither_lost_nor_merged(
    profile: str, root: Path, tmp_path: Path, server: FakeOpenAI, chatcli
) -> None:
    """Ollama sends every call with index 0; older Ollama and gateways no index and no id;
    LiteLLM and Ollama finish with "stop" after calls; vLLM at times with no finish reason."""
    server.profile = profile
    server.tool_calls([("run_sql", {"query": COUNT}), ("list_tables", {})])
    server.reply("done")
    result = chatcli("new", "--db", str(_db(tmp_path)), input="look\n", CHATCLI_MODEL=server.model)
    assert result.returncode == 0, result.stderr
    follow_up = server.requests[1]
    call = follow_up["messages"][-3]
    assert [c["function"]["name"] for c in call["tool_calls"]] == ["run_sql", "list_tables"]
    assert json.loads(call["tool_calls"][0]["function"]["arguments"]) == {"query": COUNT}
    results = [m for m in follow_up["messages"] if m["role"] == "tool"]
    assert [r["tool_call_id"] for r in results] == [c["id"] for c in call["tool_calls"]]
    assert all(r["tool_call_id"] for r in results)
    assert result.stdout.splitlines()[-1] == "done"


def test_tools_refused_by_the_server_are_explained_and_the_chat_goes_on(
    root: Path, tmp_path: Path, server: FakeOpenAI, chatcli
) -> None:
    server.profile = "llamacpp-nojinja"  # 500 "tools param requires --jinja flag"
    server.profile = server.profile.__class__(**{**server.profile.__dict__, "discovery": None})
    result = chatcli("new", "--db", str(_db(tmp_path)), input="hello\nagain\n")
    assert result.returncode == 0, result.stderr
    assert "--jinja" in result.stderr and "/sql and /schema still work" in result.stderr
    assert result.stderr.count("cannot take tools") == 1
    *refused, answered, second = server.requests  # (the client retries a 500 once)
    assert all("tools" in r for r in refused)
    assert "tools" not in answered and "tools" not in second
    assert result.stdout.splitlines()[0] == "echo: hello"


def test_a_template_without_tools_is_said_once_and_tools_are_not_sent(
    root: Path, tmp_path: Path, server: FakeOpenAI, chatcli
) -> None:
    server.profile = "llamacpp-notools"  # /props: chat_template_caps.supports_tools false
    result = chatcli("new", "--db", str(_db(tmp_path)), input="hello\nagain\n")
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("cannot take tools") == 1
    assert all("tools" not in r for r in server.requests)


# --- what real servers stream besides the answer -----------------------------------------------


@pytest.mark.parametrize("profile", ["deepseek", "vllm", "llamacpp-think"])
def test_thinking_is_stored_apart_and_never_sent_back(
    profile: str, root: Path, server: FakeOpenAI, chatcli
) -> None:
    server.profile = profile  # reasoning_content, reasoning, inline <think>
    server.reply("The answer is 4.", reasoning="2 plus 2 is 4")
    result = chatcli("new", input="2+2?\nthanks\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "The answer is 4."  # piped: the answer only
    memory = read_memory(root, only_session(root))
    reply = memory[1]["data"]
    assert reply["content"] == "The answer is 4."
    assert reply["additional_kwargs"]["reasoning_content"].strip() == "2 plus 2 is 4"
    assert "2 plus 2" not in json.dumps(server.requests[1])
    _loads(root)


def test_all_thinking_and_no_text_is_not_an_empty_reply(
    root: Path, server: FakeOpenAI, chatcli
) -> None:
    server.profile = "deepseek"
    server.reply("", reasoning="hmm, let me think")
    result = chatcli("new", input="?\n")
    assert result.returncode == 0
    assert "empty reply" not in result.stderr


@pytest.mark.parametrize("profile", ["groq", "mistral", "azure"])
def test_refused_stream_options_are_dropped_once_and_remembered(
    profile: str, root: Path, server: FakeOpenAI, chatcli
) -> None:
    server.profile = profile
    result = chatcli("new", input="one\ntwo\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["echo:", "one", "echo:", "two"]
    refused, first, second = server.requests
    assert "stream_options" in refused
    assert "stream_options" not in first and "stream_options" not in second


def test_a_reply_without_finish_reason_that_ended_with_done_is_complete(
    root: Path, server: FakeOpenAI, chatcli
) -> None:
    server.reply("all here", finish=None)  # no finish chunk, but data: [DONE]
    result = chatcli("new", input="hi\n")
    assert result.returncode == 0, result.stderr
    assert "broke off" not in result.stderr
    memory = read_memory(root, only_session(root))
    assert memory[-1]["data"]["response_metadata"]["finish_reason"] == "stop"


def test_a_reply_cut_at_max_tokens_is_marked_everywhere(
    root: Path, server: FakeOpenAI, chatcli
) -> None:
    server.reply("one two three four five six seven eight")
    result = chatcli("new", input="count\n", CHATCLI_MAX_TOKENS="3")
    assert server.requests[0]["max_completion_tokens"] == 3
    assert server.requests[0]["max_tokens"] == 3  # what older local servers read
    assert "cut at the token limit (max_tokens 3)" in result.stderr
    sid = only_session(root)
    assert read_memory(root, sid)[-1]["data"]["response_metadata"]["finish_reason"] == "length"
    exported = chatcli("export", sid)
    assert "reply cut at the token limit" in exported.stdout
    history = chatcli("resume", sid, input="/history\n")
    assert "reply cut at the token limit" in history.stdout


# --- models -------------------------------------------------------------------------------------


def test_models_lists_what_the_server_offers(server: FakeOpenAI, chatcli) -> None:
    server.models = ["llama3:8b", "qwen3:4b"]
    result = chatcli("new", input="/models\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["llama3:8b", "qwen3:4b"]


def test_a_wrong_model_name_gets_the_servers_message_and_what_it_offers(
    server: FakeOpenAI, chatcli
) -> None:
    server.profile = "ollama"
    server.models = ["llama3:8b", "qwen3:4b"]
    result = chatcli("new", "--model", "lama3", input="hi\n")
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert "HTTP 404" in line and "lama3" in line and "llama3:8b, qwen3:4b" in line


@pytest.mark.slow  # seconds of waiting: the full run (CI) has it
def test_a_timeout_says_how_many_tries_were_made(server: FakeOpenAI, chatcli) -> None:
    server.hang(30)
    server.hang(30)
    result = chatcli("new", input="hello?\n", CHATCLI_TIMEOUT="1")
    assert result.returncode == 1
    assert "did not answer within 1 s (2 tries)" in result.stderr


def test_a_reply_that_could_begin_a_think_tag_is_shown_whole(
    root: Path, server: FakeOpenAI, chatcli
) -> None:
    server.reply("<thi")  # held back while it might become <think>, then shown at the end
    result = chatcli("new", input="?\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "<thi\n"
