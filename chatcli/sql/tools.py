"""The tools the model may call, and the one place their arguments are parsed.

parse_call is the entry point for a tool call: it parses the arguments (a JSON string or
a dict; `sql` is accepted for run_sql's `query`, `table` for describe_table's `name`) into
a ToolCall, which says how to show the call (before it runs: a query may take a while) and
runs it on any backend with the Database interface, giving a ToolOutcome: the rows to show
and the text for the model. run_tool does both. Failures are outcomes too, never
exceptions (Ctrl-C aside).
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any, Protocol

from chatcli.errors import ChatcliError

from .result import QueryResult

__all__ = [
    "TOOL_SPECS",
    "Database",
    "ToolCall",
    "ToolOutcome",
    "call_tool",
    "describe_call",
    "parse_call",
    "run_tool",
    "tool_specs",
]


class Database(Protocol):
    """What a backend provides (ReadOnlyDatabase is the SQLite one); see sql/__init__."""

    dialect: str  # "SQLite" or "PostgreSQL": named to the model
    max_chars: int

    def run_sql(self, query: str) -> QueryResult: ...

    def list_tables(self) -> list[str]: ...

    def describe_table(self, name: str) -> str: ...

    def schema_summary(self, max_chars: int = 2000) -> str: ...

    def interrupt(self) -> None: ...

    def close(self) -> None: ...


# What run_sql's description offers besides SELECT, per dialect.
_ALSO = {
    "SQLite": "or a read-only PRAGMA such as table_info",
    "PostgreSQL": "EXPLAIN, or SHOW",
}


def tool_specs(dialect: str = "SQLite") -> list[dict[str, Any]]:
    """The tools offered to the model, naming the attached database's SQL dialect (a backend's
    `dialect`: "SQLite" or "PostgreSQL"), so the model writes SQL that backend understands."""
    also = _ALSO.get(dialect, "")
    return [
        {
            "type": "function",
            "function": {
                "name": "list_tables",
                "description": f"List the tables and views of the attached {dialect} database.",
                "parameters": {"type": "object", "properties": {}, "additionalProperties": False},
            },
        },
        {
            "type": "function",
            "function": {
                "name": "describe_table",
                "description": (
                    f"Describe one table or view of the attached {dialect} database: columns "
                    "with types, primary key, NOT NULL, foreign keys, indexes and row count."
                ),
                "parameters": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string", "description": "Table or view name."},
                    },
                    "required": ["name"],
                    "additionalProperties": False,
                },
            },
        },
        {
            "type": "function",
            "function": {
                "name": "run_sql",
                "description": (
                    f"Run one read-only {dialect} query (SELECT, WITH ... SELECT"
                    f"{', ' + also if also else ''}) on the attached database and get the rows "
                    "as text. The database cannot be changed. Results are capped (about 200 "
                    "rows) and queries are stopped after a few seconds, so aggregate, filter or "
                    "use LIMIT on large tables. One statement per call."
                ),
                "parameters": {
                    "type": "object",
                    "properties": {
                        "query": {"type": "string", "description": f"One {dialect} statement."},
                    },
                    "required": ["query"],
                    "additionalProperties": False,
                },
            },
        },
    ]


TOOL_SPECS: list[dict[str, Any]] = tool_specs("SQLite")


@dataclass(frozen=True, slots=True)
class ToolOutcome:
    """One tool call, run: what the user sees and what the model gets back."""

    shown: str  # the call as the user sees it: "sql> SELECT ..." or "list_tables()"
    text: str  # the reply for the model; "error: ..." when the call failed
    result: QueryResult | None = None  # run_sql's rows, for a table on screen
    error: str | None = None  # why the call failed (text without its "error: " prefix)


class _BadCall(Exception):
    """The call cannot be run as given; the message says why, for the model."""


def _arguments(args: dict[str, Any] | str | None) -> dict[str, Any]:
    if isinstance(args, str):  # raw OpenAI tool calls carry arguments as a JSON string
        try:
            args = json.loads(args) if args.strip() else {}
        except json.JSONDecodeError as e:
            raise _BadCall(f"tool arguments are not valid JSON: {e}") from None
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise _BadCall("tool arguments must be a JSON object")
    return args


def _query(args: dict[str, Any]) -> Any:
    return args.get("query", args.get("sql"))


def describe_call(name: str, args: dict[str, Any]) -> str:
    """How a tool call is shown to the user: the SQL itself for run_sql."""
    if name == "run_sql":
        query = _query(args)
        return f"sql> {'' if query is None else query}"
    return f"{name}({', '.join(f'{k}={v!r}' for k, v in args.items())})"


def _run(db: Database, name: str, args: dict[str, Any]) -> tuple[str, QueryResult | None]:
    if name == "list_tables":
        tables = db.list_tables()
        return ("\n".join(tables) if tables else "(no tables)"), None
    if name == "describe_table":
        table = args.get("name", args.get("table"))
        if not isinstance(table, str) or not table.strip():
            raise _BadCall("describe_table needs a 'name' string argument")
        return db.describe_table(table.strip()), None
    if name == "run_sql":
        query = _query(args)
        if not isinstance(query, str) or not query.strip():
            raise _BadCall("run_sql needs a 'query' string argument")
        result = db.run_sql(query)
        return result.to_text(db.max_chars), result
    known = ", ".join(spec["function"]["name"] for spec in TOOL_SPECS)
    raise _BadCall(f"unknown tool {name!r}; available tools: {known}")


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A tool call with its arguments parsed, ready to show (before it runs) and to run."""

    name: str
    args: dict[str, Any]
    shown: str  # how describe_call shows it
    problem: str | None = None  # the arguments could not be parsed: why

    def run(self, db: Database) -> ToolOutcome:
        """Run the call on `db`; a failure is an outcome with `error` set."""
        error = self.problem
        if error is None:
            try:
                text, result = _run(db, self.name, self.args)
            except _BadCall as e:
                error = str(e)
            except ChatcliError as e:  # .message: the model needs no file path
                error = e.message
            except sqlite3.Error as e:
                error = str(e)
            else:
                return ToolOutcome(self.shown, text, result)
        return ToolOutcome(self.shown, f"error: {error}", error=error)


def parse_call(name: str, args: dict[str, Any] | str | None) -> ToolCall:
    """The model's call of tool `name` with `args` (a JSON string or a dict), parsed."""
    try:
        parsed = _arguments(args)
    except _BadCall as e:
        shown = f"{name}({args!r})" if isinstance(args, str) else name
        return ToolCall(name, {}, shown, problem=str(e))
    return ToolCall(name, parsed, describe_call(name, parsed))


def run_tool(db: Database, name: str, args: dict[str, Any] | str | None) -> ToolOutcome:
    """Run tool `name` for the model on `db`; a failure is an outcome with `error` set."""
    return parse_call(name, args).run(db)


def call_tool(db: Database, name: str, args: dict[str, Any] | str | None) -> str:
    """Run tool `name` for the model; failures come back as "error: ..." text, never raised."""
    return run_tool(db, name, args).text
