"""Engine and server processes die with the process that started them.

vLLM starts its EngineCore (and, on CPU, a Worker from it) with multiprocessing, Prefect
its temporary API server with `subprocess`; none of them notices when the personaloom
process is killed, and an orphaned engine keeps computing and holds the GPU's memory.
`activate()` puts this folder first on `PYTHONPATH` and sets `PERSONALOOM_PARENT_WATCH`
(this process's pid and start time) in `os.environ`, so every Python process started from
then on (spawned or exec'd, and the children of those) runs `sitecustomize.py` here at
interpreter start, which watches its own parent and ends the process when the parent is
gone (see that file). Forked children are covered by an at-fork hook. The watch lives in
each child, so it works however the parent dies, kill -9 included.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from personaloom.engine._parent_watch import sitecustomize as _hook

HOOK_DIR = str(Path(__file__).resolve().parent)
ENV = _hook.ENV

_lock = threading.Lock()
_fork_hook_registered = False


def activate() -> None:
    """Make every Python process this process starts from now on exit when its parent dies
    (idempotent)."""
    global _fork_hook_registered
    with _lock:
        parts = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        if parts[:1] != [HOOK_DIR]:
            os.environ["PYTHONPATH"] = os.pathsep.join(
                [HOOK_DIR, *(p for p in parts if p != HOOK_DIR)]
            )
        os.environ[ENV] = _hook.marker()
        if not _fork_hook_registered:
            os.register_at_fork(after_in_child=_hook.start)
            _fork_hook_registered = True


def active() -> bool:
    return bool(os.environ.get(ENV)) and HOOK_DIR in os.environ.get("PYTHONPATH", "").split(
        os.pathsep
    )
