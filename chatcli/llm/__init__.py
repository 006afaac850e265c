"""The model: the only package that imports LangChain.

``request`` builds a valid request from any memory file, ``turn`` streams one turn and runs its
tools, ``compat`` mends what real servers stream, ``server`` asks a server about itself.
``import langchain_openai`` costs about a second, so nothing imports it at module level:
``preload()`` starts the import in the background once the prompt is on screen, and the first
turn simply waits for it if the user was quicker.
"""

from __future__ import annotations

import threading
from typing import Any

from . import deferred
from .server import ServerFacts, list_models, probe
from .turn import (
    REASONING,
    Event,
    Model,
    Note,
    Saved,
    TextDelta,
    ThinkingDelta,
    ToolRun,
    Turn,
    load_error,
)

deferred.install()  # before anything here imports LangChain (all of it imports it lazily)

__all__ = [
    "REASONING",
    "Event",
    "Model",
    "Note",
    "Saved",
    "ServerFacts",
    "TextDelta",
    "ThinkingDelta",
    "ToolRun",
    "Turn",
    "human_dict",
    "list_models",
    "normalize_messages",
    "preload",
    "probe",
]

_preload_thread: threading.Thread | None = None


def preload() -> None:
    """Import LangChain in a background thread so the first turn need not wait for it."""
    global _preload_thread
    if _preload_thread is None:
        _preload_thread = threading.Thread(target=_import_langchain, daemon=True, name="preload")
        _preload_thread.start()


def _import_langchain() -> None:
    try:
        import langchain_core.messages  # noqa: F401

        from . import compat

        compat.chat_model_class()
    except Exception:  # the foreground import will report it properly
        pass


def human_dict(text: str) -> dict[str, Any]:
    """A human message in the memory-file format (``message_to_dict``)."""
    from langchain_core.messages import HumanMessage, message_to_dict

    return message_to_dict(HumanMessage(content=text))


def normalize_messages(dicts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Load message dicts through LangChain and dump them again: exactly what a save writes.

    Raises ValueError naming the first message LangChain cannot load (used to check imports).
    """
    from langchain_core.messages import message_to_dict, messages_from_dict

    result = []
    for i, d in enumerate(dicts):
        try:
            (message,) = messages_from_dict([d])
        except Exception as e:  # pydantic's ValidationError, KeyError for a missing field, ...
            raise ValueError(f"message {i} cannot be loaded: {load_error(e)}") from e
        result.append(message_to_dict(message))
    return result
