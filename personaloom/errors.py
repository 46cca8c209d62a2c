"""Exceptions a user can cause (exit code 2) versus failures during a run (exit code 1)."""

from __future__ import annotations


class UserError(Exception):
    """Bad input: a file, option or attribute path the user can fix.

    The message must name the file/line, option or attribute path. The CLI turns it into
    exit code 2, and it must be raised before anything is written.
    """


class RunError(Exception):
    """A failure during a run (engine down, disk full...). Exit code 1; run state is kept."""


def read_utf8(path, what: str = "file") -> str:
    """The text of `path`, or a UserError naming the file (and line) when it cannot be read
    or is not UTF-8."""
    from pathlib import Path

    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"{path}: cannot read {what} ({exc.strerror or exc})") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise UserError(
            f"{path}:{line}: {what} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset "
            f"{exc.start}); save it as UTF-8"
        ) from None
