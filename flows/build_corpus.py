"""Prefect flows: `build-corpus` (sample -> ... -> shards -> card) and `release`.

Thin by design: each task is one library call at batch granularity, with a folder and a
batch number as arguments. `personaloom generate` runs the same flow in-process.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.context import get_run_context
from prefect.logging.handlers import APILogHandler

from personaloom import pipeline
from personaloom.config import RunConfig, ShardSpec
from personaloom.engine import EMBEDDED_MODEL
from personaloom.secrets import RedactingFilter
from personaloom.vllm_logs import Relay, relay_vllm_logs


@task(name="persona-batch")
def persona_batch(out: str, batch: int) -> dict[str, Any]:
    return pipeline.run_batch(pipeline.load_run(Path(out)), batch)


@task(name="finalize")
def finalize(out: str) -> dict[str, Any]:
    return pipeline.finalize(pipeline.load_run(Path(out)))


def resolve_dated(out: str, seed: int) -> tuple[str, int]:
    """Scheduled runs: `{date}` in `out` and a negative seed take the run's UTC date."""
    today = datetime.now(UTC)
    if "{date}" in out:
        out = out.replace("{date}", today.strftime("%Y-%m-%d"))
    if seed < 0:
        seed = int(today.strftime("%Y%m%d"))
    return out, seed


def forward_vllm_logs(relay: Relay | None) -> None:
    """vLLM's lines from all its processes (relayed through a file, see
    personaloom/vllm_logs.py) into this flow run's Prefect log. API only: the console
    already showed them at VLLM_LOGGING_LEVEL."""
    if relay is None:
        return
    records = relay.drain()
    if not records:
        return
    flow_run_id = get_run_context().flow_run.id
    handler = APILogHandler()
    handler.addFilter(RedactingFilter())
    for record in records:
        record.flow_run_id = flow_run_id
        handler.handle(record)


def _eta(done: int, total: int, started: float) -> str:
    elapsed = time.perf_counter() - started
    if not done:
        return "rate -, ETA -"
    rate = done / elapsed
    return f"{rate:.2f} personas/s, ETA {int((total - done) / rate)} s"


@flow(name="build-corpus", log_prints=True)
def build_corpus(
    out: str,
    taxonomy: str = "human",
    personas: int = 8,
    sessions: int = 0,
    turns: int = 2,
    seed: int = 0,
    model: str = EMBEDDED_MODEL,
    engine: str = "vllm",
    base_url: str | None = None,
    critic_rounds: int = 2,
    judges: str = "auto",
    shard: str = "0/1",
    preset: str = "quick",
    batch_size: int = 64,
    quotas: list[str] | None = None,
    project: str | None = None,
    restart: bool = False,
    options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """`options` carries any other RunConfig field (e.g. `conversation_mode`,
    `max_tokens_narrative`); the named parameters win over it."""
    logger = get_run_logger()
    out, seed = resolve_dated(out, seed)
    config = RunConfig.from_dict(
        dict(options or {})
        | {
            "taxonomy": taxonomy,
            "personas": personas,
            "sessions": sessions,
            "turns": turns,
            "seed": seed,
            "model": model,
            "engine": engine,
            "base_url": base_url,
            "critic_rounds": critic_rounds,
            "judges": judges,
            "shard": ShardSpec.parse(shard),
            "preset": preset,
            "batch_size": batch_size,
            "quotas": quotas or [],
        }
    )
    run = pipeline.prepare(config, Path(out), project_dir=project, restart=restart)
    batches = run.batches()
    total = sum(len(b) for b in batches)
    done_ids = sum(len(batches[b]) for b in run.state.completed() if b < len(batches))
    logger.info(
        "run %s: %d personas in %d batches, %d already done",
        run.fingerprint,
        total,
        len(batches),
        done_ids,
    )
    progress = create_progress_artifact(
        progress=100.0 * done_ids / max(total, 1), description="personas done"
    )
    started, new = time.perf_counter(), 0
    with relay_vllm_logs() as relay:
        try:
            for b, ids in enumerate(batches):
                if run.state.is_done(b):
                    continue
                summary = persona_batch(out, b)
                new += len(ids)
                done_ids += len(ids)
                logger.info(
                    "personas %d/%d (%d%%) kept %d in batch %d, %s",
                    done_ids,
                    total,
                    100 * done_ids // max(total, 1),
                    summary["personas"],
                    b,
                    _eta(new, total - done_ids + new, started),
                )
                update_progress_artifact(progress, progress=100.0 * done_ids / max(total, 1))
                forward_vllm_logs(relay)
            result = finalize(out)
        finally:
            forward_vllm_logs(relay)
    counts = result["counts"]
    figures = {
        **counts,
        **result["throughput"],
        "duration_s": round(time.perf_counter() - started, 1),
    }
    for kind, rates in (result.get("critic") or {}).items():
        figures[f"{kind} critic acceptance (all rounds)"] = rates.get("all rounds")
    entered = counts["personas_kept"] + counts["duplicates_removed"]
    figures["persona duplicate rate"] = (
        round(counts["duplicates_removed"] / entered, 4) if entered else None
    )
    create_table_artifact(
        key="corpus-figures",
        table=[{"figure": k, "value": v} for k, v in figures.items()],
        description=f"personaloom run {run.fingerprint} into {out}",
    )
    create_markdown_artifact(
        markdown=f"# build-corpus\n\nOutput: `{out}`\n\nKept {counts['personas_kept']} of "
        f"{counts['personas_requested']} personas; {result['throughput']['tokens_per_s']} output tokens/s.",
        description="run summary",
    )
    return result


if __name__ == "__main__":
    build_corpus()
