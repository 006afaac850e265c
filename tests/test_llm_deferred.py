"""Deferred package initialisers (chatcli/llm/deferred.py): each case runs in a fresh Python, with
real packages on disk, so the import system is the real one and nothing leaks between tests."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest


def run(code: str, path: Path | None = None) -> str:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        cwd=path,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.fixture
def packages(tmp_path: Path) -> Path:
    """``gather``: an __init__ that only gathers names (and counts its runs in ``runs``);
    ``busy``: one that also does something."""
    (tmp_path / "runs.py").write_text("count = []\n")
    gather = tmp_path / "gather"
    (gather / "inner").mkdir(parents=True)
    (gather / "__init__.py").write_text(
        '"""Gathers names."""\n'
        "import runs\n"
        "from .a import X as X\n"
        "from .inner import Y\n"
        "__all__ = ['X', 'Y']\n"
    )
    (gather / "a.py").write_text("import runs\nruns.count.append('a')\nX = 'x'\n")
    (gather / "b.py").write_text("Z = 'z'\n")
    (gather / "inner" / "__init__.py").write_text("from .c import Y\n")
    (gather / "inner" / "c.py").write_text("Y = 'y'\n")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "__init__.py").write_text("import runs\nruns.count.append('busy')\n")
    shadow = tmp_path / "shadow"  # binds a name that is also its submodule's
    shadow.mkdir()
    (shadow / "__init__.py").write_text(
        "import runs\nruns.count.append('shadow')\nfrom .tool import tool\n"
    )
    (shadow / "tool.py").write_text("def tool(): pass\n")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "__init__.py").write_text("from .ok import OK\nfrom .missing import X\n")
    (broken / "ok.py").write_text("OK = 1\n")
    (gather / "data.txt").write_text("package data")
    return tmp_path


PRELUDE = """
    import sys
    sys.path.insert(0, '.')
    from chatcli.llm import deferred
    deferred.install(('gather', 'busy', 'shadow', 'broken'))
    import runs
"""


def test_a_submodule_imports_without_its_package_init(packages: Path) -> None:
    out = run(
        PRELUDE
        + """
    from gather.b import Z
    print(Z, runs.count, 'gather.a' in sys.modules, 'gather.inner' in sys.modules)
    """,
        packages,
    )
    assert out == "z [] False False"


def test_the_first_missing_name_runs_the_init_once(packages: Path) -> None:
    out = run(
        PRELUDE
        + """
    import gather
    print(gather.X, gather.Y, gather.a.X, runs.count)
    from gather import X, Y, inner
    from gather import *
    print(X, Y, inner.Y, sorted(n for n in dir() if n in ('X', 'Y')), runs.count)
    try:
        gather.nothing
    except AttributeError as e:
        print('missing:', e)
    """,
        packages,
    )
    assert out.splitlines() == [
        "x y x ['a']",
        "x y y ['X', 'Y'] ['a']",
        "missing: module 'gather' has no attribute 'nothing'",
    ]


def test_an_init_that_does_more_runs_at_once(packages: Path) -> None:
    out = run(PRELUDE + "\n    import busy\n    print(runs.count)\n", packages)
    assert out == "['busy']"


def test_an_init_binding_a_submodule_name_runs_at_once(packages: Path) -> None:
    out = run(
        PRELUDE + "\n    import shadow\n    print(runs.count, type(shadow.tool).__name__)\n",
        packages,
    )
    assert out == "['shadow'] function"


def test_a_failing_init_fails_again_on_every_lookup(packages: Path) -> None:
    out = run(
        PRELUDE
        + """
    import broken
    for _ in range(2):
        try:
            from broken import OK
            print('got', OK)
        except ImportError as e:
            print('ImportError', e.name)
    """,
        packages,
    )
    assert out.splitlines() == ["ImportError broken.missing"] * 2


def test_package_data_reads_through_the_real_loader(packages: Path) -> None:
    out = run(
        PRELUDE
        + """
    import importlib.resources, pkgutil, gather
    print(importlib.resources.files('gather').joinpath('data.txt').read_text())
    print(pkgutil.get_data('gather', 'data.txt').decode(), runs.count)
    """,
        packages,
    )
    assert out.splitlines() == ["package data", "package data []"]


def test_threads_importing_openai_and_using_langchain_openai_never_hang() -> None:
    # one thread inside openai's own first import, another running a deferred __init__ it
    # needs: a private lock deadlocked here; the import system's lock does not
    out = run(
        """
        import sys, threading, time
        import chatcli.llm, langchain_core.messages, langchain_openai
        b = threading.Thread(target=lambda: __import__('openai'), daemon=True)
        a = threading.Thread(target=lambda: langchain_openai.ChatOpenAI, daemon=True)
        b.start(); a.start(); a.join(20); b.join(20)
        print('hung' if a.is_alive() or b.is_alive() else 'ok')
        """
    )
    assert out == "ok"


def test_the_model_layer_imports_a_fraction_and_the_packages_stay_whole() -> None:
    out = run(
        """
        import sys
        from chatcli.llm import compat
        compat.chat_model_class()
        few = sum(m.startswith(('openai.types', 'langsmith.types')) for m in sys.modules)
        import openai, langsmith.types
        from langchain_openai import OpenAIEmbeddings, ChatOpenAI
        from langchain_openai.chat_models import AzureChatOpenAI
        assert ChatOpenAI is compat.chat_openai_class()
        print(few < 150, openai.types.ChatModel is not None, langsmith.types.Run is not None)
        from openai.types.responses import ResponseInputText
        print(ResponseInputText.__module__)
        """
    )
    assert out.splitlines() == [
        "True True True",
        "openai.types.responses.response_input_text",
    ]


def test_langchain_core_imported_first_is_deferred_too() -> None:
    # the REPL builds its request (langchain_core.messages) before the model class exists
    out = run(
        """
        import sys
        import chatcli.llm
        from langchain_core.messages import HumanMessage, trim_messages
        trim_messages([HumanMessage("hi")], max_tokens=10, token_counter=len)
        print(sum(m.startswith('langsmith.types') for m in sys.modules) < 10)
        """
    )
    assert out == "True"
