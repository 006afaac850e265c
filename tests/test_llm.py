"""What goes to the model: trimming to a token budget without breaking tool-call pairs."""

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

from chatcli.llm import prepare_messages


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
    assert [m.type for m in sent] == ["human", "human", "ai"]


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
