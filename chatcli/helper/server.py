"""The warm helper process (``python -m chatcli.helper RUN_DIR``): import everything a turn
needs once, then fork one child per ``chatcli ask`` that connects; the child runs that command
on the client's own streams. See the package docstring for the rules it keeps."""

from __future__ import annotations

import contextlib
import fcntl
import gc
import io
import json
import os
import signal
import socket
import struct
import sys
import time
import traceback
from pathlib import Path
from typing import Any, NoReturn

from . import IDLE_SECONDS, SOCKET, fingerprint, private_dir

_CHECK_SECONDS = 5.0  # how often an idle helper looks whether its socket is still its own
LOCK, PID, LOG = "helper.lock", "helper.pid", "helper.log"
_log_path = Path(LOG)  # made absolute in main(): a child works in its client's folder


def main(argv: list[str]) -> None:
    os.umask(0o077)  # the socket is created 0600
    folder = Path(argv[0]) if argv else Path(".")
    if not private_dir(folder):
        sys.exit(1)
    os.chdir(folder)  # the socket is bound by its short name: folder paths may be long
    global _log_path
    _log_path = Path.cwd() / LOG
    lock = os.open(LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        sys.exit(0)  # another helper serves this folder
    version = fingerprint()  # before the imports: a file edited meanwhile makes it stale, not new
    warm()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(SOCKET)  # left by a helper that was killed
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(SOCKET)
    os.chmod(SOCKET, 0o600)
    listener.listen(16)
    inode = os.stat(SOCKET).st_ino
    Path(PID).write_text(f"{os.getpid()}\n")
    # Leave from the handler itself: an exception raised there can be swallowed (a signal that
    # lands in a finalizer prints "Exception ignored" and the loop would go on).
    quit_now = lambda signum, frame: (_clean_up(inode), os._exit(0))  # noqa: E731
    signal.signal(signal.SIGTERM, quit_now)
    signal.signal(signal.SIGHUP, quit_now)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    gc.freeze()  # what is imported stays shared with every child, not copied on its first GC
    idle = float(os.environ.get("CHATCLI_HELPER_IDLE") or IDLE_SECONDS)  # tests shorten it
    listener.settimeout(min(_CHECK_SECONDS, idle))
    last = time.monotonic()
    served = 0
    try:
        while True:
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                if time.monotonic() - last > idle or not _still_ours(inode):
                    return
                continue
            last = time.monotonic()
            if not _same_user(conn):
                conn.close()
                continue
            pid = os.fork()
            if pid == 0:
                listener.close()
                os.close(lock)
                _child(conn, version, served)
            served += 1
            conn.close()
    finally:
        _clean_up(inode)


def _clean_up(inode: int) -> None:
    """The socket and pid file go, if they are still this helper's (not a newer one's)."""
    if _still_ours(inode):
        with contextlib.suppress(OSError):
            os.unlink(SOCKET)
        with contextlib.suppress(OSError):
            os.unlink(PID)


def warm() -> None:
    """Import what a turn uses, and make one chat model so pydantic has built its validators."""
    from ..llm import deferred

    deferred.install()  # before LangChain: the package initialisers it does not need wait
    import langchain_core.messages  # noqa: F401
    import rich.console  # noqa: F401
    import rich.live  # noqa: F401
    import rich.markdown  # noqa: F401

    from .. import attaching, cli, mdstream, sql  # noqa: F401
    from ..llm import compat
    from ..repl import oneshot  # noqa: F401
    from ..store import search  # noqa: F401

    compat.chat_model_class()(
        model="warm-up",
        api_key="unused",
        base_url="http://127.0.0.1:9/v1",
        http_client=compat.http_client(tls=False),
        http_async_client=compat.unused_async_client(),
    )
    compat.http_client(tls=True)  # connection pools stay empty here: safe to share with a fork
    import threading

    assert threading.active_count() == 1, "fork() needs a helper without threads"


def _still_ours(inode: int) -> bool:
    try:
        return os.stat(SOCKET).st_ino == inode
    except OSError:
        return False


def _same_user(conn: socket.socket) -> bool:
    if not hasattr(socket, "SO_PEERCRED"):
        return True  # elsewhere the 0700 folder is the guard
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid == os.getuid()


def _child(conn: socket.socket, version: str, served: int) -> NoReturn:
    """Become the client's ``chatcli ARGV`` on its streams; report the exit status."""
    code = 1
    try:
        for name in ("SIGCHLD", "SIGTERM", "SIGHUP"):
            signal.signal(getattr(signal, name), signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        header, fds, _flags, _addr = socket.recv_fds(conn, 8, 3)
        request = json.loads(_exactly(conn, struct.unpack("!Q", header)[0]))
        op = request.get("op")
        if op == "status":
            _tell(conn, {"pid": os.getppid(), "version": version, "served": served})
            os._exit(0)
        if op == "stop" or request.get("version") != version:
            # a newer chatcli asks: this helper gives way (the client runs the turn itself)
            _tell(conn, {"stopped": os.getppid()})
            os.kill(os.getppid(), signal.SIGTERM)
            os._exit(0)
        if op != "run" or len(fds) != 3:
            os._exit(1)
        _adopt(fds, request)
        _tell(conn, {"pid": os.getpid()})
        code = _run(request["argv"])
    except BaseException:  # a bug here must still answer the client, never hang it
        _log()
    with contextlib.suppress(OSError):
        _tell(conn, {"exit": code})
    os._exit(code)


def _adopt(fds: list[int], request: dict[str, Any]) -> None:
    """The client's streams, folder and environment become this process's own."""
    for target, fd in enumerate(fds):
        if fd != target:
            os.dup2(fd, target)
            os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    time.tzset()
    (ienc, ierr), (oenc, oerr), (eenc, eerr) = request["io"]
    sys.stdin = sys.__stdin__ = open(0, encoding=ienc, errors=ierr, closefd=False)  # noqa: SIM115
    sys.stdout = sys.__stdout__ = _text(1, oenc, oerr, line_buffering=os.isatty(1))
    sys.stderr = sys.__stderr__ = _text(2, eenc, eerr, line_buffering=True)  # as Python's own


def _text(fd: int, encoding: str | None, errors: str | None, *, line_buffering: bool) -> Any:
    raw = io.FileIO(fd, "w", closefd=False)
    return io.TextIOWrapper(
        io.BufferedWriter(raw), encoding=encoding, errors=errors, line_buffering=line_buffering
    )


def _run(argv: list[str]) -> int:
    from .. import helper

    helper.IN_CHILD = True
    sys.argv = ["chatcli", *argv]
    from ..cli import main

    try:
        main()
    except SystemExit as e:
        if isinstance(e.code, int) or e.code is None:
            return e.code or 0
        print(e.code, file=sys.stderr)
        return 1
    finally:
        helper.flush()
    return 0


def _exactly(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        part = conn.recv(n - len(data))
        if not part:
            raise EOFError("the client went away")
        data += part
    return data


def _tell(conn: socket.socket, obj: dict[str, Any]) -> None:
    conn.sendall(json.dumps(obj).encode() + b"\n")


def _log() -> None:
    """A traceback into the run folder's log (never the request: it holds the API key)."""
    with contextlib.suppress(OSError), open(_log_path, "a", encoding="utf-8") as f:
        f.write(time.strftime("%Y-%m-%d %H:%M:%S ") + traceback.format_exc())
