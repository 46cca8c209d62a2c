"""Parquet I/O at the edges: atomic writes, zstd, bounded row groups, HF-style shard names."""

from __future__ import annotations

import contextlib
import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

# `datasets` writes row groups of <= 100 MB and shards of <= 500 MB (uncompressed); the
# viewer wants row groups of 100-300 MB at most. We stay well inside both.
ROW_GROUP_BYTES = 64 * 2**20
SHARD_BYTES = 256 * 2**20
SHARD_NAME = re.compile(r"^train-(\d{5})-of-(\d{5})\.parquet$")


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary sibling path; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def _row_group_rows(table: pa.Table, target_bytes: int = ROW_GROUP_BYTES) -> int:
    if table.num_rows == 0:
        return 1
    per_row = max(1, table.nbytes // table.num_rows)
    return max(1, min(table.num_rows, target_bytes // per_row))


def _write_parquet(table: pa.Table, path: Path) -> None:
    pq.write_table(
        table,
        path,
        compression="zstd",
        row_group_size=_row_group_rows(table),
        write_page_index=True,
    )


def write_table_atomic(table: pa.Table, path: Path) -> None:
    with atomic_path(path) as tmp:
        _write_parquet(table, tmp)


def shard_count(table: pa.Table, target_bytes: int = SHARD_BYTES) -> int:
    return max(1, -(-table.nbytes // target_bytes))


def write_shards(table: pa.Table, folder: Path, *, shards: int | None = None) -> list[Path]:
    """Write `table` as `folder/train-0000k-of-0000n.parquet`, replacing earlier shards.

    Every new shard is written (and synced) under a temporary name first; only when all of
    them are complete are they renamed into place, then shards of an earlier layout that
    are not part of the new one are removed. A failure while writing (disk full, a
    permission, an exception in the writer) leaves the previous shard set untouched and no
    temporary file behind.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    n = shards or shard_count(table)
    per_shard = -(-table.num_rows // n) if table.num_rows else 0
    planned: list[tuple[Path, Path]] = []
    try:
        for k in range(n):
            part = table.slice(k * per_shard, per_shard) if per_shard else table.slice(0, 0)
            path = folder / f"train-{k:05d}-of-{n:05d}.parquet"
            tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
            planned.append((tmp, path))
            _write_parquet(part, tmp)
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
    except BaseException:
        for tmp, _ in planned:
            tmp.unlink(missing_ok=True)
        raise
    for tmp, path in planned:
        os.replace(tmp, path)
    written = [path for _, path in planned]
    keep = {p.name for p in written}
    for stale in folder.glob("train-*.parquet"):
        if stale.name not in keep:
            stale.unlink()
    return written


def read_folder(folder: Path, schema: pa.Schema | None = None) -> pa.Table:
    files = sorted(Path(folder).glob("*.parquet"))
    files = [f for f in files if not f.name.startswith(".")]
    if not files:
        return schema.empty_table() if schema is not None else pa.table({})
    tables = [pq.read_table(f) for f in files]
    if schema is not None:
        tables = [t.select(schema.names).cast(schema) for t in tables]
    return pa.concat_tables(tables)
