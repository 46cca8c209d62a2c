"""What `generate` shows a person while it runs.

- Progress (`ConsoleProgress`, a `personaloom.progress` sink): per stage, requests done of
  those sent and output tokens/s; per run unit (personas), done of total and an ETA. On a
  terminal it is a live rich display redrawn after every engine call; otherwise a plain
  line at most every few seconds (and whenever a unit moves on).
- Quiet engine (`divert_output`): vLLM, Triton and torch write warnings from the engine's
  own processes straight to file descriptors 1 and 2. Unless `--verbose`, both descriptors
  point at a log file in the run folder for the duration of the run (child processes
  inherit them), while the progress display writes to a saved copy of the terminal.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

PLAIN_EVERY_S = 5.0


@dataclass
class _Stage:
    sent: int = 0
    done: int = 0
    tokens: int = 0
    seconds: float = 0.0


@dataclass
class _Unit:
    done: int = 0
    total: int = 0
    started: float = field(default_factory=time.monotonic)
    first_done: int | None = None


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class ConsoleProgress:
    """A `personaloom.progress` sink that draws on `stream` (see the module docstring)."""

    def __init__(self, stream: IO[str], *, live: bool | None = None) -> None:
        self.stream = stream
        self.live = stream.isatty() if live is None else live
        self.stages: dict[str, _Stage] = {}
        self.units: dict[str, _Unit] = {}
        self._last_plain = 0.0
        self._rich = None
        if self.live:
            from rich.console import Console
            from rich.live import Live

            self._rich = Live(
                "", console=Console(file=stream), refresh_per_second=4, transient=False
            )
            self._rich.start()

    # -- sink interface ------------------------------------------------------------------
    def submitted(self, stage: str, requests: int) -> None:
        self.stages.setdefault(stage, _Stage()).sent += requests
        self._draw()

    def completed(self, stage: str, requests: int, output_tokens: int, seconds: float) -> None:
        entry = self.stages.setdefault(stage, _Stage())
        entry.done += requests
        entry.tokens += output_tokens
        entry.seconds += seconds
        self._draw()

    def advance(self, unit: str, done: int, total: int) -> None:
        entry = self.units.setdefault(unit, _Unit())
        if entry.first_done is None:
            entry.first_done, entry.started = done, time.monotonic()
        entry.done, entry.total = done, total
        self._draw(force=True)

    # -- drawing -------------------------------------------------------------------------
    def lines(self) -> list[str]:
        out = []
        for name, unit in self.units.items():
            pct = 100 * unit.done // max(unit.total, 1)
            text = f"{name}: {unit.done}/{unit.total} ({pct}%)"
            new = unit.done - (unit.first_done or 0)
            if 0 < new and unit.done < unit.total:
                rate = new / (time.monotonic() - unit.started)
                text += f", ETA {_duration((unit.total - unit.done) / rate)}"
            out.append(text)
        for name, stage in self.stages.items():
            rate = stage.tokens / stage.seconds if stage.seconds else 0.0
            out.append(f"  {name}: {stage.done}/{stage.sent} requests, {rate:.0f} output tok/s")
        return out

    def _draw(self, force: bool = False) -> None:
        if self._rich is not None:
            from rich.text import Text

            self._rich.update(Text("\n".join(self.lines())))
            return
        now = time.monotonic()
        if force or now - self._last_plain >= PLAIN_EVERY_S:
            self._last_plain = now
            print(" | ".join(line.strip() for line in self.lines()), file=self.stream, flush=True)

    def close(self) -> None:
        if self._rich is not None:
            self._rich.stop()
            self._rich = None


@contextlib.contextmanager
def divert_output(log_path: Path, *, enabled: bool = True) -> Iterator[IO[str]]:
    """Point file descriptors 1 and 2 at `log_path` (appending) inside the block; yield a
    stream on the original standard output for the progress display."""
    if not enabled:
        yield sys.stdout
        return
    log_path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved_out, saved_err = os.dup(1), os.dup(2)
    terminal = os.fdopen(os.dup(saved_out), "w", buffering=1)
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        yield terminal
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved_out, 1)
        os.dup2(saved_err, 2)
        for fd in (saved_out, saved_err, log_fd):
            os.close(fd)
        terminal.close()
