"""Sessions as Markdown transcripts (``/export`` and ``chatcli export``): plain text, no UI."""

from __future__ import annotations

import json
from typing import Any

from .store import message_text

_ROLES = {"human": "You", "ai": "Assistant", "system": "System", "tool": "Tool result"}


def to_markdown(title: str, messages: list[dict[str, Any]]) -> str:
    """A readable transcript: each message under a heading, tool calls and results as code."""
    lines = [f"# {title}", ""]
    for m in messages:
        kind = str(m.get("type", "")).removesuffix("MessageChunk").lower()
        data = m.get("data", {})
        text = message_text(m)
        if kind == "tool":
            lines += [f"### Tool result ({data.get('name') or 'tool'})", "", "```", text, "```", ""]
            continue
        lines += [f"## {_ROLES.get(kind, kind.title())}", ""]
        if text:
            lines += [text, ""]
        for call in data.get("tool_calls") or []:
            args = call.get("args") or {}
            if call.get("name") == "run_sql" and "query" in args:
                lines += ["Tool call `run_sql`:", "", "```sql", str(args["query"]), "```", ""]
            else:
                lines += [
                    f"Tool call `{call.get('name')}`:",
                    "",
                    "```json",
                    json.dumps(args, ensure_ascii=False, indent=2),
                    "```",
                    "",
                ]
        finish = (data.get("response_metadata") or {}).get("finish_reason")
        if finish in ("interrupted", "incomplete"):
            lines += [f"*(reply {finish})*", ""]
    return "\n".join(lines).rstrip() + "\n"
