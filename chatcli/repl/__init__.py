"""The chat REPL: :mod:`.chat` (a session's lifecycle and one turn), :mod:`.commands` (the slash
commands), :mod:`.prompt` (prompt_toolkit: the input line, keys, toolbar, completion)."""

from __future__ import annotations

from .chat import REPLAY_TURNS, Chat, start_new, start_resume

__all__ = ["REPLAY_TURNS", "Chat", "start_new", "start_resume"]
