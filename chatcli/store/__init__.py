"""Sessions on disk. The modules, lowest first (each imports only those before it):

    messages.py  the memory-file format: parse, check, append bytes, text of a message
    files.py     atomic writes, folder fsync, 0600 files, regular-file reads, folder scans
    layout.py    ids, prefixes and paths under the storage root
    cachedb.py   opening and rebuilding a cache database beside memory/
    listing.py   index.sqlite, the listing
    search.py    search.sqlite, full-text search
    sessions.py  Store: create, open, save, lock, trash (calls search after each save)

``from chatcli.store import Store`` is the usual way in; the names below are the public ones.
"""

from __future__ import annotations

from .files import atomic_write
from .layout import INDEX_FILE, MEMORY_DIR, SEARCH_FILE
from .listing import SessionInfo, iso_from_ns
from .messages import (
    MESSAGE_TYPES,
    appended_bytes,
    displayable,
    message_text,
    parse_messages,
    shorten,
    validate_messages,
)
from .sessions import Session, Store

__all__ = [
    "INDEX_FILE",
    "MEMORY_DIR",
    "MESSAGE_TYPES",
    "SEARCH_FILE",
    "Session",
    "SessionInfo",
    "Store",
    "appended_bytes",
    "atomic_write",
    "displayable",
    "iso_from_ns",
    "message_text",
    "parse_messages",
    "shorten",
    "validate_messages",
]
