"""Converting between record dicts and Arrow tables of the contract schemas."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from personaloom import schema as S


def to_table(records: Sequence[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    rows = [{name: _cell(record.get(name)) for name in schema.names} for record in records]
    return pa.Table.from_pylist(rows, schema=schema)


def _cell(value: Any) -> Any:
    if isinstance(value, dict):  # top-level dicts are map<string, ...> columns
        return list(value.items())
    return value


def from_table(table: pa.Table) -> list[dict[str, Any]]:
    rows = table.to_pylist()
    for row in rows:
        for key, value in row.items():
            if isinstance(value, list) and value and isinstance(value[0], tuple):
                row[key] = dict(value)
    return rows


def rejections_table(rows: Sequence[dict[str, Any]]) -> pa.Table:
    return to_table(rows, S.REJECTED)


def rejection(
    record_id: str,
    kind: str,
    stage: str,
    critic: str,
    reason: str,
    *,
    score: float | None = None,
    raw: str = "",
) -> dict[str, Any]:
    """One row of the rejected table (schema REJECTED): why a record was dropped, where."""
    return {
        "record_id": record_id,
        "kind": kind,
        "stage": stage,
        "critic": critic,
        "reason": reason,
        "score": None if score is None else float(score),
        "raw": raw or "",
    }
