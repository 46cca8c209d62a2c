"""A lock file that keeps two personaloom processes out of the same folder.

`RunLock(path)` creates `path` atomically (written in full under a temporary name, then
hard-linked into place, so no reader ever sees a half-written lock) holding the owner's
pid, hostname, process start time and command. A second process refuses with a
`UserError` naming the holder while that process is alive; a lock left by a dead process
on this host (or by a recycled pid: the recorded start time no longer matches) is taken
over. A lock from another host cannot be checked and is refused with a message saying
which file to remove.

Re-entrant within one process: code that holds the lock may call code that takes it
again (the inner exit leaves the file alone).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
import uuid
from pathlib import Path
from types import TracebackType
from typing import Any

from personaloom.errors import UserError

# Suggested lock names under DIR/.personaloom/: the generation run and the release.
RUN_LOCK = "lock"
RELEASE_LOCK = "release.lock"


def _process_start(pid: int) -> str | None:
    """Start time of `pid` in clock ticks since boot (Linux), to tell a recycled pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22; the command name (field 2) may hold spaces, so split after its ')'.
    fields = stat.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 else None


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

    def __init__(self, path: str | Path, *, command: str | None = None) -> None:
        self.path = Path(path)
        self.command = command or " ".join(
            Path(a).name if i == 0 else a for i, a in enumerate(sys.argv[:3])
        )
        self._owned = False

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
            # Stale: move it aside under a unique name (atomic, so exactly one of several
            # contenders removes it), then retry the exclusive create.
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

    def release(self) -> None:
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
