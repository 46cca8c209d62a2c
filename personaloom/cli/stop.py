"""Ctrl-C and SIGTERM: stop the command's processes, say what is saved, exit 130 or 143.

`main()` runs each command through `Stopper.run`: the command runs in a worker thread
while the main thread waits and handles SIGINT and SIGTERM. Python runs signal handlers
in the main thread only, and a command's main thread can be deep in a vLLM call or in a
Prefect client retry, or be unwound by Prefect's own SIGTERM handler (installed around
a flow run in the main thread, never in another); a waiting main thread answers at once.

On the first signal the main thread:

1. quiets the command: the progress display stops, and file descriptors 1 and 2 unless
   already diverted to the run's log point at /dev/null (or the run's log), so what the
   dying run says (engine errors, Prefect's failed API calls) reaches no terminal;
2. ends every process the command started, its descendants (vLLM's engine processes,
   Prefect's temporary server): SIGTERM, then SIGKILL after `END_GRACE_S`.
   multiprocessing's resource tracker is left alone: it exits by itself once this
   process is gone, removing the engine's shared memory;
3. releases the command's locks (`at_stop`);
4. prints one line on the terminal's standard error (`describe`: what is saved and the
   command that resumes) and exits with 128 + the signal number (130 for SIGINT, 143 for
   SIGTERM) at once, without exit handlers: nothing is flushed or retried against a
   Prefect server that is gone.

A second signal exits at once (the same line; the processes not yet ended end themselves
within seconds, see personaloom/engine/_parent_watch). The worker thread keeps running meanwhile; it is parked
for good (`hold`) if it tries to return or raise, so it never restores the terminal or
prints a result or a traceback. Outside `Stopper.run` (another thread, a library caller)
nothing here changes anything.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from personaloom.secrets import redact
from personaloom.state.lock import (
    RunLock,
    descendants,
    end_processes,
    process_cmdline,
    process_name,
)
from personaloom.state.lock import process_start as _process_start

SIGNALS = (signal.SIGINT, signal.SIGTERM)
END_GRACE_S = 4.0  # SIGTERM to SIGKILL for the command's processes (exit within 10 s)
# Options that must not be repeated when resuming (--restart would discard the run).
NOT_RESUMED = ("--restart", "--dry-run")

_current: Stopper | None = None


def resume_command(command: Sequence[str], drop: Sequence[str] = NOT_RESUMED) -> str:
    """The command line that resumes `command` (secrets redacted, `drop` left out)."""
    return redact(shlex.join(a for a in command if a not in drop))


def _park() -> None:
    """Block this thread until the stopping main thread ends the process."""
    while True:
        time.sleep(3600)


class Stopper:
    """Runs one command interruptibly (see the module docstring)."""

    def __init__(self, command: Sequence[str], describe: Callable[[], str] | None = None) -> None:
        self.command = list(command)
        self.describe = describe
        self.quiet_log: Path | None = None
        self._early: list[Callable[[], Any]] = []
        self._late: list[Callable[[], Any]] = []
        self._stopping = threading.Event()
        self._tty = -1
        self._fds: dict[int, tuple[int, int]] = {}
        self._pid = os.getpid()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def default_line(self) -> str:
        return f"interrupted; resume with: {resume_command(self.command)}"

    # -- running ----------------------------------------------------------------------
    def run(self, func: Callable[..., Any], *args: Any) -> Any:
        global _current
        if threading.current_thread() is not threading.main_thread() or _current is not None:
            return func(*args)
        outcome: dict[str, Any] = {}

        def body() -> None:
            try:
                outcome["value"] = func(*args)
            except BaseException as exc:
                outcome["error"] = exc
            if self.stopping:
                _park()

        previous = {sig: signal.getsignal(sig) for sig in SIGNALS}
        try:
            self._tty = os.dup(2)
        except OSError:  # no stderr at all
            self._tty = -1
        self._fds = {fd: _identity(fd) for fd in (1, 2)}
        _current = self
        try:
            for sig in SIGNALS:
                signal.signal(sig, self._handle)
            worker = threading.Thread(target=body, name="personaloom-command", daemon=True)
            worker.start()
            while worker.is_alive():
                worker.join(0.5)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
            _current = None
            if self._tty >= 0:
                os.close(self._tty)
            self._tty = -1
        if "error" in outcome:
            raise outcome["error"]
        return outcome.get("value")

    # -- stopping ---------------------------------------------------------------------
    def _handle(self, signum: int, frame: Any) -> None:
        if os.getpid() != self._pid:  # a child forked by the command: the default action
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        if self._stopping.is_set():  # a second signal: exit now
            self._say(self._line())
            os._exit(128 + signum)
        self._stopping.set()
        try:
            self._stop()
        finally:
            os._exit(128 + signum)

    def _stop(self) -> None:
        for callback in self._early:
            with contextlib.suppress(Exception):
                callback()
        self._quiet()
        end_processes(_own_processes(), grace=END_GRACE_S)
        for callback in [*self._late, RunLock.release_all]:
            with contextlib.suppress(Exception):
                callback()
        self._say(self._line())

    def _line(self) -> str:
        line = None
        if self.describe is not None:
            with contextlib.suppress(Exception):
                line = self.describe()
        return redact(line or self.default_line())

    def _quiet(self) -> None:
        """Point fds 1 and 2, where they are still the original ones, at the run's log or
        /dev/null."""
        target = str(self.quiet_log) if self.quiet_log else os.devnull
        try:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError:
            fd = os.open(os.devnull, os.O_WRONLY)
        try:
            for std, identity in self._fds.items():
                if _identity(std) == identity:
                    os.dup2(fd, std)
        finally:
            os.close(fd)

    def _say(self, line: str) -> None:
        if self._tty >= 0:
            with contextlib.suppress(OSError):
                os.write(self._tty, (line + "\n").encode(errors="replace"))


def _identity(fd: int) -> tuple[int, int]:
    try:
        st = os.fstat(fd)
    except OSError:
        return (-1, -1)
    return (st.st_dev, st.st_ino)


def _own_processes() -> list[dict[str, Any]]:
    """This process's descendants, but multiprocessing's resource tracker (see above)."""
    procs = []
    for pid in descendants(os.getpid()):
        if "multiprocessing.resource_tracker" in process_cmdline(pid):
            continue
        start = _process_start(pid)
        if start is not None:
            procs.append({"pid": pid, "start": start, "name": process_name(pid)})
    return procs


def for_command(args: Any) -> Stopper:
    """The stopper of a parsed command line (`args.command`, `args.argv`), with the line
    that says what an interrupted merge or release leaves; generate sets its own."""
    command = ["personaloom", *args.argv]
    resume = resume_command(command)
    lines: dict[str, Callable[[], str]] = {
        "merge": lambda: (
            f"interrupted: the merge into {args.out} did not finish; it is redone from the "
            f"parts, which are unchanged; resume with: {resume}"
        ),
        "release": lambda: (
            f"interrupted: the release of {args.dir} to {args.to} did not finish (nothing is "
            f"committed half-way; files already uploaded are not sent again); resume with: "
            f"{resume}"
        ),
    }
    return Stopper(command, lines.get(getattr(args, "command", "")))


# -- what a command's code uses -------------------------------------------------------
def current() -> Stopper | None:
    return _current


def describe(line: Callable[[], str]) -> None:
    """Say this (computed when a signal comes) instead of the default line."""
    if _current is not None:
        _current.describe = line


def at_stop(callback: Callable[[], Any], *, early: bool = False) -> None:
    """Call `callback` when stopping: `early` before the processes are ended (stop a
    display), otherwise after (release a lock). Exceptions are ignored."""
    if _current is not None:
        (_current._early if early else _current._late).append(callback)


def quiet_into(log: Path) -> None:
    """When stopping, send what still reaches fds 1 and 2 to `log` instead of /dev/null."""
    if _current is not None:
        _current.quiet_log = log


@contextlib.contextmanager
def hold() -> Iterator[None]:
    """Park the calling thread, instead of returning or raising out of the block, while
    the command is being stopped."""
    try:
        yield
    except BaseException:
        if _current is not None and _current.stopping:
            _park()
        raise
    if _current is not None and _current.stopping:
        _park()


class MutedSink:
    """A progress sink that goes quiet once the command is being stopped."""

    def __init__(self, sink: Any) -> None:
        self._sink = sink

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._sink, name)

        def call(*args: Any) -> Any:
            if _current is not None and _current.stopping:
                return None
            return method(*args)

        return call
