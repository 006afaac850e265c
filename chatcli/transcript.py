"""Sessions as Markdown transcripts (``/export`` and ``chatcli export``): plain text, no UI."""

from __future__ import annotations

import json
import re
from typing import Any

from .store import message_text

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_ROLES = {"human": "You", "ai": "Assistant", "system": "System", "tool": "Tool result"}
# how a reply that did not end normally is marked wherever it is shown again
FINISH_MARKS = {
    "interrupted": "reply interrupted",
    "incomplete": "reply incomplete: the stream broke off",
    "length": "reply cut at the token limit",
}


def steer_notes(messages: list[dict[str, Any]]) -> dict[int, str]:
    """What /history and exports say beside a message chatcli's marks changed the meaning of:
    a reply /retry replaced, a /compress summary (see storage/README.md)."""
    from .llm.request import replaced_by_retry
    from .store.messages import mark_of

    replaced = "replaced by /retry; no longer sent to the model"
    notes = dict.fromkeys(replaced_by_retry(messages), replaced)
    for i, message in enumerate(messages):
        summary = mark_of(message).get("summary")
        if isinstance(summary, dict) and isinstance(summary.get("covers"), int):
            covers = summary["covers"]
            notes[i] = f"/compress summary of messages 1–{covers}, sent instead of them"
    return notes


def to_markdown(title: str, messages: list[dict[str, Any]]) -> str:
    """A readable transcript: each message under a heading, tool calls and results as code."""
    lines = [f"# {title}", ""]
    notes = steer_notes(messages)
    for i, m in enumerate(messages):
        kind = str(m.get("type", "")).removesuffix("MessageChunk").lower()
        data = m.get("data", {})
        text = message_text(m)
        note = [f"*({notes[i]})*", ""] if i in notes else []
        if kind == "tool":
            lines += [f"### Tool result ({data.get('name') or 'tool'})", "", *note]
            lines += _code(text)
            continue
        heading = "Summary" if i in notes and kind == "system" else _ROLES.get(kind, kind.title())
        lines += [f"## {heading}", "", *note]
        thinking = (data.get("additional_kwargs") or {}).get("reasoning_content")
        if isinstance(thinking, str) and thinking.strip():
            lines += ["<details><summary>Thinking</summary>", "", *_code(thinking)]
            lines += ["</details>", ""]
        if text:
            lines += [_closed_fences(text), ""]
        for call in data.get("tool_calls") or []:
            args = call.get("args") or {}
            lines += [f"Tool call `{call.get('name')}`:", ""]
            if call.get("name") == "run_sql" and "query" in args:
                lines += _code(str(args["query"]), "sql")
            else:
                lines += _code(json.dumps(args, ensure_ascii=False, indent=2), "json")
        finish = (data.get("response_metadata") or {}).get("finish_reason")
        if finish in FINISH_MARKS:
            lines += [f"*({FINISH_MARKS[finish]})*", ""]
    return "\n".join(lines).rstrip() + "\n"


def _code(text: str, lang: str = "") -> list[str]:
    """A fenced block that ``text`` cannot close early: the fence outruns any backticks inside."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return [fence + lang, text, fence, ""]


def _closed_fences(text: str) -> str:
    """A reply cut off inside a code block (Ctrl-C, a broken stream) gets its fence closed, so
    the rest of the transcript is not swallowed into the code."""
    open_fence = None
    for line in text.splitlines():
        match = _FENCE.match(line)
        if not match:
            continue
        if open_fence is None:
            open_fence = match.group(1)
        elif match.group(1)[0] == open_fence[0] and len(match.group(1)) >= len(open_fence):
            open_fence = None
    return text if open_fence is None else f"{text.rstrip()}\n{open_fence}"
