"""The memory-file format (chatcli/store/messages.py): UTF-8 JSON only, appends keep every byte."""

from __future__ import annotations

import json

import pytest

from chatcli.store.messages import appended_bytes, parse_json, parse_messages, replace_surrogates

MESSAGE = [{"type": "human", "data": {"content": "hi"}}]


@pytest.mark.parametrize(
    "existing", [b"", b"  \n", b"[]", b"[\n]\n", b'[{"type":"human","data":{"content":"a"}}]']
)
def test_appended_bytes_is_valid_json(existing: bytes) -> None:
    before = json.loads(existing) if existing.strip() else []
    data = appended_bytes(existing, [{"type": "ai", "data": {"content": "b"}}])
    assert json.loads(data) == before + [{"type": "ai", "data": {"content": "b"}}]


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be", "utf-32", "utf-32-le"])
def test_json_in_utf16_or_utf32_is_refused(encoding: str) -> None:
    with pytest.raises(ValueError, match="not valid JSON"):
        parse_json(json.dumps(MESSAGE).encode(encoding))


def test_json_in_utf8_with_or_without_a_bom_is_read() -> None:
    raw = json.dumps(MESSAGE, ensure_ascii=False).encode()
    assert parse_json(raw) == parse_json(b"\xef\xbb\xbf" + raw) == MESSAGE


def test_a_lone_surrogate_in_the_file_is_kept_exactly() -> None:
    raw = b'[{"type": "human", "data": {"content": "bad \\udcff"}}]'
    assert parse_messages(raw)[0]["data"]["content"] == "bad \udcff"


def test_surrogates_are_replaced_and_other_text_kept() -> None:
    assert replace_surrogates("a\udcffb \ud800 ✨") == "a\ufffdb \ufffd ✨"
