"""Tests for chatcli.sql.tools: the tool specs and the one parser of tool arguments."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import make_shop_db

from chatcli.sql import (
    TOOL_SPECS,
    ReadOnlyDatabase,
    call_tool,
    describe_call,
    parse_call,
    run_tool,
)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return make_shop_db(tmp_path / "shop.db")


# --- tools --------------------------------------------------------------------------------


def test_tool_specs_are_openai_function_tools() -> None:
    assert [spec["function"]["name"] for spec in TOOL_SPECS] == [
        "list_tables",
        "describe_table",
        "run_sql",
    ]
    for spec in TOOL_SPECS:
        assert spec["type"] == "function"
        assert spec["function"]["description"]
        assert spec["function"]["parameters"]["type"] == "object"
    assert TOOL_SPECS[1]["function"]["parameters"]["required"] == ["name"]
    assert TOOL_SPECS[2]["function"]["parameters"]["required"] == ["query"]
    json.dumps(TOOL_SPECS)


def test_call_tool_dispatches(db_path: Path) -> None:
    with ReadOnlyDatabase(db_path) as db:
        assert call_tool(db, "list_tables", {}) == "customers\norder_totals\norders"
        assert call_tool(db, "list_tables", None) == "customers\norder_totals\norders"
        assert call_tool(db, "describe_table", {"name": "orders"}).startswith("table orders")
        assert call_tool(db, "run_sql", {"query": "SELECT id FROM customers ORDER BY id"}) == (
            "id\n1\n2\n3"
        )
        # Raw OpenAI tool calls carry their arguments as a JSON string.
        assert call_tool(db, "run_sql", '{"query": "SELECT 1 AS one"}') == "one\n1"


@pytest.mark.parametrize(
    ("name", "args", "fragment"),
    [
        ("drop_everything", {}, "unknown tool"),
        ("run_sql", {}, "needs a 'query'"),
        ("run_sql", {"query": 42}, "needs a 'query'"),
        ("run_sql", "{not json", "not valid JSON"),
        ("run_sql", "[1, 2]", "must be a JSON object"),
        ("describe_table", {"name": None}, "needs a 'name'"),
        ("run_sql", {"query": "DROP TABLE orders"}, "not allowed"),
        ("run_sql", {"query": "SELECT nope FROM orders"}, "no such column"),
    ],
)
def test_call_tool_turns_failures_into_text(
    db_path: Path, name: str, args: object, fragment: str
) -> None:
    with ReadOnlyDatabase(db_path) as db:
        reply = call_tool(db, name, args)  # type: ignore[arg-type]
    assert reply.startswith("error: ")
    assert fragment in reply


def test_run_sql_accepts_sql_for_query(db_path: Path) -> None:
    with ReadOnlyDatabase(db_path) as db:
        assert call_tool(db, "run_sql", {"sql": "SELECT 1 AS one"}) == "one\n1"
        assert call_tool(db, "run_sql", '{"sql": "SELECT 2 AS two"}') == "two\n2"


def test_run_tool_returns_the_call_the_rows_and_the_reply(db_path: Path) -> None:
    with ReadOnlyDatabase(db_path) as db:
        outcome = run_tool(db, "run_sql", {"sql": "SELECT id FROM customers ORDER BY id"})
    assert outcome.shown == "sql> SELECT id FROM customers ORDER BY id"
    assert outcome.result is not None
    assert outcome.result.columns == ["id"]
    assert outcome.result.rows == [(1,), (2,), (3,)]
    assert outcome.text == "id\n1\n2\n3"
    assert outcome.error is None


def test_run_tool_failure_is_an_outcome_with_the_error(db_path: Path) -> None:
    with ReadOnlyDatabase(db_path) as db:
        outcome = run_tool(db, "run_sql", {"query": "DELETE FROM orders"})
        other = run_tool(db, "describe_table", {"table": "nope"})
    assert outcome.shown == "sql> DELETE FROM orders"
    assert outcome.result is None
    assert outcome.error == "not allowed: this database is read-only (DELETE)"
    assert outcome.text == f"error: {outcome.error}"
    assert other.shown == "describe_table(table='nope')"
    assert other.error is not None and other.error.startswith("no table or view named 'nope'")


def test_describe_call_shows_the_sql_of_either_spelling() -> None:
    assert describe_call("run_sql", {"query": "SELECT 1"}) == "sql> SELECT 1"
    assert describe_call("run_sql", {"sql": "SELECT 2"}) == "sql> SELECT 2"
    assert describe_call("describe_table", {"name": "t"}) == "describe_table(name='t')"
    assert describe_call("list_tables", {}) == "list_tables()"


def test_parse_call_says_what_will_run_before_it_runs(db_path: Path) -> None:
    call = parse_call("run_sql", '{"sql": "SELECT 3 AS three"}')
    assert call.shown == "sql> SELECT 3 AS three"
    bad = parse_call("run_sql", "{not json")
    assert bad.problem is not None and "not valid JSON" in bad.problem
    with ReadOnlyDatabase(db_path) as db:
        assert call.run(db).text == "three\n3"
        assert bad.run(db).text.startswith("error: tool arguments are not valid JSON")
