"""Atomic file writes, shared by every layer: a reader never sees a half-written file.

Parquet goes out zstd-compressed with bounded row groups and a page index.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

# `datasets` writes row groups of <= 100 MB and shards of <= 500 MB (uncompressed); the
# viewer wants row groups of 100-300 MB at most. We stay well inside both.
ROW_GROUP_BYTES = 64 * 2**20


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


def write_parquet(table: pa.Table, path: Path) -> None:
    pq.write_table(
        table,
        path,
        compression="zstd",
        row_group_size=_row_group_rows(table),
        write_page_index=True,
    )


def write_table_atomic(table: pa.Table, path: Path) -> None:
    with atomic_path(path) as tmp:
        write_parquet(table, tmp)
