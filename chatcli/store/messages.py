"""The memory-file format: a JSON array of LangChain ``message_to_dict`` dicts, UTF-8 encoded.

Parsing and checking such a file, appending to it byte for byte, and reading text out of the
message dicts. Messages stay plain dicts: turning them into LangChain objects is the model
layer's job, which keeps ``chatcli list`` free of LangChain imports.
"""

from __future__ import annotations

import json
from typing import Any

from ..text import replace_surrogates

TITLE_WIDTH = 60

_BOM = "\ufeff".encode()

# Every "type" that langchain_core.messages.messages_from_dict can load.
MESSAGE_TYPES = frozenset(
    {"human", "ai", "system", "chat", "function", "tool", "remove"}
    | {f"{k}MessageChunk" for k in ("AI", "Human", "System", "Chat", "Function", "Tool")}
)

# Text fields LangChain refuses to load a message without, beyond "content".
_REQUIRED_TEXT = {
    "tool": ("tool_call_id",),
    "chat": ("role",),
    "function": ("name",),
    "remove": ("id",),
}


def parse_json(raw: bytes) -> Any:
    """Parse JSON bytes that must be UTF-8 (a BOM is fine); raises ValueError saying why.

    json.loads(bytes) also takes UTF-16 and UTF-32, and an append of UTF-8 bytes to such a file
    would turn it into garbage, so those are refused. Lone surrogates escaped or encoded in the
    file are kept: memory holds what a broken terminal typed, exactly.
    """
    try:
        return json.loads(raw.decode("utf-8-sig", "surrogatepass"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"not valid JSON: {e}") from e
    except RecursionError as e:
        raise ValueError("not valid JSON: nested too deeply") from e


def validate_messages(data: Any) -> list[dict[str, Any]]:
    """Check that parsed JSON is a list of loadable message dicts; raise ValueError saying why."""
    if not isinstance(data, list):
        raise ValueError(f"expected a JSON array of messages, found {type(data).__name__}")
    for i, item in enumerate(data):
        if not isinstance(item, dict) or not isinstance(item.get("data"), dict):
            raise ValueError(f"message {i} is not a {{'type', 'data'}} object")
        kind = item.get("type")
        if kind not in MESSAGE_TYPES:
            raise ValueError(f"message {i} has unknown type {kind!r}")
        fields = item["data"]
        if not isinstance(fields.get("content"), str | list):
            raise ValueError(f"message {i} has no content (text or a list)")
        for name in _REQUIRED_TEXT.get(kind.removesuffix("MessageChunk").lower(), ()):
            if not isinstance(fields.get(name), str):
                raise ValueError(f"message {i} ({kind}) has no {name!r}")
        for name in ("additional_kwargs", "response_metadata"):
            if not isinstance(fields.get(name, {}), dict):
                raise ValueError(f"message {i} has a {name!r} that is not an object")
        calls = fields.get("tool_calls", [])
        if not isinstance(calls, list) or not all(
            isinstance(c, dict)
            and isinstance(c.get("name"), str)
            and isinstance(c.get("args", {}), dict)
            for c in calls
        ):
            raise ValueError(f"message {i} has tool_calls that are not a list of named calls")
    return data


def parse_messages(raw: bytes) -> list[dict[str, Any]]:
    """Parse a memory file's bytes; an empty file is an empty session. Raises ValueError."""
    if not raw.strip():
        return []
    return validate_messages(parse_json(raw))


def message_text(message: dict[str, Any]) -> str:
    """The text of a message dict (list contents keep their text parts)."""
    content = message.get("data", {}).get("content", "")
    if isinstance(content, str):
        return content
    parts = [p.get("text", "") if isinstance(p, dict) else p for p in content]
    return " ".join(str(p) for p in parts if p)


def shorten(text: str, width: int = TITLE_WIDTH) -> str:
    text = " ".join(displayable(text).split())
    return text if len(text) <= width else text[: width - 1].rstrip() + "…"


def displayable(value: Any) -> str:
    """A string from a file, fit for the listing and the terminal: lone surrogates (from a broken
    terminal or another tool) become U+FFFD, anything that is not a string becomes ""."""
    return replace_surrogates(value) if isinstance(value, str) else ""


def first_human_title(messages: list[dict[str, Any]]) -> str:
    """A title from the first human message, shortened; "" if there is none."""
    for m in messages:
        if m.get("type") in ("human", "HumanMessageChunk"):
            return shorten(message_text(m))
    return ""


def last_model(messages: list[dict[str, Any]]) -> str:
    """The model named in the newest reply's metadata; "" if none says."""
    for m in reversed(messages):
        meta = m.get("data", {}).get("response_metadata") or {}
        if isinstance(meta, dict) and isinstance(meta.get("model_name"), str):
            return meta["model_name"]
    return ""


def dump_json(obj: Any, *, indent: int | None = None) -> bytes:
    """``obj`` as UTF-8 JSON bytes."""
    try:
        return json.dumps(obj, ensure_ascii=False, indent=indent).encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates from a broken terminal: keep them, escaped
        return json.dumps(obj, indent=indent).encode("ascii")


def appended_bytes(existing: bytes, new: list[dict[str, Any]]) -> bytes:
    """The file with ``new`` appended; every byte before the closing ``]`` is kept as it was."""
    body = existing.rstrip()
    if not body:
        head = b"["
    else:
        if not body.endswith(b"]"):
            raise ValueError("memory file does not end with ']'")
        head = body[:-1].rstrip()
        if head.removeprefix(_BOM).strip() != b"[":  # "[]", " [ ]", BOM "[]": nothing to follow
            head += b","
    items = b",\n".join(dump_json(m) for m in new)
    return head + b"\n" + items + b"\n]\n"


MARK = "chatcli"  # chatcli's own key in additional_kwargs: LangChain keeps it, servers never see it


def mark_of(message: dict[str, Any]) -> dict[str, Any]:
    """chatcli's marks on a stored message (empty when it has none; storage/README.md)."""
    extra = message.get("data", {}).get("additional_kwargs")
    mark = extra.get(MARK) if isinstance(extra, dict) else None
    return mark if isinstance(mark, dict) else {}
