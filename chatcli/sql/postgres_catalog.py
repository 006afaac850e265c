"""PostgreSQL's catalog in words: the tables, one table described, the schema summary, and what
the role could write. Each function takes a cursor inside postgres.py's read-only transaction.

Only relations the role may SELECT are listed: the others are of no use to a model. Names off
the `public` schema are schema-qualified, and quoted where SQL needs it, so they can be pasted.
"""

from __future__ import annotations

import time
from typing import Any

from chatcli.errors import QueryError

from .schema import summary_text

# Tables at most this large (bytes on disk) are counted exactly; larger ones get the planner's
# estimate (pg_class.reltuples), as counting them could take longer than a chat should wait.
_EXACT_COUNT_BYTES = 8 * 1024 * 1024
_EXACT_COUNTS = 100
_COUNT_MS = 500

_KINDS = {"r": "table", "p": "table", "v": "view", "m": "materialized view", "f": "foreign table"}

_RELATIONS = """
SELECT c.oid,
       CASE WHEN n.nspname = 'public' THEN quote_ident(c.relname)
            ELSE quote_ident(n.nspname) || '.' || quote_ident(c.relname) END,
       c.relname, c.relkind, c.reltuples,
       CASE WHEN c.relkind IN ('r', 'm') THEN pg_relation_size(c.oid) END
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') AND NOT c.relispartition
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname !~ '^pg_(toast|temp_)'
  AND has_table_privilege(c.oid, 'SELECT')
ORDER BY n.nspname <> 'public', n.nspname, c.relname
"""

_COLUMNS = """
SELECT a.attrelid, a.attnum, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
       pg_get_expr(d.adbin, d.adrelid), a.attidentity, a.attgenerated
FROM pg_attribute a
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE a.attrelid = ANY(%s) AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attrelid, a.attnum
"""

_CONSTRAINTS = """
SELECT c.conrelid, c.contype, c.conkey, c.conname, pg_get_constraintdef(c.oid),
       c.confrelid::regclass::text
FROM pg_constraint c
WHERE c.conrelid = ANY(%s) AND c.contype IN ('p', 'f')
ORDER BY c.conrelid, c.conname
"""

_INDEXES = """
SELECT i.relname, x.indisunique, x.indisprimary, pg_get_indexdef(x.indexrelid)
FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
WHERE x.indrelid = %s ORDER BY i.relname
"""

_WRITE_ACCESS = """
SELECT r.rolsuper, r.rolcreatedb, r.rolcreaterole,
  (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
   WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f')
     AND n.nspname NOT IN ('pg_catalog', 'information_schema')
     AND n.nspname !~ '^pg_(toast|temp_)'
     AND has_table_privilege(c.oid, 'INSERT, UPDATE, DELETE, TRUNCATE')),
  (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
   WHERE c.relkind = 'S' AND n.nspname !~ '^pg_(toast|temp_)'
     -- CASE: the planner may test the privilege before relkind, and on a non-sequence it fails
     AND CASE WHEN c.relkind = 'S' THEN has_sequence_privilege(c.oid, 'USAGE, UPDATE') END),
  (SELECT coalesce(array_agg(nspname::text ORDER BY nspname), '{}') FROM pg_namespace
   WHERE nspname NOT IN ('pg_catalog', 'information_schema') AND nspname !~ '^pg_'
     AND has_schema_privilege(oid, 'CREATE')),
  has_database_privilege(current_database(), 'CREATE'),
  current_user
FROM pg_roles r WHERE r.rolname = current_user
"""


def _relations(cur: Any) -> list[tuple[Any, ...]]:
    return cur.execute(_RELATIONS).fetchall()


def list_tables(cur: Any) -> list[str]:
    return [row[1] for row in _relations(cur)]


def _resolve(relations: list[tuple[Any, ...]], name: str) -> tuple[Any, ...]:
    """The relation `name` stands for: its listed name, its bare name, or either case-folded."""
    low = name.lower()
    for matches in (
        lambda r: r[1] == name,
        lambda r: r[2] == name,
        lambda r: r[1].lower() == low,  # SQL folds unquoted names
        lambda r: r[2].lower() == low,
    ):
        hits = [r for r in relations if matches(r)]
        if len(hits) == 1:
            return hits[0]
    names = ", ".join(r[1] for r in relations[:50]) or "none"
    more = f" (+{len(relations) - 50} more)" if len(relations) > 50 else ""
    raise QueryError(f"no table or view named {name!r}; tables: {names}{more}")


def _count(cur: Any, display: str, ms: int) -> int | None:
    """count(*) of the relation, or None if it fails or takes longer than `ms`."""
    import psycopg

    if ms <= 0:
        return None
    count = None
    try:
        # A savepoint, always rolled back: the shorter statement_timeout ends with it, and a
        # cancelled count leaves the transaction usable.
        with cur.connection.transaction() as savepoint:
            cur.execute(f"SET LOCAL statement_timeout = {int(ms)}")
            count = int(cur.execute(f"SELECT count(*) FROM {display}").fetchone()[0])
            raise psycopg.Rollback(savepoint)
    except psycopg.Error:
        return None
    return count


def _rows_text(cur: Any, rel: tuple[Any, ...], *, count_ms: int) -> str:
    """ "N rows" counted within `count_ms`, else the planner's "~N rows (estimate)"."""
    _, display, _, kind, reltuples, _ = rel
    count = _count(cur, display, count_ms)
    if count is not None:
        return f"{count:,} rows"
    if kind in ("r", "p", "m") and reltuples is not None and reltuples >= 0:
        return f"~{int(reltuples):,} rows (estimate)"
    return "? rows"


def _constraints(cur: Any, oids: list[int]) -> dict[int, list[tuple[Any, ...]]]:
    out: dict[int, list[tuple[Any, ...]]] = {}
    for row in cur.execute(_CONSTRAINTS, (oids,)).fetchall():
        out.setdefault(row[0], []).append(row)
    return out


def describe_table(cur: Any, name: str) -> str:
    rel = _resolve(_relations(cur), name)
    oid, display, _, kind, _, size = rel
    columns = cur.execute(_COLUMNS, ([oid],)).fetchall()
    constraints = _constraints(cur, [oid]).get(oid, [])
    pk = {n for c in constraints if c[1] == "p" for n in c[2]}
    indexes = cur.execute(_INDEXES, (oid,)).fetchall()
    definition = None
    if kind in ("v", "m"):
        definition = cur.execute("SELECT pg_get_viewdef(%s)", (oid,)).fetchone()[0]
    rows = _rows_text(cur, rel, count_ms=_COUNT_MS)
    out = [f"{_KINDS.get(kind, 'relation')} {display} — {rows}", "columns:"]
    for _, attnum, col, type_, notnull, default, identity, generated in columns:
        parts = [col, type_]
        if attnum in pk:
            parts.append("PRIMARY KEY" if len(pk) == 1 else "PRIMARY KEY part")
        if notnull:
            parts.append("NOT NULL")
        if generated:
            parts.append(f"GENERATED ALWAYS AS ({default})")
        elif identity:
            parts.append("GENERATED " + ("ALWAYS" if identity == "a" else "BY DEFAULT"))
            parts.append("AS IDENTITY")
        elif default is not None:
            parts.append(f"DEFAULT {default}")
        out.append("  " + " ".join(parts))
    fks = [c for c in constraints if c[1] == "f"]
    if fks:
        out.append("foreign keys:")
        out.extend(f"  {c[4]}" for c in fks)
    if indexes:
        out.append("indexes:")
        for index, unique, primary, text in indexes:
            how = text.split(" USING ", 1)[-1]
            tail = " (primary key)" if primary else ""
            out.append(f"  {'UNIQUE ' if unique else ''}{index} {how}{tail}")
    if definition:
        definition = " ".join(definition.split())
        out.append(
            "definition: " + (definition[:1000] + "…" if len(definition) > 1000 else definition)
        )
    return "\n".join(out)


def schema_summary(cur: Any, max_chars: int = 2000, *, budget_s: float = 5.0) -> str:
    """One line a relation; the exact counts share `budget_s` seconds, then estimates."""
    relations = _relations(cur)
    deadline = time.monotonic() + budget_s
    oids = [r[0] for r in relations]
    columns: dict[int, list[tuple[Any, ...]]] = {}
    for row in cur.execute(_COLUMNS, (oids,)).fetchall():
        columns.setdefault(row[0], []).append(row)
    constraints = _constraints(cur, oids)
    lines: list[str] = []
    exact_left = _EXACT_COUNTS
    for rel in relations:
        oid, display, _, kind, _, size = rel
        cons = constraints.get(oid, [])
        pk = {n for c in cons if c[1] == "p" for n in c[2]}
        fks = {c[2][0]: c[5] for c in cons if c[1] == "f" and len(c[2]) == 1}
        cols = []
        for _, attnum, col, type_, *_ in columns.get(oid, []):
            text = f"{col} {type_}"
            if attnum in pk:
                text += " PK"
            if attnum in fks:
                text += f" -> {fks[attnum]}"
            cols.append(text)
        if kind in ("v", "f"):
            tail = _KINDS[kind]
        else:
            ms = 0
            if size is not None and size <= _EXACT_COUNT_BYTES and exact_left > 0:
                exact_left -= 1
                ms = min(_COUNT_MS, int((deadline - time.monotonic()) * 1000))
            tail = _rows_text(cur, rel, count_ms=ms)
        line = f"{display}({', '.join(cols)}) — {tail}"
        lines.append(line if len(line) <= 400 else line[:399] + "…")
    return summary_text(lines, max_chars)


def write_access(cur: Any) -> str | None:
    """What the current role may change, in words ("chat_owner is a superuser"); None if nothing."""
    row = cur.execute(_WRITE_ACCESS).fetchone()
    if row is None:
        return None
    superuser, createdb, createrole, tables, sequences, schemas, create_db, role = row
    if superuser:
        return f"{role} is a superuser (it could also read and write files on the server)"
    can = []
    if tables:
        can.append(f"write to {tables} table{'s' if tables != 1 else ''}")
    if sequences:
        can.append(f"advance {sequences} sequence{'s' if sequences != 1 else ''}")
    if schemas:
        can.append("create objects in schema " + ", ".join(schemas))
    if create_db:
        can.append("create schemas in this database")
    if createdb:
        can.append("create databases")
    if createrole:
        can.append("create roles")
    return f"{role} can " + ", ".join(can) if can else None


# Roles whose members act outside the database even inside a READ ONLY transaction: COPY ... TO
# PROGRAM and COPY ... TO '/file' are reads as far as the transaction is concerned. A member of a
# superuser role can become it within one statement (set_config('role', ...)), so MEMBER counts.
_POWERS = """
SELECT r.rolname, r.rolsuper, r.rolname = current_user
FROM pg_roles r
WHERE (r.rolsuper OR r.rolname IN ('pg_execute_server_program', 'pg_write_server_files'))
  AND pg_has_role(current_user, r.oid, 'MEMBER')
ORDER BY r.rolname = current_user DESC, r.rolname
"""


def server_powers(cur: Any) -> list[str]:
    """What lets the current role run programs or write files on the server, in words; [] when
    nothing does. READ ONLY does not stop these, so a chat refuses such a role by default."""
    powers = []
    for name, superuser, itself in cur.execute(_POWERS).fetchall():
        if superuser and itself:
            powers.append(f"{name} is a superuser")
        elif superuser:
            powers.append(f"it can become the superuser {name}")
        elif name == "pg_execute_server_program":
            powers.append("it can run programs on the server (pg_execute_server_program)")
        else:
            powers.append("it can write files on the server (pg_write_server_files)")
    return powers
