"""A lock file that keeps two personaloom processes out of the same folder.

`RunLock(path)` creates `path` atomically (written in full under a temporary name, then
hard-linked into place, so no reader ever sees a half-written lock) holding the owner's
pid, hostname, process start time and command. A second process refuses with a
`UserError` naming the holder while that process is alive; a lock left by a dead process
on this host (or by a recycled pid: the recorded start time no longer matches) is taken
over. A lock from another host cannot be checked and is refused with a message saying
which file to remove.

The record also lists the processes the holder started (`children`: pid, start time and
name of every descendant, refreshed every `CHILD_REFRESH_S` while the lock is held, and
kept while they live even once re-parented): vLLM's engine processes, Prefect's temporary
server. They exit by themselves when the holder dies (`personaloom.engine._parent_watch`);
should one still be alive when a later run takes the stale lock over, that run ends it
(SIGTERM, then SIGKILL) if its start time matches, so a recycled pid is never touched, and
says so in one line; it refuses, naming the pids, when it cannot end them.

Re-entrant within one process: code that holds the lock may call code that takes it
again (the inner exit leaves the file alone).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sys
import threading
import time
import typing
import uuid
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Any

from personaloom.errors import UserError

# Suggested lock names under DIR/.personaloom/: the generation run and the release.
RUN_LOCK = "lock"
RELEASE_LOCK = "release.lock"

CHILD_REFRESH_S = 1.0  # how often a holder refreshes the list of its processes
END_GRACE_S = 5.0  # SIGTERM to SIGKILL when ending processes


def _stat(pid: int) -> list[str] | None:
    """Fields 3.. of /proc/PID/stat (state, ppid, ...), or None when there is no such pid."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    return stat[stat.rfind(b")") + 1 :].decode().split()


def _process_start(pid: int) -> str | None:
    """Start time of `pid` in clock ticks since boot (Linux), to tell a recycled pid apart."""
    fields = _stat(pid)
    return fields[19] if fields is not None and len(fields) > 19 else None  # field 22


process_start = _process_start


def process_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() or "?"
    except OSError:
        return "?"


def process_cmdline(pid: int) -> str:
    try:
        return (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return ""


def running(pid: int, start: str | None) -> bool:
    """Whether `pid` is alive (not a zombie) and, if `start` is given, started then."""
    fields = _stat(pid)
    if fields is None or fields[0] in ("Z", "X", "x"):
        return False
    return start is None or (len(fields) > 19 and fields[19] == start)


def descendants(pid: int) -> list[int]:
    """Every live process below `pid` in the process tree (from /proc)."""
    children: dict[int, list[int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if not entry.isdigit():
            continue
        fields = _stat(int(entry))
        if fields is None or len(fields) < 2 or fields[0] in ("Z", "X", "x"):
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in found:
                found.append(child)
                todo.append(child)
    return found


def describe_process(proc: dict[str, Any]) -> str:
    return f"{proc.get('pid')} ({proc.get('name') or '?'})"


def end_processes(
    procs: Iterable[dict[str, Any]], grace: float = END_GRACE_S
) -> list[dict[str, Any]]:
    """End the processes `procs` ({"pid", "start"} records) that are still running with
    their recorded start time: SIGTERM, then SIGKILL after `grace` seconds. Returns those
    that could not be ended (no permission, or still running after SIGKILL)."""
    targets = [p for p in procs if running(int(p["pid"]), p.get("start"))]
    refused: list[dict[str, Any]] = []

    def send(sig: int, group: list[dict[str, Any]]) -> None:
        for proc in group:
            try:
                os.kill(int(proc["pid"]), sig)
            except ProcessLookupError:
                pass
            except PermissionError:
                if proc not in refused:
                    refused.append(proc)

    def wait(group: list[dict[str, Any]], seconds: float) -> list[dict[str, Any]]:
        deadline = time.monotonic() + seconds
        while True:
            left = [p for p in group if p not in refused and running(int(p["pid"]), p.get("start"))]
            if not left or time.monotonic() >= deadline:
                return left
            time.sleep(0.05)

    send(signal.SIGTERM, targets)
    left = wait(targets, grace)
    send(signal.SIGKILL, left)
    left = wait(left, 2.0)
    return refused + [p for p in left if p not in refused]


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def describe_holder(info: dict[str, Any]) -> str:
    since = info.get("started_at")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(since)) if since else "?"
    command = info.get("command") or "?"
    return f"pid {info.get('pid')} on {info.get('hostname')} ({command}, since {when})"


class RunLock:
    """Context manager holding `path` for this process; see the module docstring."""

    _held: typing.ClassVar[set[RunLock]] = set()
    _held_lock = threading.Lock()

    @classmethod
    def release_all(cls) -> None:
        """Release every lock this process holds (a command being stopped by a signal)."""
        with cls._held_lock:
            held = list(cls._held)
        for lock in held:
            lock.release()

    def __init__(self, path: str | Path, *, command: str | None = None) -> None:
        self.path = Path(path)
        self.command = command or " ".join(
            Path(a).name if i == 0 else a for i, a in enumerate(sys.argv[:3])
        )
        self._owned = False
        self._children: list[dict[str, Any]] = []
        self._write_lock = threading.Lock()
        self._stop_recording = threading.Event()

    # -- inspection --------------------------------------------------------------------
    def read(self) -> dict[str, Any] | None:
        """The holder's record, or None when there is no lock file."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise UserError(f"{self.path}: cannot read lock file ({exc.strerror})") from None
        try:
            info = json.loads(text)
        except json.JSONDecodeError:
            return {"pid": -1, "hostname": socket.gethostname(), "corrupt": True}
        return info if isinstance(info, dict) else {"pid": -1, "hostname": socket.gethostname()}

    def holder(self) -> dict[str, Any] | None:
        """The live holder's record; None when free or when the lock is stale."""
        info = self.read()
        if info is None or self._is_stale(info):
            return None
        return info

    @staticmethod
    def _is_stale(info: dict[str, Any]) -> bool:
        if info.get("hostname") != socket.gethostname():
            return False  # cannot check another host's processes
        pid = int(info.get("pid") or -1)
        if not _pid_alive(pid):
            return True
        recorded, current = info.get("process_start"), _process_start(pid)
        return recorded is not None and current is not None and recorded != current

    # -- acquire / release -------------------------------------------------------------
    def _record(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "hostname": socket.gethostname(),
            "process_start": _process_start(os.getpid()),
            "started_at": time.time(),
            "command": self.command,
            "children": self._children,
        }

    def _try_create(self) -> bool:
        tmp = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex[:8]}.tmp")
        tmp.write_text(json.dumps(self._record()) + "\n")
        try:
            os.link(tmp, self.path)  # atomic: fails if the lock exists
            return True
        except FileExistsError:
            return False
        finally:
            tmp.unlink(missing_ok=True)

    def acquire(self) -> RunLock:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(
                f"{self.path.parent}: cannot create lock folder ({exc.strerror})"
            ) from None
        for _ in range(5):
            if self._try_create():
                self._owned = True
                with self._held_lock:
                    self._held.add(self)
                self._start_recording()
                return self
            info = self.read()
            if info is None:
                continue  # released between our attempt and the read
            same_host = info.get("hostname") == socket.gethostname()
            if same_host and info.get("pid") == os.getpid():
                return self  # re-entrant: an outer frame of this process holds it
            if not self._is_stale(info):
                if same_host:
                    raise UserError(
                        f"{self.path}: held by a running personaloom, {describe_holder(info)}; "
                        "wait for it to finish"
                    )
                raise UserError(
                    f"{self.path}: held by {describe_holder(info)}, which cannot be checked from "
                    f"{socket.gethostname()}; if that process is gone, delete {self.path}"
                )
            # Stale: end the processes the dead holder left running (or refuse), then move
            # the lock aside under a unique name (atomic, so exactly one of several
            # contenders removes it) and retry the exclusive create.
            self._end_leftovers(info)
            aside = self.path.with_name(f".{self.path.name}.stale.{uuid.uuid4().hex[:8]}")
            try:
                os.replace(self.path, aside)
            except FileNotFoundError:
                continue
            try:
                moved = json.loads(aside.read_text())
            except (OSError, json.JSONDecodeError):
                moved = None
            if moved is not None and moved != info:
                # A contender took the stale lock over first: put its fresh lock back.
                with contextlib.suppress(FileExistsError):
                    os.link(aside, self.path)
            aside.unlink(missing_ok=True)
        raise UserError(f"{self.path}: could not take the lock (contended); try again")

    def _end_leftovers(self, info: dict[str, Any]) -> None:
        """End the processes recorded by a dead holder that still run (their start time
        matching); refuse with a UserError naming those that cannot be ended."""
        recorded = [
            c
            for c in info.get("children") or ()
            if isinstance(c, dict) and isinstance(c.get("pid"), int) and c.get("start")
        ]
        alive = [c for c in recorded if running(c["pid"], c["start"])]
        if not alive:
            return
        left = end_processes(alive)
        holder = f"pid {info.get('pid')}"
        if left:
            pids = " ".join(str(c["pid"]) for c in left)
            raise UserError(
                f"{self.path}: the dead run that held it ({holder}) left processes running that "
                f"could not be ended: {', '.join(describe_process(c) for c in left)}; end them "
                f"(kill -9 {pids}) and run again"
            )
        print(
            f"{self.path}: taking over from dead {holder}: ended the processes it left running: "
            f"{', '.join(describe_process(c) for c in alive)}",
            file=sys.stderr,
            flush=True,
        )

    # -- the processes this holder started --------------------------------------------
    def record_children(self) -> list[dict[str, Any]]:
        """Refresh the lock's list of this process's descendants now (the holder also does
        it every CHILD_REFRESH_S). Processes recorded earlier stay while they run, also once
        re-parented. Returns the list."""
        with self._write_lock:
            if not self._owned:
                return list(self._children)
            known = {
                (c["pid"], c["start"]): c for c in self._children if running(c["pid"], c["start"])
            }
            for pid in descendants(os.getpid()):
                start = _process_start(pid)
                if start is not None:
                    known[(pid, start)] = {"pid": pid, "start": start, "name": process_name(pid)}
            children = sorted(known.values(), key=lambda c: c["pid"])
            if children != self._children:
                self._children = children
                self._rewrite()
            return list(children)

    def _rewrite(self) -> None:
        """Replace the lock file by the current record, if it is still this holder's."""
        info = self.read()
        if (
            not info
            or info.get("pid") != os.getpid()
            or info.get("hostname") != socket.gethostname()
        ):
            return
        record = {**info, "children": self._children}
        tmp = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            tmp.write_text(json.dumps(record) + "\n")
            os.replace(tmp, self.path)
        finally:
            tmp.unlink(missing_ok=True)

    def _start_recording(self) -> None:
        self._stop_recording.clear()
        threading.Thread(
            target=self._record_loop, name="personaloom-lock-children", daemon=True
        ).start()

    def _record_loop(self) -> None:
        while not self._stop_recording.wait(CHILD_REFRESH_S):
            try:
                self.record_children()
            except (OSError, UserError):
                pass

    def release(self) -> None:
        self._stop_recording.set()
        with self._held_lock:
            self._held.discard(self)
        if not self._owned:
            return
        if not self._write_lock.acquire(timeout=1):
            return  # a recorder stuck writing: leave the lock to be taken over
        try:
            self._release()
        finally:
            self._write_lock.release()

    def _release(self) -> None:
        if not self._owned:
            return
        self._owned = False
        info = self.read()
        if (
            info is not None
            and info.get("pid") == os.getpid()
            and info.get("hostname") == socket.gethostname()
        ):
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
