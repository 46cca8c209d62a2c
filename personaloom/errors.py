"""Exceptions a user can cause (exit code 2) versus failures during a run (exit code 1)."""

from __future__ import annotations


class UserError(Exception):
    """Bad input: a file, option or attribute path the user can fix.

    The message must name the file/line, option or attribute path. The CLI turns it into
    exit code 2, and it must be raised before anything is written.
    """


class RunError(Exception):
    """A failure during a run (engine down, disk full...). Exit code 1; run state is kept."""


def format_location(
    file: str | None = None, line: int | None = None, path: str | None = None
) -> str:
    """`file:line: path` prefix used by every user-facing error."""
    parts: list[str] = []
    if file:
        parts.append(f"{file}:{line}" if line is not None else str(file))
    if path:
        parts.append(path)
    return ": ".join(parts)
