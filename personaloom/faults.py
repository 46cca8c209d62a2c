"""Named kill points for crash tests.

`PERSONALOOM_KILL_AT=<name>` makes the process SIGKILL itself (and its process group, when
it leads one, so vLLM's engine process goes too) the first time it reaches that point. It
reproduces "killed exactly here" without timing games. Unset, it costs one dict lookup.
"""

from __future__ import annotations

import os
import signal


def checkpoint(name: str) -> None:
    if os.environ.get("PERSONALOOM_KILL_AT") != name:
        return
    if os.getpgrp() == os.getpid():
        os.killpg(os.getpgrp(), signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)
