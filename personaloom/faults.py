"""Named kill and pause points for crash and interruption tests.

`PERSONALOOM_KILL_AT=<name>` makes the process SIGKILL itself (and its process group, when
it leads one, so vLLM's engine process goes too) the first time it reaches that point. It
reproduces "killed exactly here" without timing games.

`PERSONALOOM_PAUSE_AT=<name>` makes the thread that reaches that point wait there (up to
`PERSONALOOM_PAUSE_S`, default 600 s), after creating the file named by
`PERSONALOOM_PAUSE_FLAG` if set: a test waits for that file, then interrupts the command
(Ctrl-C, SIGTERM) exactly there.

Unset, a point costs two dict lookups.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path


def checkpoint(name: str) -> None:
    if os.environ.get("PERSONALOOM_KILL_AT") == name:
        if os.getpgrp() == os.getpid():
            os.killpg(os.getpgrp(), signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGKILL)
    if os.environ.get("PERSONALOOM_PAUSE_AT") == name:
        flag = os.environ.get("PERSONALOOM_PAUSE_FLAG")
        if flag:
            Path(flag).touch()
        time.sleep(float(os.environ.get("PERSONALOOM_PAUSE_S") or 600))
