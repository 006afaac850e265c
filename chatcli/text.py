"""Text primitives shared by the store and the printers; a leaf: imports only the stdlib."""

from __future__ import annotations

import re

_SURROGATE_RE = re.compile("[\ud800-\udfff]")


def replace_surrogates(text: str) -> str:
    """``text`` with lone surrogates (invalid UTF-8 read with surrogateescape) as U+FFFD.

    Memory keeps them exactly; anything that must be valid UTF-8 (SQLite, a request, a strict
    stdout, an exported transcript) gets the replacement instead."""
    return _SURROGATE_RE.sub("\ufffd", text)


# scheme://user:password@ (or scheme://token@) in any text: the authority ends at / ? # or
# whitespace; the password runs to the last "@" before that, so an unescaped "@" in it is covered.
_USERINFO_RE = re.compile(
    r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^\s/?#@:]*)(?::(?P<password>[^\s/?#]*))?@"
)
# libpq's ?password=... (and &password=...) in a URL's query
_PASSWORD_PARAM_RE = re.compile(r"(?<=[?&])password=[^&\s#]*&?", re.IGNORECASE)


def strip_passwords(text: str) -> str:
    """``text`` with the password of every URL in it removed, the user kept, for what is written
    to disk (the log, the input history): ``postgresql://u:pw@h/db`` -> ``postgresql://u@h/db``,
    and a ``password=`` query parameter dropped."""
    text = _USERINFO_RE.sub(lambda m: f"{m['head']}{m['user']}@", text)
    return _PASSWORD_PARAM_RE.sub("", text)


def mask_userinfo(text: str) -> str:
    """``text`` with the user info of every URL in it shown as ``***``, for printing a URL that
    may carry a token as its user or password: ``https://u:tok@h/v1`` -> ``https://***@h/v1``."""
    text = _USERINFO_RE.sub(lambda m: f"{m['head']}***@", text)
    return _PASSWORD_PARAM_RE.sub("", text)
