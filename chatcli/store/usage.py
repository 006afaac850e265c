"""Tokens spent, read from a memory file: what the server reported in ``usage_metadata``, else the
estimate chatcli stored in its own mark (``additional_kwargs["chatcli"]["usage"]``), and the
points where a session may be cut without splitting a tool call from its results.

Stdlib only: the listing sums tokens at index time, and ``chatcli list`` never imports LangChain.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .messages import mark_of

UNKNOWN_MODEL = "(unknown model)"


@dataclass
class Usage:
    """Tokens in and out; ``estimated`` when any part was counted by chatcli, not the server."""

    input: int = 0
    output: int = 0
    estimated: bool = False

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input + other.input, self.output + other.output, self.estimated or other.estimated
        )

    @property
    def total(self) -> int:
        return self.input + self.output

    def line(self) -> str:
        """``412 in · 96 out``, with ``≈`` before an estimate."""
        approx = "≈" if self.estimated else ""
        return f"{approx}{self.input} in · {approx}{self.output} out"


def usage_of(message: dict[str, Any]) -> Usage | None:
    """The tokens one stored message cost (None: it is no model output, or nothing was kept)."""
    data = message.get("data", {})
    reported = data.get("usage_metadata") if isinstance(data, dict) else None
    if isinstance(reported, dict) and (usage := _tokens(reported)) is not None:
        return usage
    if not data.get("additional_kwargs"):
        return None  # most messages: no mark to look at
    own = mark_of(message).get("usage")
    if isinstance(own, dict) and (usage := _tokens(own)) is not None:
        usage.estimated = bool(own.get("estimated"))
        return usage
    return None


def model_of(message: dict[str, Any]) -> str:
    """The model that wrote a message: the server's word, else the one chatcli noted."""
    meta = message.get("data", {}).get("response_metadata")
    if isinstance(meta, dict) and isinstance(meta.get("model_name"), str) and meta["model_name"]:
        return meta["model_name"]
    own = mark_of(message).get("usage")
    if isinstance(own, dict) and isinstance(own.get("model"), str) and own["model"]:
        return own["model"]
    return UNKNOWN_MODEL


def totals(messages: list[dict[str, Any]]) -> Usage:
    """The whole session's tokens (the listing sums them for every session it indexes)."""
    given = [u for u in map(usage_of, messages) if u is not None]
    return Usage(
        sum(u.input for u in given), sum(u.output for u in given), any(u.estimated for u in given)
    )


def totals_by_model(messages: list[dict[str, Any]]) -> dict[str, Usage]:
    """The session's tokens per model, in the order the models first answered."""
    result: dict[str, Usage] = {}
    for message in messages:
        if (usage := usage_of(message)) is not None:
            model = model_of(message)
            result[model] = result.get(model, Usage()) + usage
    return result


def _tokens(fields: dict[str, Any]) -> Usage | None:
    given = fields.get("input_tokens"), fields.get("output_tokens")
    if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in given):
        return None
    return Usage(int(given[0]), int(given[1]))  # type: ignore[arg-type]


def safe_cut(messages: list[dict[str, Any]], count: int) -> int:
    """The largest cut at most ``count`` where the first part does not end inside a tool call's
    results: a cut before a tool result moves back to before the call it answers."""
    count = max(0, min(count, len(messages)))
    while 0 < count < len(messages) and _is_tool(messages[count]):
        count -= 1
    return count


def _is_tool(message: dict[str, Any]) -> bool:
    kind = message.get("type")
    if kind in ("chat", "ChatMessageChunk"):
        return message.get("data", {}).get("role") == "tool"
    return kind in ("tool", "ToolMessageChunk")
