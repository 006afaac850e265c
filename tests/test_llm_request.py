"""What goes to the model: always a valid request, whatever the memory file holds, trimmed to a
token budget without breaking tool-call pairs."""

from __future__ import annotations

import langchain_core.messages
import pytest
from langchain_core.messages import (
    AIMessage,
    HumanMessage,
    ToolMessage,
    message_to_dict,
    messages_from_dict,
)
from langchain_core.messages.utils import count_tokens_approximately

from chatcli.llm.request import build, plan
from chatcli.store.messages import MARK


def prepare_messages(history: list[dict], *, system: str | None, budget: int) -> list:
    return build(history, system=system, budget=budget).messages


def _dicts(*messages) -> list[dict]:
    return [message_to_dict(m) for m in messages]


def _call(i: int) -> AIMessage:
    return AIMessage(
        "",
        tool_calls=[
            {
                "name": "run_sql",
                "args": {"query": f"SELECT {i}"},
                "id": f"call_{i}",
                "type": "tool_call",
            }
        ],
    )


def _long_history(turns: int) -> list[dict]:
    messages = []
    for i in range(turns):
        messages += [
            HumanMessage(f"question {i} " + "words " * 40),
            _call(i),
            ToolMessage(f"result {i}", tool_call_id=f"call_{i}"),
            AIMessage(f"answer {i} " + "words " * 40),
        ]
    return _dicts(*messages)


def test_the_system_prompt_always_comes_first() -> None:
    sent = prepare_messages(_dicts(HumanMessage("hi")), system="be brief", budget=1000)
    assert [m.type for m in sent] == ["system", "human"]
    assert sent[0].content == "be brief"


def test_trimming_keeps_the_newest_turns_and_starts_on_a_human_message() -> None:
    history = _long_history(200)
    sent = prepare_messages(history, system="sys", budget=500)
    assert sent[0].type == "system" and sent[1].type == "human"
    assert sent[-1].content.startswith("answer 199")
    assert len(sent) < len(history)


def test_trimming_never_separates_a_tool_call_from_its_result() -> None:
    for budget in range(60, 700, 37):
        sent = prepare_messages(_long_history(30), system=None, budget=budget)
        for i, m in enumerate(sent):
            if m.type == "tool":
                assert sent[i - 1].type == "ai" and sent[i - 1].tool_calls
                assert sent[i - 1].tool_calls[0]["id"] == m.tool_call_id
            if m.type == "ai" and m.tool_calls:
                assert sent[i + 1].type == "tool"


def test_a_newest_turn_over_budget_is_still_sent() -> None:
    sent = prepare_messages(_dicts(HumanMessage("x " * 5000)), system="s", budget=50)
    assert [m.type for m in sent] == ["system", "human"]


def test_dangling_tool_calls_and_orphan_results_are_not_sent() -> None:
    history = _dicts(
        HumanMessage("q"),
        _call(1),
        HumanMessage("again"),
        ToolMessage("orphan", tool_call_id="call_9"),
        AIMessage("a"),
    )
    sent = prepare_messages(history, system=None, budget=10_000)
    assert [(m.type, m.content) for m in sent] == [("human", "again"), ("ai", "a")]


def test_a_huge_history_only_converts_its_tail(monkeypatch: pytest.MonkeyPatch) -> None:
    converted: list[int] = []

    def counting(dicts: list[dict]) -> list:
        converted.append(len(dicts))
        return messages_from_dict(dicts)

    monkeypatch.setattr(langchain_core.messages, "messages_from_dict", counting)
    history = _long_history(2500)  # 10,000 messages
    sent = prepare_messages(history, system=None, budget=2000)
    assert 0 < sum(converted) < 100  # a tail, not all 10,000
    # ... and what is sent is what trimming the whole history would send: the newest whole
    # turns within the budget, one more turn would be over it
    assert sent[0].type == "human"
    assert [m.content for m in sent] == [m["data"]["content"] for m in history[-len(sent) :]]
    assert count_tokens_approximately(sent) <= 2000
    one_more_turn = messages_from_dict(history[-len(sent) - 4 :])
    assert count_tokens_approximately(one_more_turn) > 2000


def _roles(history: list[dict]) -> list[str]:
    return [m["type"] for m in plan(history).messages]


def test_an_unanswered_message_is_left_out_so_roles_alternate() -> None:
    history = _dicts(HumanMessage("server was down"), HumanMessage("retyped"), AIMessage("ok"))
    history += _dicts(HumanMessage("too long " * 9000), HumanMessage("short"))
    sent = prepare_messages(history, system="s", budget=100_000)
    assert [m.content for m in sent[1:]] == ["retyped", "ok", "short"]


def test_an_invalid_tool_call_is_answered_with_an_error_the_model_can_learn_from() -> None:
    bad = AIMessage(
        "",
        invalid_tool_calls=[
            {"name": "run_sql", "args": '{"query": SELECT', "id": "c1", "error": "bad JSON"}
        ],
    )
    sent = prepare_messages(
        _dicts(HumanMessage("q"), bad, HumanMessage("q2")), system=None, budget=10_000
    )
    assert [m.type for m in sent] == ["human", "ai", "tool", "human"]
    assert sent[1].tool_calls[0]["id"] == sent[2].tool_call_id == "c1"
    assert "not valid JSON" in sent[2].content


def test_tool_calls_without_ids_are_given_matching_ones() -> None:
    history = [
        {"type": "human", "data": {"content": "q"}},
        {
            "type": "ai",
            "data": {
                "content": "",
                "invalid_tool_calls": [{"name": "run_sql", "args": "{", "id": None, "error": None}],
            },
        },
        {"type": "human", "data": {"content": "q2"}},
    ]
    sent = prepare_messages(history, system=None, budget=10_000)
    assert sent[1].tool_calls[0]["id"] and sent[1].tool_calls[0]["id"] == sent[2].tool_call_id


def test_empty_assistant_messages_and_leading_non_human_messages_are_dropped() -> None:
    history = _dicts(
        AIMessage("hello from a greeter"),
        ToolMessage("x", tool_call_id="z"),
        HumanMessage("q"),
        AIMessage(""),
        HumanMessage("q2"),
    )
    assert _roles(history) == ["human"]  # q got only an empty reply: q2 stands for it


def test_thinking_is_never_sent_back() -> None:
    ai = AIMessage("answer", additional_kwargs={"reasoning_content": "secret chain"})
    sent = prepare_messages(
        _dicts(HumanMessage("q"), ai, HumanMessage("q2")), system=None, budget=10_000
    )
    assert sent[1].content == "answer" and not sent[1].additional_kwargs


def test_a_retried_reply_is_not_sent_again() -> None:
    old = message_to_dict(AIMessage("old answer"))
    new = message_to_dict(AIMessage("new answer", additional_kwargs={MARK: {"retry_of": 1}}))
    sent = prepare_messages(
        [message_to_dict(HumanMessage("q")), old, new], system=None, budget=10_000
    )
    assert [m.content for m in sent] == ["q", "new answer"]


def test_a_summary_stands_in_for_what_it_covers() -> None:
    from langchain_core.messages import SystemMessage

    history = _dicts(
        HumanMessage("early q"), AIMessage("early a"), HumanMessage("late q"), AIMessage("late a")
    )
    history.append(
        message_to_dict(
            SystemMessage(
                "they talked about early things",
                additional_kwargs={MARK: {"summary": {"covers": 2}}},
            )
        )
    )
    history.append(message_to_dict(HumanMessage("now")))
    sent = prepare_messages(history, system="be brief", budget=10_000)
    assert sent[0].type == "system" and "they talked about early things" in sent[0].content
    assert [m.content for m in sent[1:]] == ["late q", "late a", "now"]
