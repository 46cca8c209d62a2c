"""Sharded Parquet with HF-style names (`train-00000-of-00004.parquet`), replaced as a set."""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path

import pyarrow as pa

from personaloom.atomic import write_parquet

SHARD_BYTES = 256 * 2**20
SHARD_NAME = re.compile(r"^train-(\d{5})-of-(\d{5})\.parquet$")


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
            write_parquet(part, tmp)
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
