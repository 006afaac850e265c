"""Text primitives shared by the store and the printers; a leaf: imports only the stdlib."""

from __future__ import annotations

import re

_SURROGATE_RE = re.compile("[\ud800-\udfff]")


def replace_surrogates(text: str) -> str:
    """``text`` with lone surrogates (invalid UTF-8 read with surrogateescape) as U+FFFD.

    Memory keeps them exactly; anything that must be valid UTF-8 (SQLite, a request, a strict
    stdout, an exported transcript) gets the replacement instead."""
    return _SURROGATE_RE.sub("\ufffd", text)
