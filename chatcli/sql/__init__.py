"""Databases a chat can attach: a private copy, queried read-only by the model and the user.

Modules: copy (validate and copy the user's SQLite file, open read-only, no sidecar
files), sandbox (the locked-down connection and QueryResult), schema (list, describe,
summarize tables), worker (the killable process the statements run in), sqlite
(ReadOnlyDatabase, the SQLite backend), tools (the tool specs and parse_call/run_tool,
the one parser of tool arguments); postgres is a second backend, imported by name when wanted.

A backend (tools.Database) provides:
  max_chars: int                    about how much text a result may become
  run_sql(query) -> QueryResult     one read-only statement; rows capped, `note` says why
  list_tables() -> list[str]        tables and views, without internal ones
  describe_table(name) -> str       columns, keys, indexes, row count; QueryError if unknown
  schema_summary(max_chars) -> str  one line a table, for the system prompt; computed once
                                    per attach and then kept
  interrupt()                       stop the running call from another thread
  close()                           free everything; later calls raise QueryError
Failures are QueryError (or InvalidDatabase when opening); a time limit and the caps hold
whatever the query. run_tool/call_tool work on any backend.

Importing this package must need the standard library only: the worker process imports it
under `python -I -S`. A backend with a third-party driver imports it inside its functions.
"""

from __future__ import annotations

from .copy import SQLITE_HEADER, copy_database, validate_database
from .result import QueryResult
from .sqlite import ReadOnlyDatabase
from .tools import (
    TOOL_SPECS,
    Database,
    ToolCall,
    ToolOutcome,
    call_tool,
    describe_call,
    parse_call,
    run_tool,
    tool_specs,
)

__all__ = [
    "SQLITE_HEADER",
    "TOOL_SPECS",
    "Database",
    "QueryResult",
    "ReadOnlyDatabase",
    "ToolCall",
    "ToolOutcome",
    "call_tool",
    "copy_database",
    "describe_call",
    "parse_call",
    "run_tool",
    "tool_specs",
    "validate_database",
]
