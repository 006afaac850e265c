"""The command line: a thin Typer layer over the core. Each command parses, makes one core call,
and turns core errors into one line and an exit code (``app``'s error boundary).

Each module registers its commands on ``app``; ``--help`` lists them in this order."""

from . import sessions  # noqa: F401

# isort: split
from . import data  # noqa: F401

# isort: split
from . import admin  # noqa: F401
from .app import app, main

__all__ = ["app", "main"]
