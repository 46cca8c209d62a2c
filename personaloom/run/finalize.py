"""Finalize a dataset folder: the one routine behind `generate`'s last step and `merge`.

`finalize_folder` takes the records gathered so far (a run's committed batches, or the
parts of a sharded run) and writes what a released folder holds, in this order:

1. corpus dedup of the personas (`personaloom.dedup.corpus.dedup_personas`; a removed
   persona's conversations and probes go with it);
2. the rejected tables under `.personaloom/rejected/`: the earlier ones (unless they are in
   place already) and the dedup's, then any other file there is removed;
3. the shards, in release order (`ORDER`): personas first, then the kill point
   (`checkpoint`, `finalize-after-shards` for a run), then conversations and probes; a
   config left without rows loses its old shards;
4. the counts, the critic summary, the dedup record and the caller's manifest fields, in
   the manifest with status `finalizing`;
5. the metrics (`personaloom.publish.metrics.compute_metrics`) and the card
   (`personaloom.publish.card.write_card`);
6. the manifest's status `complete` and `finished_at`, last: `complete` means the card and
   everything above are in place, so a crash anywhere before is redone by a re-run.

The output is a function of the inputs: a re-run gives the same folder.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa

from personaloom import schema as S
from personaloom.atomic import write_table_atomic
from personaloom.critic.rounds import critic_summary
from personaloom.dedup.corpus import dedup_personas
from personaloom.faults import checkpoint
from personaloom.publish.card import write_card
from personaloom.publish.metrics import compute_metrics
from personaloom.publish.shards import write_shards
from personaloom.records import rejections_table
from personaloom.run.replacements import shortfall_line
from personaloom.state.run_state import RunState

CONFIGS = ("personas", "conversations", "probes")
# Row order of the released shards (a merged corpus equals the unsharded run row for row).
ORDER: dict[str, list[tuple[str, str]]] = {
    "personas": [("index", "ascending")],
    "conversations": [("persona_id", "ascending"), ("session", "ascending")],
    "probes": [
        ("persona_id", "ascending"),
        ("after_session", "ascending"),
        ("probe_id", "ascending"),
    ],
}
# MinHash settings of the corpus dedup (the threshold comes from the run configuration).
DEDUP_NGRAM = 5
DEDUP_NUM_PERM = 128


@dataclass(frozen=True)
class DedupSettings:
    """How the corpus dedup runs and where its rejections go."""

    threshold: float
    file: str  # rejected/ file of the removed records (rewritten on every finalize)
    stage: str = "dedup"  # `stage` of its rejection rows
    ngram: int = DEDUP_NGRAM
    num_perm: int = DEDUP_NUM_PERM
    count_key: str | None = None  # a count of its own in the manifest (merge: across parts)


@dataclass(frozen=True)
class Finalized:
    counts: dict[str, Any]
    critic: dict[str, Any]  # acceptance rates (the manifest's `critic`)
    dedup: dict[str, Any]  # the manifest's `dedup` record
    manifest: dict[str, Any]  # as written last (status complete)


def finalize_folder(
    out: Path,
    state: RunState,
    *,
    personas: pa.Table,
    conversations: pa.Table,
    probes: pa.Table,
    rejected: Mapping[str, pa.Table],
    rejected_in_place: bool,
    dedup: DedupSettings,
    personas_requested: int,
    candidates: Mapping[str, Any] | None = None,
    critic_reports: Sequence[dict[str, Any] | None],
    manifest_fields: Mapping[str, Any],
    earlier_duplicates: tuple[int, int] = (0, 0),
    kill_point: str = "finalize-after-shards",
    embeddings: bool = True,
) -> Finalized:
    """Dedup, write rejected tables, shards, manifest, metrics and card (module docstring).

    - `personas`, `conversations`, `probes`: every record so far (any row order);
    - `rejected`: the rejection rows from before finalize, by their file name under
      `rejected/`; `rejected_in_place`: those files exist already (a run's batch files)
      rather than being written here (a merge's part tables);
    - `candidates`: how many persona ids were tried for the requested ones and whether the
      budget ran out (`personaloom.run.replacements.summary`), added to the counts;
    - `critic_reports`: the per-round reports to sum (`critic.rounds.critic_summary`);
    - `manifest_fields`: what the caller records besides (e.g. judges, throughput);
    - `earlier_duplicates`: (exact, near) personas removed as duplicates before (by the
      parts' own finalize, for a merge), added to this dedup's in the counts;
    - `kill_point`: the named kill point after the personas shards (`personaloom.faults`);
    - `embeddings=False` skips the embedding-based metric.
    """
    out = Path(out)
    tables = {
        name: table.sort_by(ORDER[name])
        for name, table in zip(CONFIGS, (personas, conversations, probes), strict=True)
    }
    deduped = dedup_personas(
        tables["personas"],
        tables["conversations"],
        tables["probes"],
        threshold=dedup.threshold,
        ngram=dedup.ngram,
        num_perm=dedup.num_perm,
        stage=dedup.stage,
    )
    kept = {
        "personas": deduped.personas,
        "conversations": deduped.conversations,
        "probes": deduped.probes,
    }

    dedup_rejected = rejections_table(deduped.rejected)
    if not rejected_in_place:
        for name, table in rejected.items():
            write_table_atomic(table, state.rejected / name)
    write_table_atomic(dedup_rejected, state.rejected / dedup.file)
    wanted = {*rejected, dedup.file}
    for stale in state.rejected.glob("*.parquet"):
        if stale.name not in wanted:
            stale.unlink()

    write_shards(kept["personas"], out / "personas")
    checkpoint(kill_point)
    for name in ("conversations", "probes"):
        if kept[name].num_rows:
            write_shards(kept[name], out / name)
        else:  # a re-run after dedup removed every row must not leave old shards behind
            for stale in (out / name).glob("train-*.parquet"):
                stale.unlink()

    exact = earlier_duplicates[0] + deduped.exact
    near = earlier_duplicates[1] + deduped.near
    counts = _counts(kept, [*rejected.values(), dedup_rejected], personas_requested, exact, near)
    if dedup.count_key:
        counts[dedup.count_key] = deduped.exact + deduped.near
    counts.update(candidates or {})
    shortfall = shortfall_line(
        counts["personas_kept"], personas_requested, bool(counts.get("budget_exhausted"))
    )
    record = {
        "input": personas.num_rows,
        "exact_duplicates": deduped.exact,
        "near_duplicates": deduped.near,
        "threshold": dedup.threshold,
        "num_perm": dedup.num_perm,
        "ngram": dedup.ngram,
    }
    critic = critic_summary(critic_reports)
    state.update_manifest(
        **manifest_fields,
        status="finalizing",
        counts=counts,
        critic=critic["rates"],
        critic_report=critic["report"],
        dedup=record,
        shortfall=shortfall,
    )
    manifest = state.update_manifest(metrics=compute_metrics(out, embeddings=embeddings))
    # The card describes the finished run; the manifest says `complete` only once it exists.
    finished = {**manifest, "status": "complete", "finished_at": _now()}
    write_card(out, finished)
    manifest = state.update_manifest(status="complete", finished_at=finished["finished_at"])
    return Finalized(counts, critic["rates"], record, manifest)


def _counts(
    kept: dict[str, pa.Table],
    rejected: Sequence[pa.Table],
    requested: int,
    exact: int,
    near: int,
) -> dict[str, Any]:
    """The manifest's counts. A record counts as rejected once, however many rejection rows
    it has, and not when a later round kept it; personas removed as duplicates count as
    duplicates, not as rejected. `rejected_records` counts rejection rows."""
    rows = pl.concat(
        [pl.DataFrame(S.REJECTED.empty_table().select(["kind", "record_id"]))]
        + [pl.DataFrame(t.select(["kind", "record_id"])) for t in rejected]
    )

    def turned_down(kind: str, released: pa.Table, key: str) -> int:
        ids = pl.DataFrame(released.select([key])).rename({key: "record_id"})
        mine = rows.filter(pl.col("kind") == kind).select("record_id").unique()
        return mine.join(ids, on="record_id", how="anti").height

    personas, conversations = kept["personas"], kept["conversations"]
    return {
        "personas_requested": requested,
        "personas_kept": personas.num_rows,
        "personas_rejected": turned_down("persona", personas, "persona_id") - exact - near,
        "duplicates_removed": exact + near,
        "exact_duplicates": exact,
        "near_duplicates": near,
        "rejected_records": rows.height,
        "conversations": conversations.num_rows,
        "conversations_rejected": turned_down("conversation", conversations, "conversation_id"),
        "probes": kept["probes"].num_rows,
    }


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
