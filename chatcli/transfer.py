"""Sessions in and out of the store: export as Markdown or JSON, import JSON conversations.

Import accepts the memory format itself (a JSON array of LangChain ``message_to_dict`` dicts) or
an OpenAI-style ``[{"role", "content"}]`` array, checks every message before anything is created,
and stores what LangChain will load again. No UI: failures are ChatcliErrors for the CLI to show.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, BinaryIO

from .errors import ChatcliError, DamagedSession
from .store import Store, parse_messages, validate_messages
from .store.files import NotRegularFile, read_regular
from .store.layout import MEMORY_LIMIT
from .store.messages import parse_json
from .text import replace_surrogates

FORMATS = ("md", "json")
_OPENAI_KINDS = {
    "system": "system",
    "developer": "system",
    "user": "human",
    "assistant": "ai",
    "tool": "tool",
}


def export_session(store: Store, sid: str, *, fmt: str = "md") -> bytes:
    """The session as a Markdown transcript, or (``json``) its messages in the memory format."""
    if fmt == "json":
        # The file's own bytes, once they are known to parse: exact, whoever wrote them.
        raw = store.read_memory(sid)
        try:
            if not parse_messages(raw):
                return b"[]\n"
        except ValueError as e:
            raise DamagedSession(
                f"session file is damaged, left untouched: {e}", path=store.memory_path(sid)
            ) from e
        return raw
    if fmt == "md":
        from .transcript import to_markdown

        session = store.open(sid, read_only=True)  # a linked memory file exports too
        # lone surrogates (piped invalid UTF-8, kept exactly in memory) cannot be UTF-8 encoded
        return replace_surrogates(to_markdown(session.title, session.messages)).encode("utf-8")
    raise ChatcliError(f"unknown export format {fmt!r} (expected {' or '.join(FORMATS)})")


def import_file(store: Store, path: Path, *, title: str | None = None) -> tuple[str, int]:
    """Create a session from a JSON conversation file; returns (id, message count).

    The whole file is checked first: a bad one raises ChatcliError and creates nothing.
    """
    try:
        raw = read_regular(path, limit=MEMORY_LIMIT)  # a FIFO or /dev/zero: refused at once
    except NotRegularFile as e:
        raise ChatcliError(
            f"cannot read {path}: {e.strerror} (to import from a pipe, give '-' and use stdin)",
            path=path,
        ) from e
    except OSError as e:
        raise ChatcliError(f"cannot read {path}: {e.strerror}", path=path) from e
    return import_bytes(store, raw, title=title, source=path)


_SNIFF = 8192  # bytes of piped text looked at for a NUL before the rest is read


def read_stdin(stream: BinaryIO, *, text: bool = False) -> bytes:
    """What ``import -`` and ``ask`` read: all of stdin, up to the memory-file limit (/dev/zero
    ends). With ``text``, binary input (a NUL in its first 8 KiB) is refused before the rest is
    read, so ``ask < /dev/zero`` stops at once instead of reading 512 MiB of zeros."""
    head = stream.read(_SNIFF) if text else b""
    if b"\0" in head:
        raise ChatcliError("the piped input is binary, not text; nothing was sent")
    raw = head + stream.read(MEMORY_LIMIT + 1 - len(head))
    if len(raw) > MEMORY_LIMIT:
        what = "send" if text else "import"
        raise ChatcliError(f"cannot {what}: stdin holds over {MEMORY_LIMIT >> 20} MiB")
    return raw


def import_bytes(
    store: Store, raw: bytes, *, title: str | None = None, source: Path | str | None = None
) -> tuple[str, int]:
    """As :func:`import_file`, from the file's bytes (``source`` names it in errors)."""
    try:
        messages = read_conversation(raw)
    except ValueError as e:
        raise ChatcliError(f"cannot import: {e}", path=source) from e
    sid = store.create(title=title)
    try:
        store.append(sid, messages)
    except BaseException:
        store.discard_if_empty(sid)
        raise
    return sid, len(messages)


def read_conversation(raw: bytes) -> list[dict[str, Any]]:
    """Parse and check a conversation file; the messages in the memory format. Raises ValueError."""
    data = parse_json(raw)  # UTF-8 only, as memory files: an import must save as it was read
    if not isinstance(data, list):
        raise ValueError(f"expected a JSON array of messages, found {type(data).__name__}")
    if not data:
        raise ValueError("the file holds no messages")
    first = data[0]
    if isinstance(first, dict) and "role" in first:
        dicts = from_openai(data)
    elif isinstance(first, dict) and "type" in first:
        dicts = validate_messages(data)
    else:
        raise ValueError(
            "message 0 is neither a LangChain message ({type, data}) "
            "nor an OpenAI one ({role, content})"
        )
    from .llm import normalize_messages

    return normalize_messages(dicts)


def from_openai(items: list[Any]) -> list[dict[str, Any]]:
    """OpenAI chat messages as memory-format dicts (assistant ``tool_calls`` become LangChain's)."""
    result = []
    names: dict[str, str] = {}  # tool call id -> function name, to name the tool results
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise ValueError(f"message {i} is not an object")
        role = item.get("role")
        kind = _OPENAI_KINDS.get(role) if isinstance(role, str) else None
        if kind is None:
            raise ValueError(
                f"message {i} has unknown role {role!r} (expected system, user, assistant or tool)"
            )
        content = item.get("content")
        if content is None and (kind == "ai" or "content" in item):
            content = ""  # an assistant turn that only calls tools
        if not isinstance(content, str | list):
            raise ValueError(f"message {i} has no text content")
        data: dict[str, Any] = {"content": content}
        if isinstance(item.get("name"), str):
            data["name"] = item["name"]
        if kind == "ai":
            data["tool_calls"] = [_tool_call(i, c) for c in item.get("tool_calls") or []]
            names.update((c["id"], c["name"]) for c in data["tool_calls"] if c["id"])
        elif kind == "tool":
            call_id = item.get("tool_call_id")
            if not isinstance(call_id, str) or not call_id:
                raise ValueError(f"message {i} (tool) has no tool_call_id")
            data["tool_call_id"] = call_id
            data.setdefault("name", names.get(call_id))
        result.append({"type": kind, "data": data})
    return result


def _tool_call(i: int, call: Any) -> dict[str, Any]:
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise ValueError(f"message {i} has a tool call without a function name")
    name, args = function["name"], function.get("arguments") or "{}"
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except json.JSONDecodeError as e:
            raise ValueError(
                f"message {i}: the arguments of tool call {name!r} are not valid JSON: {e}"
            ) from e
    if not isinstance(args, dict):
        raise ValueError(f"message {i}: the arguments of tool call {name!r} are not an object")
    call_id = call.get("id")
    return {
        "name": name,
        "args": args,
        "id": call_id if isinstance(call_id, str) else None,
        "type": "tool_call",
    }


def write_export(path: Path, data: bytes, *, replace: bool = False, refusal: str) -> None:
    """Write an export to ``path`` atomically (``chatcli export -o`` and ``/export``); a file
    that is already there is refused with the message ``refusal`` unless ``replace``."""
    from .store import atomic_write

    if not replace and (path.exists() or path.is_symlink()):
        raise ChatcliError(refusal, path=path)
    atomic_write(path, data)
