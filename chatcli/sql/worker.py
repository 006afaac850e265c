"""The worker process that runs the statements, and the parent's handle on it.

Every statement runs in a child process, so that a statement the progress handler cannot
stop (one SQL function call doing all its work inside one VM step, such as instr() over
two huge strings) still ends at the time limit: the parent kills the child. The child
speaks JSON lines: a request {"op", "arg", "timeout", "max_rows", "max_chars"} on stdin, a
reply {"ok": result} or {"error": message} on stdout. Only capped results cross the pipe.
The child imports this package with `python -I -S`: it must need the standard library only.
"""

from __future__ import annotations

import base64
import contextlib
import json
import math
import os
import queue
import signal
import sys
import threading
import weakref
from pathlib import Path
from typing import Any

from chatcli.errors import ChatcliError, QueryError

from . import schema
from .result import QueryResult
from .sandbox import OUT_OF_MEMORY, Sandbox

__all__ = ["KILL_GRACE", "START_SECONDS", "WorkerProcess", "decode_result", "main"]

# The worker's whole address space: Python, SQLite's heap and the result on its way out.
_ADDRESS_SPACE = 1024 * 1024 * 1024
# How long past its time limit a statement may run before the worker is killed. The worker
# stops ordinary statements itself at the limit; only one that the progress handler cannot
# reach (a single SQL function call doing all the work) runs into this.
KILL_GRACE = 1.0
# How long a new worker may take to start and open the database.
START_SECONDS = 20.0


def _encode_bytes(value: Any) -> Any:
    """json.dumps(default=...): bytes as {"b64": ...}; int, float, str and None need nothing."""
    if isinstance(value, bytes):
        return {"b64": base64.b64encode(value).decode("ascii")}
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _decode_value(value: Any) -> Any:
    if isinstance(value, dict):
        return base64.b64decode(value["b64"])
    return value


def _encode_result(result: QueryResult) -> dict[str, Any]:
    """run_sql's reply: the rows as JSON lists; bytes are encoded by _encode_bytes."""
    return {
        "columns": result.columns,
        "rows": result.rows,
        "blobs": any(isinstance(v, bytes) for row in result.rows for v in row),
        "truncated": result.truncated,
        "note": result.note,
    }


def decode_result(reply: dict[str, Any]) -> QueryResult:
    """The QueryResult that _encode_result sent over the pipe."""
    if reply["blobs"]:
        rows = [tuple(_decode_value(v) for v in row) for row in reply["rows"]]
    else:
        rows = [tuple(row) for row in reply["rows"]]
    return QueryResult(
        list(reply["columns"]), rows, truncated=bool(reply["truncated"]), note=reply["note"]
    )


def _limit_worker() -> None:
    """Limit the worker itself: it may write no file at all, nor grow without bound."""
    try:
        import resource
    except ImportError:  # Windows: no rlimits; the time limit (kill) still holds
        return
    if hasattr(signal, "SIGXFSZ"):
        # Writing past RLIMIT_FSIZE then fails with EFBIG (an SQLite I/O error) instead of
        # killing the process.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    for which, value in (
        (resource.RLIMIT_CORE, 0),
        (resource.RLIMIT_FSIZE, 0),
        (resource.RLIMIT_AS, _ADDRESS_SPACE),
    ):
        with contextlib.suppress(ValueError, OSError):  # e.g. RLIMIT_AS on macOS
            _, hard = resource.getrlimit(which)
            if hard != resource.RLIM_INFINITY:
                value = min(value, hard)
            resource.setrlimit(which, (value, value))


def _cpu_backstop(seconds: float) -> None:
    """Let the kernel end this worker should it run on with nobody left to kill it."""
    try:
        import resource
    except ImportError:
        return
    with contextlib.suppress(ValueError, OSError):
        usage = resource.getrusage(resource.RUSAGE_SELF)
        _, hard = resource.getrlimit(resource.RLIMIT_CPU)
        soft = math.ceil(usage.ru_utime + usage.ru_stime + seconds) + 10
        if hard != resource.RLIM_INFINITY:
            soft = min(soft, hard)
        resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


def _serve(sandbox: Sandbox, request: dict[str, Any]) -> Any:
    sandbox.timeout = float(request["timeout"])
    sandbox.max_rows = int(request["max_rows"])
    sandbox.max_chars = int(request["max_chars"])
    op, arg = request["op"], request.get("arg")
    if op == "run_sql":
        return _encode_result(sandbox.run_sql(arg))
    if op == "list_tables":
        return schema.list_tables(sandbox)
    if op == "describe_table":
        return schema.describe_table(sandbox, arg)
    if op == "schema_summary":
        return schema.schema_summary(sandbox, arg)
    raise QueryError(f"unknown request {op!r}")


def main(path: str) -> None:
    """The worker process: open `path` in the sandbox and answer requests until stdin ends."""
    import warnings

    warnings.simplefilter("ignore")  # nothing may block on a stderr nobody reads
    if hasattr(signal, "SIGINT"):
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    out = sys.stdout.buffer
    sys.stdout = sys.stderr  # a stray print() must not corrupt the replies

    def send(reply: dict[str, Any]) -> None:
        try:
            data = json.dumps(reply, separators=(",", ":"), default=_encode_bytes).encode("ascii")
        except MemoryError:
            data = json.dumps({"error": OUT_OF_MEMORY}).encode("ascii")
        out.write(data + b"\n")
        out.flush()

    try:
        _limit_worker()
        try:
            sandbox = Sandbox(Path(path))
        except ChatcliError as e:
            send({"error": e.message})
            return
        send({"ok": True})
        for line in sys.stdin.buffer:
            try:
                request = json.loads(line)
                _cpu_backstop(2 * float(request["timeout"]) + KILL_GRACE)
                reply: dict[str, Any] = {"ok": _serve(sandbox, request)}
            except ChatcliError as e:
                reply = {"error": e.message}
            except MemoryError:
                reply = {"error": OUT_OF_MEMORY}
            except Exception as e:  # a bug: say so in one line, keep serving
                reply = {"error": f"internal error in the SQL worker: {type(e).__name__}: {e}"}
            send(reply)
    except (BrokenPipeError, KeyboardInterrupt):  # the parent is gone
        pass


def _pump(stream: Any, replies: queue.SimpleQueue[bytes | None]) -> None:
    """Reader thread: hand each line the worker writes to the waiting call; None at the end."""
    try:
        for line in stream:
            replies.put(line)
    except (OSError, ValueError):
        pass
    finally:
        replies.put(None)
        with contextlib.suppress(OSError, ValueError):
            stream.close()


def _kill(proc: Any) -> None:
    with contextlib.suppress(OSError):
        proc.kill()
    with contextlib.suppress(Exception):
        proc.wait(timeout=5)
    for stream in (proc.stdin, proc.stderr):  # stdout is closed by its reader thread
        with contextlib.suppress(OSError, ValueError):
            stream.close()


class WorkerProcess:
    """One worker process and the thread that reads its replies."""

    def __init__(self, path: Path) -> None:
        import subprocess

        # -I -S: no PYTHON* variables, no user or site packages; only the standard library
        # and the folder holding this package are needed.
        package_root = str(Path(__file__).resolve().parents[2])
        code = (
            "import sys; sys.path.append(sys.argv[1]); "
            "from chatcli.sql.worker import main; main(sys.argv[2])"
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", code, package_root, os.path.abspath(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            close_fds=True,
            # Its own session: a terminal's Ctrl-C goes to chatcli alone, which decides.
            start_new_session=os.name == "posix",
        )
        # Killed when closed, when garbage-collected, or at the latest when chatcli exits.
        self.stop = weakref.finalize(self, _kill, self.proc)
        self.replies: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        threading.Thread(
            target=_pump, args=(self.proc.stdout, self.replies), daemon=True, name="sql-worker"
        ).start()

    def alive(self) -> bool:
        return self.stop.alive and self.proc.poll() is None

    def wait(self, seconds: float) -> dict[str, Any] | None:
        """The next reply; None if the worker ended; queue.Empty after `seconds`."""
        line = self.replies.get(timeout=max(seconds, 0.001))
        if line is None:
            return None
        try:
            reply = json.loads(line)
        except ValueError:
            reply = None
        return reply if isinstance(reply, dict) else None

    def request(self, message: dict[str, Any], seconds: float) -> dict[str, Any] | None:
        try:
            self.proc.stdin.write(json.dumps(message).encode("ascii") + b"\n")
            self.proc.stdin.flush()
        except (OSError, ValueError):  # it died (BrokenPipeError) or was killed meanwhile
            return None
        return self.wait(seconds)

    def death_note(self) -> str:
        """How the worker ended, in a few words (exit status, last line it printed)."""
        with contextlib.suppress(Exception):
            self.proc.wait(timeout=2)
        code = self.proc.returncode
        if code is None:
            return "it stopped answering"
        if code < 0:
            try:
                what = f"killed by {signal.Signals(-code).name}"
            except ValueError:
                what = f"killed by signal {-code}"
        else:
            what = f"exit status {code}"
        last = ""
        with contextlib.suppress(OSError, ValueError):
            lines = self.proc.stderr.read(65536).decode("utf-8", "replace").strip().splitlines()
            last = lines[-1].strip()[:200] if lines else ""
        return f"{what}: {last}" if last else what
