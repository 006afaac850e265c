"""A query's result and the caps every backend keeps it within (SQLite and PostgreSQL alike)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from chatcli.errors import QueryError

# Longest rendering of one value in results given to the model.
_CELL_CHARS = 200
# Raw text/blob bytes one result may hold: rendering cuts long values, so the character
# cap alone would let 200 rows of 60 MB blobs through.
_MAX_RESULT_BYTES = 32 * 1024 * 1024


def time_limit_message(limit: float) -> str:
    return f"query stopped after {limit:g} s: time limit reached; simplify the query or add a LIMIT"


def _cell(value: object) -> str:
    """One value as compact single-line text, cut to _CELL_CHARS."""
    if value is None:
        return "NULL"
    if isinstance(value, bytes):
        return f"<blob {len(value)} bytes>"
    text = repr(value) if isinstance(value, float) else str(value)
    text = text.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    if len(text) > _CELL_CHARS:
        text = f"{text[:_CELL_CHARS]}…(+{len(text) - _CELL_CHARS} chars)"
    return text


def _line(values: Sequence[object]) -> str:
    return " | ".join(_cell(v) for v in values)


def one_statement(query: object) -> str:
    """The query as a backend runs it, or a QueryError for what is no query at all."""
    if not isinstance(query, str):
        raise QueryError("the query must be a string")
    # "SELECT 1;" is how people write SQL; the trailing ";" is not a second statement.
    query = query.strip().rstrip("; \t\r\n\f\v")
    if not query:
        raise QueryError("empty query")
    return query


class RowCap:
    """The rows of a result up to the caps every backend keeps: ``max_rows`` rows, ``max_chars``
    of result text, ``_MAX_RESULT_BYTES`` of raw values; ``note`` says which one stopped it."""

    def __init__(self, columns: list[str], *, max_rows: int, max_chars: int) -> None:
        self.rows: list[tuple[Any, ...]] = []
        self.note: str | None = None
        self._max_rows, self._max_chars = max_rows, max_chars
        self._size = len(" | ".join(columns))
        self._held = 0

    def add(self, row: Sequence[Any]) -> bool:
        """Keep ``row`` if the caps allow; False once they stop the result (no more rows)."""
        if len(self.rows) == self._max_rows:
            self.note = f"showing first {self._max_rows} rows"
            return False
        self.rows.append(tuple(row))
        self._size += len(_line(row)) + 1
        self._held += sum(len(v) for v in row if isinstance(v, str | bytes))
        if self._size > self._max_chars:
            self.note = (
                f"stopped after {len(self.rows)} rows: the result passed "
                f"{self._max_chars} characters"
            )
        elif self._held > _MAX_RESULT_BYTES:
            self.note = (
                f"stopped after {len(self.rows)} rows: the values passed "
                f"{_MAX_RESULT_BYTES // 2**20} MB; select fewer or shorter columns"
            )
        return self.note is None


@dataclass(slots=True)
class QueryResult:
    """Rows of one query; `truncated` says rows were left out and `note` says why."""

    columns: list[str]
    rows: list[tuple[Any, ...]]
    truncated: bool = False
    note: str | None = None

    def to_text(self, max_chars: int = 16_000) -> str:
        """Render as "a | b" lines (header first) for the model, within about max_chars.

        Rows that do not fit are left out and a closing note says how many; the result
        stays within max_chars whenever max_chars leaves room for that note (>= ~300).
        """
        if not self.columns:
            return self.note or "(no result)"
        # Room for the closing "(text cut ...; <note>)" line, so the note never breaks the cap.
        budget = max_chars - 120 - len(self.note or "")
        header = " | ".join(self.columns)
        if len(header) > budget:
            header = header[: max(budget - 1, 0)] + "…"
        lines = [header]
        budget -= len(header)
        shown = 0
        for row in self.rows:
            line = _line(row)
            if len(line) + 1 > budget:
                break
            lines.append(line)
            budget -= len(line) + 1
            shown += 1
        notes = []
        if not self.rows:
            notes.append("no rows")
        if shown < len(self.rows):
            notes.append(
                f"text cut at {max_chars} characters: {len(self.rows) - shown} of "
                f"{len(self.rows)} rows not shown; select fewer columns or rows"
            )
        if self.note:
            notes.append(self.note)
        if notes:
            lines.append(f"({'; '.join(notes)})")
        return "\n".join(lines)
