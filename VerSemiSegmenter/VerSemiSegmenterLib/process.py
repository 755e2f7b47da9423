"""Run ``versemi predict`` in a background process: progress events, error capture, cancel.

The predictor runs in its own process so Slicer stays responsive. Reader threads turn its
``--progress json`` lines into events on a queue that the GUI thread drains with :meth:`poll` from a
``qt.QTimer``; events are re-emitted through plain-Python :class:`Signal` objects (custom
``qt.Signal`` objects are unreliable in PythonQt, and these work without Qt in tests). Cancel kills
the whole process tree, since the predictor may have started worker processes.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence, Union
from .i18n import _

KILL_TIMEOUT_S = 2.0
_STDERR_TAIL_LINES = 200


_base_environment: dict[str, str] | None = None


def set_base_environment(env: Mapping[str, str] | None) -> None:
    """The environment child processes start from (default: this process's ``os.environ``).

    In Slicer this is ``slicer.util.startupEnvironment()``: ``PythonSlicer`` is a launcher that sets
    Slicer's paths itself, and should not inherit the GUI process's own additions.
    """
    global _base_environment
    _base_environment = dict(env) if env is not None else None


def subprocess_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for a child Python: the base environment, ``extra``, unbuffered UTF-8 output."""
    env = dict(_base_environment if _base_environment is not None else os.environ)
    env.update(extra or {})
    # Progress lines must arrive as they are printed, in UTF-8 whatever the system locale.
    env.setdefault("PYTHONUNBUFFERED", "1")
    env["PYTHONIOENCODING"] = "utf-8"
    return env


class Signal:
    """A minimal signal: ``connect(callback)``, ``disconnect(callback)``, ``emit(*args)``."""

    def __init__(self) -> None:
        self._callbacks: list[Callable[..., Any]] = []

    def connect(self, callback: Callable[..., Any]) -> None:
        if callback not in self._callbacks:
            self._callbacks.append(callback)

    def disconnect(self, callback: Callable[..., Any]) -> None:
        if callback in self._callbacks:
            self._callbacks.remove(callback)

    def emit(self, *args: Any) -> None:
        for callback in list(self._callbacks):
            callback(*args)


@dataclass(frozen=True)
class ProgressEvent:
    """``{"type": "progress", "stage": ..., "fraction": ..., "message": ...}``."""

    stage: str
    fraction: float
    message: str = ""


@dataclass(frozen=True)
class DoneEvent:
    """``{"type": "done", "output": ..., "sidecar": ...}``: the predictor wrote its outputs."""

    output: str
    sidecar: str


@dataclass(frozen=True)
class ErrorEvent:
    """``{"type": "error", "message": ...}``: the predictor reports why it failed."""

    message: str


@dataclass(frozen=True)
class LogLine:
    """Any other output line (not a progress JSON object), from ``stdout`` or ``stderr``."""

    stream: str
    text: str


Event = Union[ProgressEvent, DoneEvent, ErrorEvent, LogLine]  # Union: Slicer < 5.10 has Python 3.9


def parse_progress_line(line: str) -> Event:
    """Turn one stdout line into an event; lines that are not progress JSON become :class:`LogLine`."""
    text = line.rstrip("\r\n")
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            obj = json.loads(stripped)
        except json.JSONDecodeError:
            obj = None
        if isinstance(obj, dict):
            kind = obj.get("type")
            try:
                if kind == "progress":
                    fraction = min(1.0, max(0.0, float(obj.get("fraction", 0.0))))
                    return ProgressEvent(str(obj.get("stage", "")), fraction, str(obj.get("message", "")))
                if kind == "done":
                    return DoneEvent(str(obj["output"]), str(obj.get("sidecar", "")))
                if kind == "error":
                    return ErrorEvent(str(obj.get("message", "unknown error")))
            except (KeyError, TypeError, ValueError):
                pass
    return LogLine("stdout", text)


@dataclass
class RunResult:
    """How a run ended."""

    returncode: int | None
    cancelled: bool = False
    output: str | None = None
    sidecar: str | None = None
    error: str | None = None
    stderr_tail: list[str] = field(default_factory=list)

    @property
    def succeeded(self) -> bool:
        return not self.cancelled and self.returncode == 0 and self.output is not None

    def error_message(self) -> str:
        """The most useful one-paragraph explanation of a failure."""
        if self.cancelled:
            return "cancelled"
        if self.error:
            return self.error
        tail = [line for line in self.stderr_tail if line.strip()]
        if tail:
            return "\n".join(tail[-15:])
        if self.returncode == 0 and self.output is None:
            return "the predictor exited without reporting an output file"
        return f"the predictor exited with status {self.returncode}"


class ProcessRunner:
    """Launch a command in the background and report its progress.

    Signals (emitted from :meth:`poll`, i.e. in the thread that polls):
        progress(ProgressEvent), log(LogLine), finished(RunResult).

    Args:
        command: the argument list (no shell).
        env: extra environment variables (merged over ``os.environ``).
        cwd: working directory of the process.
    """

    def __init__(
        self, command: Sequence[str], env: Mapping[str, str] | None = None, cwd: str | None = None
    ) -> None:
        self.command = [str(c) for c in command]
        self.env = dict(env or {})
        self.cwd = cwd
        self.progress = Signal()
        self.log = Signal()
        self.finished = Signal()
        self._process: subprocess.Popen[str] | None = None
        self._events: queue.Queue[Event | None] = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._stderr_tail: deque[str] = deque(maxlen=_STDERR_TAIL_LINES)
        self._cancelled = False
        self._result: RunResult | None = None
        self._done: DoneEvent | None = None
        self._error: ErrorEvent | None = None
        self._open_streams = 0

    # --- life cycle ---------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def is_running(self) -> bool:
        return self._process is not None and self._result is None

    @property
    def result(self) -> RunResult | None:
        return self._result

    def start(self) -> None:
        """Start the process (once). Raises ``OSError`` if the program cannot be started."""
        if self._process is not None:
            raise RuntimeError(_("this runner was already started"))
        env = subprocess_environment(self.env)
        kwargs: dict[str, Any] = {}
        if sys.platform == "win32":
            kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP | getattr(
                subprocess, "CREATE_NO_WINDOW", 0
            )
        else:
            # Own session = own process group: cancel can signal the whole group at once.
            kwargs["start_new_session"] = True
        self._process = subprocess.Popen(
            self.command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd=self.cwd,
            text=True,
            encoding="utf-8",
            errors="replace",
            bufsize=1,
            **kwargs,
        )
        self._open_streams = 2
        for stream, name in ((self._process.stdout, "stdout"), (self._process.stderr, "stderr")):
            thread = threading.Thread(target=self._read, args=(stream, name), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _read(self, stream: Any, name: str) -> None:
        try:
            for line in iter(stream.readline, ""):
                if name == "stdout":
                    self._events.put(parse_progress_line(line))
                else:
                    self._events.put(LogLine("stderr", line.rstrip("\r\n")))
        except (OSError, ValueError):
            pass  # stream closed under us (process killed)
        finally:
            self._events.put(None)  # end-of-stream marker

    def poll(self) -> RunResult | None:
        """Handle queued events (emit signals); return the result once the run has ended."""
        if self._process is None or self._result is not None:
            return self._result
        while True:
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                break
            if event is None:
                self._open_streams -= 1
            elif isinstance(event, ProgressEvent):
                self.progress.emit(event)
            elif isinstance(event, DoneEvent):
                self._done = event
            elif isinstance(event, ErrorEvent):
                self._error = event
            elif isinstance(event, LogLine):
                if event.stream == "stderr":
                    self._stderr_tail.append(event.text)
                self.log.emit(event)
        # Normally wait for both streams to close (every line read); after a cancel, the process
        # being gone is enough: its remaining output does not matter.
        if self._process.poll() is not None and (self._open_streams <= 0 or self._cancelled):
            self._finish(self._process.returncode)
        return self._result

    def wait(self, timeout: float | None = None, interval: float = 0.05) -> RunResult | None:
        """Poll until the run ends (for scripts and tests; the GUI polls from a timer instead)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                return None
            time.sleep(interval)
        return self._result

    def _finish(self, returncode: int | None) -> None:
        for thread in self._threads:
            thread.join(timeout=0.2 if self._cancelled else 1.0)
        done = self._done if returncode == 0 and not self._cancelled else None
        self._result = RunResult(
            returncode=returncode,
            cancelled=self._cancelled,
            output=done.output if done else None,
            sidecar=(done.sidecar or None) if done else None,
            error=self._error.message if self._error else None,
            stderr_tail=list(self._stderr_tail),
        )
        self.finished.emit(self._result)

    # --- cancel -------------------------------------------------------------------------------
    def cancel(self, timeout: float = KILL_TIMEOUT_S) -> None:
        """Kill the process and all its descendants; returns once they are gone (or ``timeout``).

        The result (``cancelled=True``) is reported by the next :meth:`poll`.
        """
        if self._process is None or self._result is not None:
            return
        self._cancelled = True
        kill_process_tree(self._process.pid, timeout=timeout)
        try:
            self._process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
        self.poll()


def kill_process_tree(pid: int, timeout: float = KILL_TIMEOUT_S) -> list[int]:
    """Kill a process, all its descendants and (on POSIX) its process group; wait for them.

    Descendants are collected *before* killing (a killed parent orphans its children, which then
    cannot be found through it). Without ``psutil`` the process group (POSIX) or ``taskkill /T``
    (Windows) still reaches the whole tree. Returns the pids still alive after ``timeout``.
    """
    try:
        import psutil
    except ImportError:
        psutil = None  # type: ignore[assignment]

    procs = []
    if psutil is not None:
        try:
            parent = psutil.Process(pid)
            procs = [parent, *parent.children(recursive=True)]
        except psutil.NoSuchProcess:
            procs = []
    if sys.platform == "win32":
        if psutil is None:
            subprocess.run(["taskkill", "/T", "/F", "/PID", str(pid)], capture_output=True, check=False)
    else:
        try:
            os.killpg(os.getpgid(pid), signal.SIGKILL)
        except OSError:
            pass  # already gone, or not a group leader we may signal
    if psutil is None:
        return []
    for proc in procs:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    # A killed grandchild is re-parented and stays a zombie until its new parent reaps it, which in
    # some containers (a PID 1 that does not reap) never happens: a zombie runs nothing, so it counts
    # as gone instead of holding the cancel for the whole timeout.
    deadline = time.monotonic() + timeout
    alive = procs
    while alive:
        _gone, alive = psutil.wait_procs(alive, timeout=0.05)
        alive = [p for p in alive if not _is_zombie(p, psutil)]
        if time.monotonic() >= deadline:
            break
    return [p.pid for p in alive]


def _is_zombie(proc: Any, psutil: Any) -> bool:
    """Whether a (psutil) process has ended: gone, or a zombie waiting to be reaped."""
    try:
        return proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


class BackgroundCall:
    """Run ``function(*args, **kwargs)`` in a daemon thread; the GUI thread polls for the outcome.

    For work that may take more than a moment but needs no progress (listing models, reading a
    checkpoint's prompts, probing devices): the GUI stays responsive, and the result or the
    exception is handed over in the thread that calls :meth:`poll` (Qt objects are only touched there).

    Attributes:
        result: the function's return value, once it has returned.
        error: the exception it raised (``None`` when it returned normally).
    """

    def __init__(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        self._function = function
        self._args = args
        self._kwargs = kwargs
        self._finished = threading.Event()
        self._thread: threading.Thread | None = None
        self.result: Any = None
        self.error: BaseException | None = None

    def start(self) -> "BackgroundCall":
        if self._thread is not None:
            raise RuntimeError(_("this call was already started"))
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            self.result = self._function(*self._args, **self._kwargs)
        except BaseException as exc:  # handed to the polling thread, which reports it
            self.error = exc
        finally:
            self._finished.set()

    @property
    def done(self) -> bool:
        return self._finished.is_set()

    def poll(self) -> bool:
        """True once the function has returned or raised."""
        return self._finished.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until done (scripts and tests; the GUI polls instead). True if done."""
        return self._finished.wait(timeout)
