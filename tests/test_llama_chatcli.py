"""The installed chatcli against a real llama-server (tests/llama_server.py builds it): whatever a
real server and a real model do, no turn breaks the conversation and nothing is lost.

The model is a base model (nonsense replies that rarely stop, bounded with -n): these tests assert
on the protocol and the files, never on the wording.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import conversation, make_db, new_session, only_session, read_memory, run
from langchain_core.messages import messages_from_dict
from realserver import TEMPLATES, LlamaServer

pytestmark = pytest.mark.realserver

Factory = Callable[..., LlamaServer]


def _env(env: dict[str, str], srv: LlamaServer) -> dict[str, str]:
    return {**env, "OPENAI_BASE_URL": srv.base_url, "CHATCLI_TIMEOUT": "120"}


def _valid(memory: list[dict[str, Any]]) -> None:
    """Loadable by LangChain, and every tool call in it answered."""
    messages_from_dict(memory)
    answered = {m["data"]["tool_call_id"] for m in memory if m["type"] == "tool"}
    for m in memory:
        for call in m["data"].get("tool_calls") or []:
            assert call["id"] in answered


def test_a_piped_turn_is_saved_and_loadable(
    root: Path, env: dict[str, str], chatcli, llama_server_factory: Factory
) -> None:
    srv = llama_server_factory(ctx=2048, n_predict=12)
    result = chatcli("new", input="Hello there\n", **_env(env, srv))
    assert result.returncode in (0, 1), result.stderr
    assert result.stdout, result.stderr
    assert "Traceback" not in result.stderr
    memory = read_memory(root, only_session(root))
    assert [m["type"] for m in memory] == ["human", "ai"]
    assert memory[1]["data"]["response_metadata"]["finish_reason"] in ("stop", "length")
    if memory[1]["data"]["response_metadata"]["finish_reason"] == "length":
        assert "cut at the token limit" in result.stderr
    _valid(memory)


def test_a_strict_template_answers_after_a_failed_turn(
    root: Path, env: dict[str, str], chatcli, llama_server_factory: Factory
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
    failed = chatcli("new", input="are you there?\n", OPENAI_BASE_URL=dead)
    assert failed.returncode == 1 and "cannot reach the model server" in failed.stderr
    srv = llama_server_factory(ctx=2048, n_predict=8, template=TEMPLATES / "gemma_strict.jinja")
    result = chatcli("resume", "--last", input="now?\n", **_env(env, srv))
    assert "roles must alternate" not in result.stderr, result.stderr
    assert "HTTP 400" not in result.stderr
    memory = read_memory(root, only_session(root))
    assert [m["type"] for m in memory] == ["human", "human", "ai"]  # the failed line kept
    _valid(memory)


def test_a_context_overflow_is_recovered(
    root: Path, env: dict[str, str], chatcli, llama_server_factory: Factory
) -> None:
    from chatcli.store import Store

    # a history far over the context: trimmed to what GET /props says before it is sent
    # (a small context keeps the prompt quick to process on 2 cores)
    small = llama_server_factory(ctx=1024, n_predict=8)
    words = "tell me more about the history of this interesting place " * 4
    sid = new_session(Store(root), conversation(60, question="q{i} " + words))
    result = run(["resume", sid], _env(env, small), input="short one\n", timeout=300)
    assert "HTTP 400" not in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert read_memory(root, sid)[-1]["type"] == "ai"
    # a single message over the context: one line saying what to do, then the chat goes on
    srv = llama_server_factory(ctx=2048, n_predict=8)
    huge = "word " * 5000
    result = run(["resume", sid], _env(env, srv), input=f"{huge}\nand this?\n", timeout=300)
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if "too long" in line]
    assert len(lines) == 1 and "(2048 tokens)" in lines[0], result.stderr
    memory = read_memory(root, sid)
    assert memory[-3]["data"]["content"] == huge  # kept, though never answered
    assert memory[-2]["data"]["content"] == "and this?" and memory[-1]["type"] == "ai"
    _valid(memory)


def test_no_jinja_with_a_database_goes_on_without_tools(
    root: Path, tmp_path: Path, env: dict[str, str], chatcli, llama_server_factory: Factory
) -> None:
    srv = llama_server_factory(ctx=2048, n_predict=8, jinja=False)
    db = make_db(tmp_path / "data.db")
    result = chatcli(
        "new", "--db", str(db), input="how many rows?\n/sql SELECT 1\n", **_env(env, srv)
    )
    assert "--jinja" in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.count("cannot take tools") == 1
    memory = read_memory(root, only_session(root))
    assert [m["type"] for m in memory] == ["human", "ai"]
    _valid(memory)


def test_a_tool_capable_template_and_a_request_for_a_tool(
    root: Path, tmp_path: Path, env: dict[str, str], chatcli, llama_server_factory: Factory
) -> None:
    import llama_server

    srv = llama_server_factory(ctx=4096, n_predict=48, template=llama_server.qwen_template())
    db = make_db(tmp_path / "data.db")
    question = "Use the run_sql tool to count the rows of table t.\nAnd now list the tables.\n"
    result = run(["new", "--db", str(db)], _env(env, srv), input=question, timeout=300)
    assert "Traceback" not in result.stderr and "unexpected" not in result.stderr, result.stderr
    memory = read_memory(root, only_session(root))
    assert [m["data"]["content"] for m in memory if m["type"] == "human"] == [
        "Use the run_sql tool to count the rows of table t.",
        "And now list the tables.",
    ]
    assert memory[-1]["type"] == "ai"
    _valid(memory)
