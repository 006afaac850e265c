"""The warm helper: a background process that keeps chatcli and LangChain imported, so that a
``chatcli ask`` within its idle time starts its turn at once instead of importing for a second.

How it works: ``chatcli ask`` connects to ``<storage>/run/helper.sock`` and hands over its
argument list, working folder, environment (the API key with it: per request, in memory, never
written anywhere) and its three standard streams (file descriptors passed over the socket). The
helper forks; the child *is* that ``chatcli ask`` from then on: it runs the very same code on the
same streams (the request still goes through langchain-openai, the turn is saved the same way)
and reports its exit status. Ctrl-C and SIGTERM reaching ``ask`` are passed on to that child.

Rules it keeps: the folder is 0700 and the socket 0600, and a connection from another user is
refused; it serves only the chatcli it was started from (same version, same files, same Python)
and gives way to a newer one; it quits after IDLE_SECONDS without a request, or when its socket
is removed; ``helper = false`` in the config (or CHATCLI_HELPER=0) turns it off; and
``chatcli ask`` works the same without it: when no helper answers, the turn runs in-process and a
helper is started afterwards for next time. ``chatcli helper --stop`` stops it.

This module is the client side and uses the standard library only; server.py is the helper.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import stat
import struct
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

IDLE_SECONDS = 600  # the helper quits after 10 minutes without a request (CHATCLI_HELPER_IDLE)
RUN_DIR = "run"
SOCKET = "helper.sock"
IN_CHILD = False  # True in a process forked by the helper (that process never asks a helper)
_HEADER = struct.Struct("!Q")
_SHORT_PATH = 100  # AF_UNIX paths are limited to ~104-108 bytes: longer ones are reached by name


def run_dir(root: Path) -> Path:
    return root / RUN_DIR


def fingerprint() -> str:
    """What the helper must share with its client: chatcli's version, the Python running it and
    every source file's size and mtime (an edited or reinstalled chatcli gets a fresh helper)."""
    from .. import __version__

    package = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256(f"{__version__}|{sys.executable}|{sys.version}".encode())
    for folder, dirs, names in os.walk(package):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(names):
            if name.endswith(".py"):
                st = os.stat(os.path.join(folder, name))
                digest.update(f"{folder}/{name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return digest.hexdigest()[:32]


def private_dir(path: Path) -> bool:
    """``path`` is a folder of ours that no one else may enter (0700, not a link)."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and not st.st_mode & 0o077


def connect(root: Path) -> socket.socket | None:
    """A connection to the helper of this storage root, or None (none there, or not private)."""
    folder = run_dir(root)
    if not private_dir(folder):
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        path = folder / SOCKET
        if len(os.fsencode(path)) < _SHORT_PATH:
            sock.connect(os.fsencode(path))
        else:
            here = os.open(".", os.O_RDONLY)
            try:
                os.chdir(folder)
                sock.connect(SOCKET)
            finally:
                os.fchdir(here)
                os.close(here)
    except OSError:
        sock.close()
        return None
    return sock


def send(sock: socket.socket, request: dict[str, Any], fds: Sequence[int] = ()) -> None:
    """One request: its length (with the file descriptors, if any), then its JSON."""
    payload = json.dumps(request).encode()
    socket.send_fds(sock, [_HEADER.pack(len(payload))], list(fds))
    sock.sendall(payload)


def real_process(term: Any) -> bool:
    """``term`` holds this process's own streams (not Typer's CliRunner, not a test's in-memory
    terminal): only then can they be handed to a helper, or the process leave with os._exit."""
    return term.stdout is sys.__stdout__ and term.stdin is sys.__stdin__


def run_remote(root: Path, argv: Sequence[str], *, real: bool) -> int | None:
    """Run ``chatcli ARGV`` in a process forked from the warm helper, on this process's streams.
    Returns its exit status, or None when no helper took the request (nothing was done then)."""
    from .. import config

    if not real or IN_CHILD or not config.Settings()["helper"]:
        return None
    sock = connect(root)
    if sock is None:
        return None
    with sock:
        streams = (sys.stdin, sys.stdout, sys.stderr)
        request = {
            "op": "run",
            "version": fingerprint(),
            "argv": list(argv),
            "cwd": os.getcwd(),
            "env": dict(os.environ),
            "io": [[getattr(s, "encoding", None), getattr(s, "errors", None)] for s in streams],
        }
        try:
            for stream in streams[1:]:
                stream.flush()
            send(sock, request, [0, 1, 2])
            replies = sock.makefile("rb")
            first = _reply(replies)
        except OSError:
            return None
        if not isinstance(first.get("pid"), int):
            return None  # a helper of another chatcli (it is quitting), or one that just died
        child = first["pid"]

        def forward(signum: int, frame: Any) -> None:
            try:
                os.kill(child, signum)
            except OSError:
                pass

        for name in ("SIGINT", "SIGTERM", "SIGHUP"):
            if hasattr(signal, name):
                signal.signal(getattr(signal, name), forward)
        try:
            last = _reply(replies)
        except OSError:
            last = {}
        if isinstance(last.get("exit"), int):
            return last["exit"]
    from ..render import error_line

    print(
        error_line(
            "the process running this turn in the chatcli helper ended before it finished "
            "(what had been saved is kept; run the command again)"
        ),
        file=sys.stderr,
    )
    return 1


def _reply(stream: Any) -> dict[str, Any]:
    line = stream.readline()
    if not line:
        return {}
    value = json.loads(line)
    return value if isinstance(value, dict) else {}


def ask_helper(root: Path, op: str) -> dict[str, Any] | None:
    """Ask the helper something ("status" or "stop"); None when no helper answers."""
    sock = connect(root)
    if sock is None:
        return None
    with sock:
        try:
            send(sock, {"op": op})
            return _reply(sock.makefile("rb")) or None
        except OSError:
            return None


def spawn(root: Path) -> None:
    """Start a helper for this storage root in the background (it quits at once if one runs).
    Best effort: without it chatcli works the same, only slower to start."""
    import subprocess

    folder = run_dir(root)
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not private_dir(folder):
            return  # someone else's, or opened up: no socket of ours goes there
        env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}  # never kept
        subprocess.Popen(
            [sys.executable, "-m", "chatcli.helper", str(folder)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=folder,
            env=env,
            start_new_session=True,  # no terminal: Ctrl-C in the shell never reaches it
            close_fds=True,
        )
    except OSError:
        pass


def flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can reach it anyway
            pass


def leave(code: int) -> None:
    """Flush and exit now: everything is saved (each save is fsynced); tearing down LangChain's
    modules and threads is not worth waiting for."""
    flush()
    os._exit(code)
