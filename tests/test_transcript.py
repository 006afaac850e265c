"""Markdown transcripts stay well-formed whatever the messages hold."""

from __future__ import annotations

from conftest import ai, human

from chatcli.transcript import to_markdown


def test_a_reply_cut_inside_a_code_block_gets_its_fence_closed() -> None:
    md = to_markdown(
        "t",
        [
            ai("look:\n```python\nprint(1)", "interrupted"),
            human("next"),
        ],
    )
    assert "print(1)\n```\n\n*(reply interrupted)*" in md
    assert md.count("```") == 2 and "## You\n\nnext" in md


def test_tool_results_with_backticks_cannot_end_their_block_early() -> None:
    tool = {"type": "tool", "data": {"content": "a ``` b", "name": "run_sql", "tool_call_id": "c"}}
    md = to_markdown("t", [tool])
    assert "````\na ``` b\n````" in md


def test_sql_tool_calls_are_shown_as_sql() -> None:
    call = {"name": "run_sql", "args": {"query": "SELECT 1"}, "id": "c"}
    md = to_markdown("t", [{"type": "ai", "data": {"content": "", "tool_calls": [call]}}])
    assert "Tool call `run_sql`:\n\n```sql\nSELECT 1\n```" in md
