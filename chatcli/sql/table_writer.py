"""The table an import writes: column names from a header, column types from a sample, and
:class:`TableWriter`, which inserts batches and widens a column to TEXT when it must.

Column types come from the first rows (chatcli.sql.loaders.SAMPLE_ROWS): INTEGER when every
non-empty value is a plain integer (no sign "+", no leading zero, at most 18 digits, so "007"
and phone numbers stay text), REAL when every one is such an integer or a decimal number, TEXT
otherwise; an empty CSV cell is NULL. Later rows rely on SQLite's type affinity: a value that is
not a number ("N/A") is stored in a numeric column as the TEXT it is, and a number is stored as
a number. Only a value that SQLite would silently rewrite ("007" into 7, "+44..." into 44...,
" 5" into 5) makes the column TEXT: the table is rebuilt then, and the numbers already stored
become their SQLite text form (exact for integers; 1.50 reads back as 1.5). JSON values keep
their JSON types; Parquet columns keep the file's own types.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterable, Sequence
from operator import itemgetter
from typing import Any, Literal

# One cell of each type, then a whole column of them joined by "\n" (one C-level match per
# column and batch instead of a Python call per cell).
_INT = r"-?(?:0|[1-9][0-9]{0,17})"
_REAL = _INT + r"|-?(?:(?:0|[1-9][0-9]*)\.[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
_REAL += r"|-?(?:0|[1-9][0-9]*)[eE][+-]?[0-9]+"
_CELL = {"INTEGER": re.compile(_INT), "REAL": re.compile(_REAL)}
_COLUMN = {
    t: re.compile(rf"(?:(?:{p})?\n)*(?:{p})?") for t, p in (("INTEGER", _INT), ("REAL", _REAL))
}
_LEADING_ZERO = re.compile(rb"\n-?0[0-9]")  # "007": affinity would store 7
# What SQLite's numeric affinity turns into a number (leading and trailing spaces allowed).
_NUMERIC_LOOKING = re.compile(r"\s*[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\s*")


# Names


def column_names(raw: Iterable[str]) -> list[str]:
    """Header cells as column names: stripped, empty ones numbered, duplicates suffixed."""
    names: list[str] = []
    for i, cell in enumerate(raw, 1):
        names.append(unique_name(str(cell).strip() or f"column_{i}", names))
    return names


def unique_name(name: str, names: list[str]) -> str:
    """``name``, or ``name_2``, ``name_3``... if a column of that name (any case) exists."""
    used = {n.lower() for n in names}  # SQLite column names are case-insensitive
    candidate, n = name, 1
    while candidate.lower() in used:
        n += 1
        candidate = f"{name}_{n}"
    return candidate


def quote_ident(name: str) -> str:
    """An SQL identifier in double quotes, embedded quotes doubled."""
    return '"' + name.replace('"', '""') + '"'


# The table being written


class TableWriter:
    """Creates one table and inserts batches into it, making a column TEXT when a later value
    would be rewritten by the numeric affinity chosen from the sample."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        table: str,
        columns: list[str],
        types: list[str],
        *,
        source: Literal["csv", "json", "parquet"],
    ) -> None:
        self.conn, self.table, self.source = conn, table, source
        self.columns, self.types = columns, types
        self.rows = 0
        self._create(table, types)
        self._sql = self._insert_sql()
        self._sql_for: dict[frozenset[int], str] = {}  # by the columns that skip NULLIF

    def _create(self, name: str, types: list[str]) -> None:
        defs = ", ".join(f"{quote_ident(c)} {t}" for c, t in zip(self.columns, types, strict=True))
        self.conn.execute(f"CREATE TABLE {quote_ident(name)} ({defs})")

    def _insert_sql(self, plain: frozenset[int] = frozenset()) -> str:
        # NULLIF in SQL rather than a Python test per cell: empty CSV cells become NULL in C.
        # Columns in `plain` have no empty cell in this batch and skip it (-8% insert time).
        marks = ", ".join(
            "?" if self.source != "csv" or j in plain else "NULLIF(?, '')"
            for j in range(len(self.columns))
        )
        return f"INSERT INTO {quote_ident(self.table)} VALUES ({marks})"

    def add_column(self, name: str, type_: str) -> None:
        self.conn.execute(
            f"ALTER TABLE {quote_ident(self.table)} ADD COLUMN {quote_ident(name)} {type_}"
        )
        self.columns.append(name)
        self.types.append(type_)
        self._sql = self._insert_sql()
        self._sql_for.clear()

    def insert(self, rows: list[Sequence[Any]]) -> None:
        if not rows:
            return
        sql = self._sql
        if self.source != "parquet":  # Parquet values already have their column's type
            plain = self._check(rows)
            if plain:
                sql = self._sql_for.get(plain) or self._sql_for.setdefault(
                    plain, self._insert_sql(plain)
                )
        self.conn.executemany(sql, rows)
        self.rows += len(rows)

    def _check(self, rows: list[Sequence[Any]]) -> frozenset[int]:
        """Widen what must be; return the numeric CSV columns without an empty cell."""
        plain = []
        for j, type_ in enumerate(self.types):
            if type_ == "TEXT":
                continue
            if self.source == "csv":
                joined = "\n".join(map(itemgetter(j), rows))
                if _safe_numbers(joined, type_) or _COLUMN[type_].fullmatch(joined):
                    if (
                        joined[:1] != "\n"
                        and joined[-1:] not in ("\n", "")
                        and "\n\n" not in joined
                    ):
                        plain.append(j)
                    continue
                cell = _CELL[type_]
                odd: Iterable[Any] = (v for v in joined.split("\n") if v and not cell.fullmatch(v))
            else:
                odd = (v for v in map(itemgetter(j), rows) if type(v) is str)
            if any(_NUMERIC_LOOKING.fullmatch(v) for v in odd):
                self._widen(j)
        return frozenset(plain)

    def _widen(self, j: int) -> None:
        """Rebuild the table with column j as TEXT (SQLite cannot change a column's type)."""
        types = [*self.types[:j], "TEXT", *self.types[j + 1 :]]
        staging = f"{self.table}__chatcli_widening"
        self.conn.execute(f"DROP TABLE IF EXISTS {quote_ident(staging)}")
        self._create(staging, types)
        self.conn.execute(
            f"INSERT INTO {quote_ident(staging)} SELECT * FROM {quote_ident(self.table)}"
        )
        self.conn.execute(f"DROP TABLE {quote_ident(self.table)}")
        self.conn.execute(f"ALTER TABLE {quote_ident(staging)} RENAME TO {quote_ident(self.table)}")
        self.types = types


def _safe_numbers(joined: str, type_: str) -> bool:
    """A fast test (a few C-level passes over bytes) that SQLite's affinity rewrites none of
    these "\n"-joined cells: true for nearly every batch of a numeric column. Cells such as
    "1-2" or "1.2.3" pass, but SQLite keeps those as text anyway. False means: look closer."""
    data = joined.encode()
    rest = data.translate(None, b"\n-." if type_ == "REAL" else b"\n-")
    if rest and not rest.isdigit():  # bytes.isdigit is ASCII-only, unlike str.isdigit
        return False
    if _LEADING_ZERO.search(b"\n" + data):
        return False
    return type_ == "REAL" or max(map(len, data.split(b"\n"))) <= 18  # longer: not an int64


def text_types(sample: list[list[str]], width: int) -> list[str]:
    """The type of each of ``width`` CSV columns, from a sample of rows of text cells."""
    columns = list(zip(*sample, strict=True)) if sample else [()] * width
    types = []
    for values in columns:
        joined = "\n".join(values)
        if not any(values):
            types.append("TEXT")
        elif _COLUMN["INTEGER"].fullmatch(joined):
            types.append("INTEGER")
        elif _COLUMN["REAL"].fullmatch(joined):
            types.append("REAL")
        else:
            types.append("TEXT")
    return types


def value_type(values: Iterable[Any]) -> str:
    """The column type for decoded JSON values (None aside)."""
    kinds = {type(v) for v in values if v is not None}
    if kinds and kinds <= {int, bool}:
        return "INTEGER"
    if kinds and kinds <= {int, bool, float}:
        return "REAL"
    return "TEXT"


def sql_value(v: Any) -> Any:
    """A decoded JSON or Parquet value as something sqlite3 can bind."""
    t = type(v)
    if v is None or t is str or t is float or t is bytes:
        return v
    if t is int or t is bool:
        return int(v) if -(2**63) <= v < 2**63 else str(v)  # past int64 sqlite3 overflows
    if t is dict or t is list:
        return json.dumps(v, ensure_ascii=False, default=str)
    return str(v)  # datetime, date, Decimal...: their str() is the ISO / exact text
