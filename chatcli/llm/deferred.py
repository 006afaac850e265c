"""Package initialisers that run when first needed, not when a submodule is imported.

Importing ``langchain_openai.chat_models.base`` runs the ``__init__`` of every package above it
and of every package it reaches. Some of those only gather names from their submodules, and
gathering costs most of a first turn: ``openai.types`` and its subpackages import ~470 generated
modules (chatcli needs ~80), ``langsmith.types`` ~160 (needs 2), ``langchain_openai`` its Azure,
embeddings, completion-LLM, tools and decision modules (~0.25 s). Together ~0.5 s of a cold
``chatcli ask``, with the same packages installed.

A deferred package is made as Python makes it (name, spec, ``__path__``), so its submodules import
as usual; its own ``__init__`` runs, through its own loader, the first time any name is looked up
on it that it does not have yet (PEP 562 ``__getattr__``): whoever uses the package by its full
name afterwards gets all of it. Only an ``__init__`` made of a docstring, imports and ``__all__``
is deferred (checked on its source); any other is imported as it is.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import threading
from collections.abc import Sequence
from types import ModuleType
from typing import Any

PACKAGES = ("openai.types", "langsmith.types", "langchain_openai")  # each with its subpackages

_lock = threading.RLock()


def install(packages: Sequence[str] = PACKAGES) -> None:
    """From now on, the ``__init__`` of these packages (and their subpackages) waits until used;
    a package already imported stays as it is. ``chatcli.llm`` calls it on import."""
    with _lock:
        finder = next((f for f in sys.meta_path if isinstance(f, _Finder)), None)
        if finder is None:
            sys.meta_path.insert(0, _Finder(tuple(packages)))
        else:
            finder.packages += tuple(p for p in packages if p not in finder.packages)


class _Finder(importlib.abc.MetaPathFinder):
    def __init__(self, packages: tuple[str, ...]) -> None:
        self.packages = packages

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if not any(name == p or name.startswith(p + ".") for p in self.packages):
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if (
            spec is None
            or not spec.submodule_search_locations
            or spec.loader is None
            or not spec.origin
            or not _only_gathers_names(spec.origin)
        ):
            return spec  # a plain module, or an __init__ that does more: imported as it is
        spec.loader = _DeferredInit(spec.loader)
        return spec


class _DeferredInit(importlib.abc.Loader):
    """Makes the package module; its real loader runs ``__init__`` on the first missing name.
    Everything else a loader offers (package data, source for tracebacks) is the real one's."""

    def __init__(self, real: Any) -> None:
        self.real = real

    def __getattr__(self, name: str) -> Any:  # get_resource_reader, get_data, is_package, ...
        return getattr(self.real, name)

    def create_module(self, spec: Any) -> ModuleType | None:
        return self.real.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        real = self.real

        def __getattr__(name: str) -> Any:
            _run_init(module, real, __getattr__)
            if name in module.__dict__:
                return module.__dict__[name]
            own = module.__dict__.get("__getattr__")
            if own is not None:
                return own(name)
            raise AttributeError(f"module {module.__name__!r} has no attribute {name!r}")

        module.__getattr__ = __getattr__  # type: ignore[method-assign]


def _run_init(module: ModuleType, real: Any, hook: Any) -> None:
    """Run the package's own ``__init__`` once, under the import system's lock for its name, as
    an import would: another thread importing the package or a submodule meanwhile waits for it,
    and a wait that would deadlock is found by the import system's own detection, which then
    hands over the module as it is (what CPython does for concurrent circular imports). An
    ``__init__`` that fails leaves the package as it was, to be tried (and fail) again on the
    next lookup, as an import would."""
    try:
        from importlib._bootstrap import _DeadlockError, _ModuleLockManager  # type: ignore
    except ImportError:  # another Python's import system: a lock of our own
        _ModuleLockManager, _DeadlockError = (lambda name: _lock), ()
    try:
        with _ModuleLockManager(module.__name__):
            if module.__dict__.get("__getattr__") is not hook:
                return  # it ran already (in another thread, perhaps)
            del module.__dict__["__getattr__"]  # runs once; __init__ may bring its own
            before = dict(module.__dict__)
            spec = module.__spec__
            spec._initializing = True  # type: ignore[union-attr]
            try:
                real.exec_module(module)
            except BaseException:  # as if never run: the next lookup runs it (and fails) again
                module.__dict__.clear()
                module.__dict__.update(before, __getattr__=hook)
                raise
            finally:
                spec._initializing = False  # type: ignore[union-attr]
    except _DeadlockError:
        pass


def _only_gathers_names(origin: str) -> bool:
    """The ``__init__`` at ``origin`` holds only a docstring, imports and ``__all__``, and binds
    no name that is also one of its submodules (which would mean one thing deferred, another
    not: ``from .tool import tool``)."""
    import ast
    import os

    try:
        with open(origin, "rb") as f:
            tree = ast.parse(f.read(), origin)
        entries = os.listdir(os.path.dirname(origin))
    except (OSError, SyntaxError, ValueError):
        return False
    submodules = {e[:-3] if e.endswith(".py") else e for e in entries}
    for i, node in enumerate(tree.body):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            from_itself = isinstance(node, ast.ImportFrom) and node.level == 1 and not node.module
            for alias in node.names:
                bound = alias.asname or alias.name.split(".")[0]
                if bound in submodules and not (from_itself and alias.name == bound):
                    return False
            continue
        if i == 0 and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue  # the docstring
        if (
            isinstance(node, ast.Assign)
            and [getattr(t, "id", None) for t in node.targets] == ["__all__"]
            and isinstance(node.value, (ast.List, ast.Tuple))
            and all(isinstance(e, ast.Constant) for e in node.value.elts)
        ):
            continue
        return False
    return True
