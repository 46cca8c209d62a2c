"""Progress of a run as events, for whoever shows it (the console, a Prefect artifact).

The engines report every call (`submitted` before it, `completed` after it), grouped by the
`stage` of its requests; the run layer reports its own units (personas of the run, the
finalize steps) with `advance`. Sinks registered with `attach` receive the events; with no
sink attached, reporting costs a function call. A sink that raises is detached, so showing
progress can never fail a run.

Shared floor: imports nothing of personaloom.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from typing import Any, Protocol


class Sink(Protocol):
    def submitted(self, stage: str, requests: int) -> None: ...

    def completed(self, stage: str, requests: int, output_tokens: int, seconds: float) -> None: ...

    def advance(self, unit: str, done: int, total: int) -> None: ...


_sinks: list[Sink] = []
_lock = threading.Lock()


@contextlib.contextmanager
def attached(sink: Sink) -> Iterator[Sink]:
    """Send progress events to `sink` inside the block."""
    with _lock:
        _sinks.append(sink)
    try:
        yield sink
    finally:
        with _lock:
            if sink in _sinks:
                _sinks.remove(sink)


def _emit(method: str, *args: Any) -> None:
    for sink in list(_sinks):
        try:
            getattr(sink, method)(*args)
        except Exception:
            with _lock:
                if sink in _sinks:
                    _sinks.remove(sink)


def _by_stage(requests: Sequence[Any]) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = {}
    for i, request in enumerate(requests):
        groups.setdefault(getattr(request, "stage", "") or "requests", []).append(i)
    return groups


def submitted(requests: Sequence[Any]) -> None:
    """An engine call is about to run these requests."""
    if not _sinks:
        return
    for stage, rows in _by_stage(requests).items():
        _emit("submitted", stage, len(rows))


def completed(requests: Sequence[Any], completions: Sequence[Any], seconds: float) -> None:
    """An engine call returned (`completions` in request order)."""
    if not _sinks:
        return
    groups = _by_stage(requests)
    for stage, rows in groups.items():
        tokens = sum(getattr(completions[i], "output_tokens", 0) for i in rows)
        _emit("completed", stage, len(rows), tokens, seconds * len(rows) / len(requests))


def advance(unit: str, done: int, total: int) -> None:
    """A unit of the run itself moved on: `done` of `total` (e.g. personas, finalize steps)."""
    if _sinks:
        _emit("advance", unit, done, total)
