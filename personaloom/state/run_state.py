"""Run state under `DIR/.personaloom/`: config, manifest, per-batch files, rejections.

A batch is complete when its `done` marker exists; the marker is written last, after the
batch's tables, each atomically. Re-running the same command skips complete batches, so a
crash or kill costs at most the batches in flight.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from personaloom.atomic import write_table_atomic, write_text_atomic
from personaloom.secrets import redact

STATE_DIR = ".personaloom"
# Left by a killed writer: temporary files (`.NAME.XXXXXXXX.tmp`, see shards.atomic_path and
# lock.py) and stale locks moved aside by RunLock.acquire (`.NAME.stale.XXXXXXXX`).
ORPHAN_PATTERNS = (".*.tmp", ".*.stale.*")


class RunState:
    def __init__(self, out: Path) -> None:
        self.out = Path(out)
        self.root = self.out / STATE_DIR
        self.batches = self.root / "batches"
        self.rejected = self.root / "rejected"

    # -- files -------------------------------------------------------------------------
    @property
    def manifest_path(self) -> Path:
        return self.root / "manifest.json"

    @property
    def config_path(self) -> Path:
        return self.root / "config.yaml"

    def exists(self) -> bool:
        return self.manifest_path.exists()

    def read_manifest(self) -> dict[str, Any]:
        if not self.manifest_path.exists():
            return {}
        return json.loads(self.manifest_path.read_text())

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        text = redact(json.dumps(manifest, indent=2, sort_keys=True, default=str))
        write_text_atomic(self.manifest_path, text + "\n")

    def update_manifest(self, **fields: Any) -> dict[str, Any]:
        manifest = self.read_manifest()
        manifest.update(fields)
        self.write_manifest(manifest)
        return manifest

    def check_not_held(self) -> None:
        """Refuse (UserError) while another live process holds this folder's run or release lock.

        Called before anything destructive (reset, orphan cleanup): the temporary files of a
        live writer are not orphans, and --restart must not delete a live run's state.
        """
        from personaloom.errors import UserError
        from personaloom.state.lock import RELEASE_LOCK, RUN_LOCK, RunLock, describe_holder

        for name, what in ((RUN_LOCK, "run"), (RELEASE_LOCK, "release")):
            path = self.root / name
            if not path.exists():
                continue
            info = RunLock(path).holder()
            if info is None:
                continue  # stale: taken over when the lock is acquired
            if info.get("pid") == os.getpid() and info.get("hostname") == socket.gethostname():
                continue  # this process holds it
            raise UserError(
                f"--out {self.out}: {path} is held by a running personaloom {what}, "
                f"{describe_holder(info)}; wait for it to finish"
            )

    def reset(self) -> None:
        """Forget an earlier run in this folder (used with --restart)."""
        self.check_not_held()
        if self.root.exists():
            # The lock (this process holds it) and the console logs of this and earlier
            # invocations stay; everything the earlier run computed goes.
            for entry in self.root.iterdir():
                if entry.name in KEPT_ON_RESET:
                    continue
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
        for config in ("personas", "conversations", "probes"):
            folder = self.out / config
            if folder.is_dir():
                for shard in folder.glob("train-*.parquet"):
                    shard.unlink()

    # -- events: an append-only log of what each invocation did ---------------------------
    @property
    def events_path(self) -> Path:
        return self.root / "events.jsonl"

    def log_event(self, event: str, **fields: Any) -> None:
        record = {"event": event, "pid": os.getpid(), "time": time.time(), **fields}
        with open(self.events_path, "a") as handle:
            handle.write(redact(json.dumps(record, sort_keys=True, default=str)) + "\n")

    def events(self) -> list[dict[str, Any]]:
        if not self.events_path.exists():
            return []
        lines = self.events_path.read_text().splitlines()
        # a kill mid-append can leave one torn last line: ignore it
        return [json.loads(line) for line in lines if line.strip().endswith("}")]

    # -- batches -----------------------------------------------------------------------
    def batch_file(self, batch: int, kind: str) -> Path:
        return self.batches / f"b{batch:06d}.{kind}.parquet"

    def done_marker(self, batch: int) -> Path:
        return self.batches / f"b{batch:06d}.done.json"

    def is_done(self, batch: int) -> bool:
        return self.done_marker(batch).exists()

    def completed(self) -> list[int]:
        return sorted(int(p.name[1:7]) for p in self.batches.glob("b*.done.json"))

    def write_batch(self, batch: int, tables: dict[str, pa.Table], summary: dict[str, Any]) -> None:
        for kind, table in tables.items():
            target = (
                self.rejected / f"b{batch:06d}.parquet"
                if kind == "rejected"
                else self.batch_file(batch, kind)
            )
            write_table_atomic(table, target)
        write_text_atomic(self.done_marker(batch), json.dumps(summary, sort_keys=True) + "\n")

    def batch_summary(self, batch: int) -> dict[str, Any]:
        return json.loads(self.done_marker(batch).read_text())

    def read_batches(self, kind: str, schema: pa.Schema) -> pa.Table:
        tables = []
        for batch in self.completed():
            path = self.batch_file(batch, kind)
            if path.exists():
                tables.append(pq.read_table(path).select(schema.names).cast(schema))
        return pa.concat_tables(tables) if tables else schema.empty_table()

    def clean_orphans(self) -> int:
        """Remove temporary files left by a killed writer (refused while a live process holds
        the folder: its temporary files are still being written)."""
        self.check_not_held()
        removed = 0
        for folder in (
            self.out,
            self.root,
            self.batches,
            self.rejected,
            *(self.out / c for c in ("personas", "conversations", "probes", "charts")),
        ):
            if folder.is_dir():
                for tmp in [p for pattern in ORPHAN_PATTERNS for p in folder.glob(pattern)]:
                    tmp.unlink(missing_ok=True)
                    removed += 1
        return removed


KEPT_ON_RESET = frozenset({"lock", "release.lock", "logs"})


def ensure_writable(out: Path) -> None:
    """Fail early (exit 2) when `--out` cannot be written, before anything is created."""
    from personaloom.errors import UserError

    probe_dir = out
    while not probe_dir.exists():
        probe_dir = probe_dir.parent
    if not probe_dir.is_dir():
        raise UserError(f"--out {out}: {probe_dir} is not a directory")
    if not os.access(probe_dir, os.W_OK | os.X_OK) or not can_create_in(probe_dir):
        raise UserError(f"--out {out}: {probe_dir} is not writable")
    if out.exists() and any(out.iterdir()) and not (out / STATE_DIR).exists():
        allowed = {"README.md", "personas", "conversations", "probes", "charts"}
        unexpected = sorted(p.name for p in out.iterdir() if p.name not in allowed)
        if unexpected:
            raise UserError(
                f"--out {out}: folder is not empty and holds no personaloom run "
                f"(found {', '.join(unexpected[:5])}); choose an empty or new folder"
            )


def can_create_in(folder: Path) -> bool:
    """Whether a file can really be created in `folder` (root passes os.access everywhere,
    read-only mounts and pseudo file systems do not): create one and remove it at once."""
    try:
        fd, name = tempfile.mkstemp(prefix=".personaloom-probe-", suffix=".tmp", dir=folder)
    except OSError:
        return False
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(name)
    return True
