"""Typed errors raised by the core; the CLI turns them into one-line messages and exit codes."""

from __future__ import annotations

from enum import IntEnum
from pathlib import Path


class ExitCode(IntEnum):
    OK = 0
    ERROR = 1
    USAGE = 2
    INTERRUPTED = 130


class ChatcliError(Exception):
    """A failure the user can act on: shown as one line, never as a traceback."""

    exit_code: ExitCode = ExitCode.ERROR

    def __init__(self, message: str, *, path: Path | str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.path = path

    def __str__(self) -> str:
        return f"{self.message} ({self.path})" if self.path else self.message


class SessionNotFound(ChatcliError):
    """The id names no session, or is not a session id at all."""

    exit_code = ExitCode.USAGE


class AmbiguousSession(ChatcliError):
    """An id prefix matches more than one session."""

    exit_code = ExitCode.USAGE

    def __init__(self, message: str, *, candidates: list[str]) -> None:
        super().__init__(message)
        self.candidates = candidates


class DamagedSession(ChatcliError):
    """A memory file cannot be parsed; it is left exactly as it is."""


class InvalidDatabase(ChatcliError):
    """A file offered as a database is not a readable SQLite database."""


class StorageError(ChatcliError):
    """The storage folder cannot be read or written (permissions, full disk)."""


class ConfigError(ChatcliError):
    """The config file or a setting is invalid, or a required one (the API key) is missing."""


class ModelError(ChatcliError):
    """The model server failed: unreachable, HTTP error, broken stream."""


class QueryError(ChatcliError):
    """A SQL statement was refused by the read-only sandbox or failed."""


class DataFileError(ChatcliError):
    """A CSV, JSON or Parquet file cannot be imported; the message names the line if any."""


class TableExists(ChatcliError):
    """Importing a file would overwrite an existing table, and replacing was not asked for."""


def unexpected(error: BaseException) -> str:
    """The one line for an error chatcli did not expect (a bug): its kind and the first line of
    its text, with any password in a URL taken out (exception texts may carry one)."""
    from .text import strip_passwords

    lines = str(error).strip().splitlines()
    said = f"unexpected {type(error).__name__}" + (f": {lines[0]}" if lines else "")
    return strip_passwords(said)
