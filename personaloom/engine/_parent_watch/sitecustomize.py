"""Parent watch, run at interpreter start by the processes personaloom's engine and Prefect
server start (see `personaloom.engine._parent_watch`).

When the marker `PERSONALOOM_PARENT_WATCH` is set, a daemon thread waits for this
process's parent to exit (a pidfd, so no polling; `getppid()` as the fallback). When it
does, by any signal, kill -9 included, this process sends itself SIGTERM (vLLM and uvicorn
shut down on it) and, `GRACE_S` later, SIGKILL. multiprocessing's resource tracker ignores
SIGTERM and exits by itself (removing shared memory and semaphores) once the last process
using it is gone, so it gets longer. A process that forks re-arms the watch in the child.

The marker holds "PID:START" of the process that set it last: each watched process puts
its own there for its children. A child whose parent died before this file ran (it is no
longer the child of PID, and PID with that start time is gone) ends at once instead of
watching init.

Not `prctl(PR_SET_PDEATHSIG)`: that signal follows the parent *thread* that created the
child, and Prefect and vLLM start processes from threads that end while the run goes on.

Standard library only. A `sitecustomize` found on the path after this folder is loaded
too, as if this one were not there.
"""

from __future__ import annotations

import os
import sys

ENV = "PERSONALOOM_PARENT_WATCH"
THREAD_NAME = "personaloom-parent-watch"
GRACE_S = 3.0
TRACKER_GRACE_S = 8.0


def _grace() -> float:
    argv = " ".join(getattr(sys, "orig_argv", None) or sys.argv or ())
    return TRACKER_GRACE_S if "resource_tracker" in argv else GRACE_S


def process_start(pid: int) -> str:
    """Start time of `pid` (clock ticks since boot); "" when there is no such process or
    it has exited (a zombie)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[-1].split()
    except OSError:
        return ""
    return fields[19] if len(fields) > 19 and fields[0] not in "ZXx" else ""


def marker(pid: int | None = None) -> str:
    """The marker value naming `pid` (default: this process) as the parent to watch."""
    pid = os.getpid() if pid is None else pid
    return f"{pid}:{process_start(pid)}"


def wait_for_parent_exit(ppid: int) -> None:
    """Return once `ppid` is no longer this process's parent."""
    import select
    import time

    try:
        fd = os.pidfd_open(ppid)
    except (AttributeError, OSError):
        fd = None
    try:
        while os.getppid() == ppid:
            if fd is None:
                time.sleep(0.5)
                continue
            ready, _, _ = select.select([fd], [], [], 1.0)
            if ready:  # it exited; re-parenting follows at once
                time.sleep(0.02)
    finally:
        if fd is not None:
            os.close(fd)


def _watch(ppid: int, grace: float, parent_gone: bool) -> None:
    import signal
    import time

    if not parent_gone:
        wait_for_parent_exit(ppid)
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(grace)
    finally:
        os.kill(os.getpid(), signal.SIGKILL)


def start() -> None:
    """Watch this process's parent (once per process), if the marker is set."""
    value = os.environ.get(ENV)
    if not value:
        return
    import threading

    if any(t.name == THREAD_NAME for t in threading.enumerate()):
        return
    expected, _, expected_start = value.partition(":")
    os.environ[ENV] = marker()  # for this process's own children
    ppid = os.getppid()
    # Started by `expected` (as its child, or its grandchild through a shell): if that is
    # not the parent and is gone, the parent died before this process got here.
    parent_gone = (
        expected.isdigit()
        and int(expected) != ppid
        and bool(expected_start)
        and process_start(int(expected)) != expected_start
    )
    if ppid <= 1 and not parent_gone:
        return  # a child of init from the start: nothing to follow
    threading.Thread(
        target=_watch, args=(ppid, _grace(), parent_gone), name=THREAD_NAME, daemon=True
    ).start()


def _chain_load() -> None:
    """Load the `sitecustomize` this one shadows, if there is one."""
    import importlib.machinery
    import importlib.util

    here = os.path.dirname(os.path.abspath(__file__))
    path = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", path)
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    sys.modules["sitecustomize"] = module
    spec.loader.exec_module(module)


if __name__ == "sitecustomize":
    if os.environ.get(ENV):
        start()
        os.register_at_fork(after_in_child=start)
    _chain_load()
