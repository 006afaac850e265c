"""What the model and the user learn about the attached database's shape.

list_tables, describe_table (one table: columns, keys, indexes, row count; also what
/schema prints) and schema_summary (one line a table, for the system prompt). They run in
the worker process, on the Sandbox's connection and under its time limit.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from chatcli.errors import QueryError

from .sandbox import Sandbox

__all__ = ["describe_table", "list_tables", "schema_summary"]


def _quote_ident(name: str) -> str:
    """Quote an identifier for SQL: "a""b" (only used on names checked against the schema)."""
    return '"' + name.replace('"', '""') + '"'


def _tables(conn: sqlite3.Connection) -> list[tuple[str, str]]:
    """(name, "table" or "view") of every user table and view, by name."""
    rows = conn.execute(
        "SELECT name, type FROM sqlite_master WHERE type IN ('table', 'view')"
        " AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name"
    ).fetchall()
    return [(r[0], r[1]) for r in rows]


def list_tables(sandbox: Sandbox) -> list[str]:
    """Names of tables and views, without SQLite's internal sqlite_* tables."""
    with sandbox.running() as conn:
        return [name for name, _ in _tables(conn)]


def _resolve(conn: sqlite3.Connection, name: str) -> tuple[str, str]:
    """The schema's own spelling and type of table/view `name`, else QueryError."""
    tables = _tables(conn)
    for table, kind in tables:
        if table == name:
            return table, kind
    folded = [(t, k) for t, k in tables if t.lower() == str(name).lower()]
    if len(folded) == 1:  # SQL names are case-insensitive
        return folded[0]
    names = ", ".join(t for t, _ in tables[:50]) or "none"
    more = f" (+{len(tables) - 50} more)" if len(tables) > 50 else ""
    raise QueryError(f"no table or view named {name!r}; tables: {names}{more}")


def _count(sandbox: Sandbox, conn: sqlite3.Connection, name: str, seconds: float) -> int | None:
    """Row count, or None when counting fails or takes longer than `seconds`."""
    return sandbox.scalar(conn, f"SELECT count(*) FROM {_quote_ident(name)}", seconds)


def _columns(conn: sqlite3.Connection, name: str) -> list[tuple[str, str, int, Any, int, int]]:
    # table-valued pragma with a bound parameter: the name is never spliced into SQL.
    return conn.execute(
        'SELECT name, type, "notnull", dflt_value, pk, hidden'
        " FROM pragma_table_xinfo(?) WHERE hidden IN (0, 2, 3) ORDER BY cid",
        (name,),
    ).fetchall()


def _foreign_keys(
    conn: sqlite3.Connection, name: str
) -> list[tuple[str, str, str | None, str, str]]:
    return conn.execute(
        'SELECT "from", "table", "to", on_update, on_delete'
        " FROM pragma_foreign_key_list(?) ORDER BY id, seq",
        (name,),
    ).fetchall()


def describe_table(sandbox: Sandbox, name: str) -> str:
    """Columns (type, PK, NOT NULL, default), foreign keys, indexes and row count."""
    with sandbox.running() as conn:
        if not isinstance(name, str) or not name:
            raise QueryError("describe_table needs a table name")
        table, kind = _resolve(conn, name)
        columns = _columns(conn, table)
        fks = _foreign_keys(conn, table)
        indexes = conn.execute(
            'SELECT name, "unique", origin FROM pragma_index_list(?) ORDER BY name', (table,)
        ).fetchall()
        index_columns = {
            index: [
                r[0] or "<expression>"
                for r in conn.execute(
                    "SELECT name FROM pragma_index_info(?) ORDER BY seqno", (index,)
                )
            ]
            for index, _, _ in indexes
        }
        sql = conn.execute(
            "SELECT sql FROM sqlite_master WHERE name = ? AND type = ?", (table, kind)
        ).fetchone()
        count = _count(sandbox, conn, table, sandbox.timeout)
    rows = "row count unknown" if count is None else f"{count} rows"
    out = [f"{kind} {table} — {rows}", "columns:"]
    pk_parts = sum(1 for c in columns if c[4])
    for col_name, col_type, notnull, default, pk, hidden in columns:
        parts = [col_name, col_type or "(no type)"]
        if pk:
            parts.append("PRIMARY KEY" if pk_parts == 1 else f"PRIMARY KEY part {pk}")
        if notnull:
            parts.append("NOT NULL")
        if default is not None:
            parts.append(f"DEFAULT {default}")
        if hidden in (2, 3):
            parts.append("GENERATED")
        out.append("  " + " ".join(parts))
    if fks:
        out.append("foreign keys:")
        for src_col, ref_table, ref_col, on_update, on_delete in fks:
            line = f"  {src_col} -> {ref_table}({ref_col or 'its primary key'})"
            for event, action in (("UPDATE", on_update), ("DELETE", on_delete)):
                if action and action != "NO ACTION":
                    line += f" ON {event} {action}"
            out.append(line)
    if indexes:
        out.append("indexes:")
        for index, unique, origin in indexes:
            how = {"pk": " (primary key)", "u": " (UNIQUE constraint)"}.get(origin, "")
            kind_word = "UNIQUE " if unique else ""
            cols = ", ".join(index_columns[index])
            out.append(f"  {kind_word}{index} on ({cols}){how}")
    if kind == "view" and sql and sql[0]:
        definition = " ".join(sql[0].split())
        if len(definition) > 1000:
            definition = definition[:1000] + "…"
        out.append(f"definition: {definition}")
    return "\n".join(out)


def schema_summary(sandbox: Sandbox, max_chars: int = 2000) -> str:
    """One line per table, `name(col type, ...) — N rows`, within about max_chars."""
    # Reading the schema is cheap, so only the row counts are time-limited, and they
    # share one budget: a schema with many huge tables must not hold up a chat.
    with sandbox.running(timed=False) as conn:
        tables = _tables(conn)
        deadline = time.monotonic() + sandbox.timeout
        lines: list[str] = []
        for table, kind in tables:
            try:
                columns = _columns(conn, table)
                fks = {fk[0]: fk[1] for fk in _foreign_keys(conn, table)}
            except sqlite3.Error as e:  # e.g. a virtual table whose module is not built in
                # this table's row says why; the other tables are still listed
                lines.append(f"{table}(?) — {kind} that cannot be read: {e}")
                continue
            cols = []
            for col_name, col_type, _, _, pk, _ in columns:
                text = f"{col_name} {col_type}".strip()
                if pk:
                    text += " PK"
                if col_name in fks:
                    text += f" -> {fks[col_name]}"
                cols.append(text)
            if kind == "view":
                tail = "view"
            else:
                count = _count(sandbox, conn, table, deadline - time.monotonic())
                tail = "? rows" if count is None else f"{count} rows"
            line = f"{table}({', '.join(cols)}) — {tail}"
            if len(line) > 400:
                line = line[:399] + "…"
            lines.append(line)
    return summary_text(lines, max_chars)


def summary_text(lines: list[str], max_chars: int) -> str:
    """The schema summary's lines (one a table) within ``max_chars``, saying what was left out."""
    out: list[str] = []
    used = 0
    for i, line in enumerate(lines):
        if used + len(line) + 1 > max_chars - 60:
            out.append(f"… and {len(lines) - i} more tables (use list_tables)")
            break
        out.append(line)
        used += len(line) + 1
    return "\n".join(out) if out else "(no tables)"
