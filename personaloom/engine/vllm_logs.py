"""vLLM's log lines, from every vLLM process, handed to the orchestrator's run log.

vLLM logs from several processes: the caller (`LLM`), the EngineCore and, on CPU, a Worker.
The lines worth having in a run's log when it misbehaves come mostly from the children:
KV-cache size and maximum concurrency, weight loading and warm-up times, platform
warnings. Prefect only sees records of the process it runs in, and vLLM replaces the
handlers of its `vllm` logger when it creates an engine, so attaching Prefect's handler to
`vllm` catches nothing.

What works: vLLM applies the `dictConfig` file named by `VLLM_LOGGING_CONFIG_PATH` in each
of its processes. `relay_vllm_logs` writes one that keeps vLLM's own console handler (same
format, level `VLLM_LOGGING_LEVEL`) and adds a `RelayHandler` that appends every record of
level INFO and above, secrets redacted, as a JSON line to a file. The flow calls
`Relay.drain()` after each batch and forwards the records to Prefect's API log (see
`flows/build_corpus.py`); the console is unchanged. No Prefect import here.

A user's own `VLLM_LOGGING_CONFIG_PATH` or `VLLM_CONFIGURE_LOGGING=0` is respected: no relay.
Only engines created inside `relay_vllm_logs` relay their lines (the engine's processes read the
configuration when they start).
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from personaloom.secrets import redact

RELAY_LEVEL = logging.INFO
_FORMAT = (  # vLLM's own console format (vllm/logger.py)
    "(%(vllm_process_name)s pid=%(process)d) %(levelname)s %(asctime)s "
    "[%(fileinfo)s:%(lineno)d] %(message)s"
)
_RELAY_FORMAT = "(%(vllm_process_name)s) [%(filename)s:%(lineno)d] %(message)s"
_DATE_FORMAT = "%m-%d %H:%M:%S"


class RelayFormatter(logging.Formatter):
    """The relayed line: process, source, message (level and time travel as fields)."""

    def format(self, record: logging.LogRecord) -> str:
        record.__dict__.setdefault("vllm_process_name", record.processName)
        return super().format(record)


class ConsoleFormatter(logging.Formatter):
    """vLLM's console formatter, tolerant of records made before vLLM set its record factory."""

    def __init__(self, fmt: str, datefmt: str, log_level: str) -> None:
        from vllm.logging_utils import NewLineFormatter

        super().__init__(fmt, datefmt)
        self._inner = NewLineFormatter(fmt, datefmt, log_level=log_level)

    def format(self, record: logging.LogRecord) -> str:
        record.__dict__.setdefault("vllm_process_name", record.processName)
        return self._inner.format(record)


class RelayHandler(logging.Handler):
    """Appends each record as one JSON line to `path` (opened once, append mode).

    Processes share the file; each line is written by one `write` of an O_APPEND file, so
    lines from different processes do not interleave.
    """

    def __init__(self, path: str, level: int | str = RELAY_LEVEL) -> None:
        super().__init__(level)
        self.path = path
        self._fd: int | None = None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = json.dumps(
                {
                    "name": record.name,
                    "levelno": record.levelno,
                    "levelname": record.levelname,
                    "created": record.created,
                    "message": redact(self.format(record)),
                },
                ensure_ascii=False,
            )
            if self._fd is None:
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            os.write(self._fd, (line + "\n").encode())
        except Exception:
            self.handleError(record)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        super().close()


def logging_config(relay_path: str, console_level: str) -> dict[str, Any]:
    """vLLM's default configuration plus the relay handler (both handlers, every process)."""
    levels = logging.getLevelNamesMapping()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "vllm": {
                "()": "personaloom.engine.vllm_logs.ConsoleFormatter",
                "fmt": _FORMAT,
                "datefmt": _DATE_FORMAT,
                "log_level": console_level,
            },
            "relay": {"()": "personaloom.engine.vllm_logs.RelayFormatter", "fmt": _RELAY_FORMAT},
        },
        "handlers": {
            "vllm": {
                "class": "logging.StreamHandler",
                "formatter": "vllm",
                "level": console_level,
                "stream": os.environ.get("VLLM_LOGGING_STREAM", "ext://sys.stdout"),
            },
            "relay": {
                "()": "personaloom.engine.vllm_logs.RelayHandler",
                "formatter": "relay",
                "path": relay_path,
            },
        },
        "loggers": {
            "vllm": {
                "handlers": ["vllm", "relay"],
                "level": min(levels.get(console_level.upper(), RELAY_LEVEL), RELAY_LEVEL),
                "propagate": False,
            }
        },
    }


class Relay:
    """The relay file of this process and how far it has been read."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / "vllm-log.jsonl"
        self.config_path = directory / "vllm-logging.json"
        self._offset = 0
        self._lock = threading.Lock()

    def drain(self) -> list[logging.LogRecord]:
        """The records written since the last drain (a trailing partial line waits)."""
        with self._lock:
            try:
                with open(self.path, "rb") as handle:
                    handle.seek(self._offset)
                    data = handle.read()
            except FileNotFoundError:
                return []
            end = data.rfind(b"\n") + 1
            self._offset += end
        records = []
        for raw in data[:end].splitlines():
            try:
                item = json.loads(raw)
            except json.JSONDecodeError:
                continue
            records.append(
                logging.makeLogRecord(
                    {
                        "name": item["name"],
                        "levelno": item["levelno"],
                        "levelname": item["levelname"],
                        "created": item["created"],
                        "msg": item["message"],
                    }
                )
            )
        return records


_relay: Relay | None = None
_relay_lock = threading.Lock()
_PREFIX = "personaloom-vllm-log-"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def remove_orphans(tmp: Path) -> list[Path]:
    """Remove relay folders whose process is gone (killed before its exit hook ran)."""
    removed = []
    for folder in tmp.glob(f"{_PREFIX}*-*"):
        pid = folder.name[len(_PREFIX) :].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)) and folder.is_dir():
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


@contextmanager
def relay_vllm_logs() -> Iterator[Relay | None]:
    """While open, vLLM processes started by this process write through its relay file.

    Yields None when the user configures vLLM's logging themselves. One relay per process
    (an engine outlives a flow run and keeps writing to it), its folder removed at exit;
    `VLLM_LOGGING_CONFIG_PATH` is restored on leaving, so child processes started later
    (e.g. another `personaloom generate`) are not pointed at this process's file.
    """
    global _relay
    previous = os.environ.get("VLLM_LOGGING_CONFIG_PATH")
    if os.environ.get("VLLM_CONFIGURE_LOGGING", "1") == "0" or previous:
        yield None
        return
    with _relay_lock:
        if _relay is None:
            remove_orphans(Path(tempfile.gettempdir()))
            directory = Path(tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-"))
            atexit.register(shutil.rmtree, directory, ignore_errors=True)
            _relay = Relay(directory)
        relay = _relay
    console = os.environ.get("VLLM_LOGGING_LEVEL", "INFO").upper()
    relay.config_path.write_text(json.dumps(logging_config(str(relay.path), console)))
    os.environ["VLLM_LOGGING_CONFIG_PATH"] = str(relay.config_path)
    try:
        yield relay
    finally:
        os.environ.pop("VLLM_LOGGING_CONFIG_PATH", None)
