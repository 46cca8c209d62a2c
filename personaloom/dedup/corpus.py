"""Corpus-level dedup: near-duplicate personas (by narrative) out, with what hangs off them.

Runs when a run's batches are merged into shards (and when shard parts are merged): exact
then MinHash-LSH near duplicates of the narratives (`personaloom.dedup.dedup_texts`); in
each cluster the persona with the highest critic score, then the lowest id, is kept. A
removed persona's conversations and probes go too. Everything removed becomes rejection
rows (stage `dedup`, the kept persona named in the reason, the record itself in `raw`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from personaloom.records import from_table, rejection


@dataclass
class CorpusDedup:
    personas: pa.Table
    conversations: pa.Table
    probes: pa.Table
    rejected: list[dict[str, Any]]
    exact: int
    near: int


def dedup_personas(
    personas: pa.Table,
    conversations: pa.Table,
    probes: pa.Table,
    *,
    threshold: float,
    ngram: int = 5,
    num_perm: int = 128,
    stage: str = "dedup",
) -> CorpusDedup:
    from personaloom.dedup import dedup_texts

    if personas.num_rows == 0:
        return CorpusDedup(personas, conversations, probes, [], 0, 0)
    ids = personas.column("persona_id").to_pylist()
    scores = [dict(s or []).get("critic_score") for s in personas.column("scores").to_pylist()]
    result = dedup_texts(
        personas.column("narrative").to_pylist(),
        ids,
        scores,
        threshold=threshold,
        ngram=ngram,
        num_perm=num_perm,
    )
    removed = {ids[i]: reason for i, reason in enumerate(result.reasons) if reason is not None}
    if not removed:
        return CorpusDedup(personas, conversations, probes, [], 0, 0)
    rows: list[dict[str, Any]] = []
    gone = pa.array(sorted(removed))
    for table, kind, key in (
        (personas, "persona", "persona_id"),
        (conversations, "conversation", "conversation_id"),
        (probes, "probe", "probe_id"),
    ):
        if table.num_rows == 0:
            continue
        dropped = table.filter(pc.is_in(table.column("persona_id"), gone))
        for record in from_table(dropped):
            reason = removed[record["persona_id"]]
            rows.append(
                rejection(
                    record[key],
                    kind,
                    stage,
                    "dedup",
                    reason if kind == "persona" else f"persona {reason}",
                    raw=json.dumps(record, ensure_ascii=False, default=str, sort_keys=True),
                )
            )
    keep = lambda t: t.filter(pc.invert(pc.is_in(t.column("persona_id"), gone)))  # noqa: E731
    exact = sum(1 for r in removed.values() if r.startswith("exact_duplicate"))
    return CorpusDedup(
        keep(personas),
        keep(conversations) if conversations.num_rows else conversations,
        keep(probes) if probes.num_rows else probes,
        rows,
        exact,
        len(removed) - exact,
    )
