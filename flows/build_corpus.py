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
from prefect.exceptions import TerminationSignal
from prefect.logging.handlers import APILogHandler

from personaloom import progress
from personaloom.engine.registry import close_engines
from personaloom.engine.vllm_logs import Relay, relay_vllm_logs
from personaloom.publish import adherence, fidelity
from personaloom.run import pipeline
from personaloom.run.config import RunConfig
from personaloom.secrets import RedactingFilter
from personaloom.state.lock import RUN_LOCK, RunLock
from personaloom.state.run_state import RunState


@task(name="persona-batch")
def persona_batch(out: str, batch: int) -> dict[str, Any]:
    return pipeline.run_batch(pipeline.load_run(Path(out)), batch)


@task(name="plan-replacements")
def replacement_batches(out: str) -> list[int]:
    return pipeline.plan_replacements(pipeline.load_run(Path(out)))


@task(name="finalize")
def finalize(out: str) -> dict[str, Any]:
    return pipeline.finalize(pipeline.load_run(Path(out)))


def resolve_dated(out: str, config: RunConfig, seed_from_date: bool) -> tuple[str, RunConfig]:
    """Scheduled runs: `{date}` in `out`, and with `seed_from_date` the seed, take the run's
    UTC date (YYYYMMDD)."""
    today = datetime.now(UTC)
    out = out.replace("{date}", today.strftime("%Y-%m-%d"))
    if seed_from_date:
        config = config.model_copy(update={"seed": int(today.strftime("%Y%m%d"))})
    return out, config


def forward_vllm_logs(relay: Relay | None) -> None:
    """vLLM's lines from all its processes (relayed through a file, see
    personaloom/engine/vllm_logs.py) into this flow run's Prefect log. API only: the console
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


class ArtifactProgress:
    """Moves the run's Prefect progress artifact as requests complete, not only per batch:
    exact at batch boundaries; within a batch every `4 * size` completed requests close
    half of the gap to the batch's end (how many requests a batch needs is not known in
    advance). Requests complete one by one (stages flow), so the artifact is updated at
    most every `EVERY_S` seconds."""

    EVERY_S = 2.0

    def __init__(self, artifact_id: Any, total: int) -> None:
        self.artifact_id, self.total = artifact_id, max(total, 1)
        self.done, self.next, self.calls, self.size = 0, 0, 0, 1
        self._sent = 0.0

    def batch(self, done: int, size: int) -> None:
        self.done, self.next, self.calls, self.size = done, done + size, 0, max(size, 1)
        self._sent = time.monotonic()
        update_progress_artifact(self.artifact_id, progress=100.0 * done / self.total)

    def submitted(self, stage: str, requests: int) -> None:
        pass

    def completed(self, stage: str, requests: int, output_tokens: int, seconds: float) -> None:
        self.calls += requests
        if time.monotonic() - self._sent < self.EVERY_S:
            return
        self._sent = time.monotonic()
        share = self.done + (self.next - self.done) * (1 - 0.5 ** (self.calls / (4 * self.size)))
        update_progress_artifact(self.artifact_id, progress=100.0 * share / self.total)

    def advance(self, unit: str, done: int, total: int) -> None:
        pass


def _eta(done: int, total: int, started: float) -> str:
    elapsed = time.perf_counter() - started
    if not done:
        return "rate -, ETA -"
    rate = done / elapsed
    return f"{rate:.2f} personas/s, ETA {int((total - done) / rate)} s"


@flow(name="build-corpus", log_prints=True)
def build_corpus(
    out: str,
    config: RunConfig | None = None,
    project: str | None = None,
    restart: bool = False,
    seed_from_date: bool = False,
    command: list[str] | None = None,
) -> dict[str, Any]:
    """Build a corpus into `out` with one `RunConfig` (every run setting; see
    personaloom/run/config.py). `project` is the corpus project folder, `restart` discards
    an earlier run in `out`, `command` is recorded in the card (`personaloom generate`
    passes its command line)."""
    logger = get_run_logger()
    out, config = resolve_dated(out, config or RunConfig(), seed_from_date)
    with RunLock(RunState(Path(out)).root / RUN_LOCK):
        try:
            return _build(logger, out, config, project, restart, command)
        except TerminationSignal:
            # Cancelled from the UI or CLI (the worker sends this process SIGTERM, then
            # SIGKILL): stop vLLM's engine processes now. Were this process killed first,
            # they end themselves (personaloom/engine/_parent_watch).
            close_engines()
            raise


def _build(
    logger: Any,
    out: str,
    config: RunConfig,
    project: str | None,
    restart: bool,
    command: list[str] | None,
) -> dict[str, Any]:
    if command is None:
        command = [f"prefect flow run build-corpus ({get_run_context().flow_run.id})"]
    run = pipeline.prepare(config, Path(out), project_dir=project, restart=restart, command=command)
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
    artifact = ArtifactProgress(
        create_progress_artifact(
            progress=100.0 * done_ids / max(total, 1), description="personas done"
        ),
        total,
    )
    progress.advance("personas", done_ids, total)
    started, new = time.perf_counter(), 0
    with relay_vllm_logs() as relay, progress.attached(artifact):
        try:
            # The slots' own ids, then rounds of replacements for the rejected and the
            # duplicates until N are kept or the candidate budget is spent (exact N).
            pending = [b for b in range(len(batches)) if not run.state.is_done(b)]
            if pending:  # the card's fidelity target, computed while the engine works
                pipeline.prefetch_fidelity_target(run)
            while True:
                for b in pending:
                    ids = batches[b]
                    artifact.batch(done_ids, len(ids))
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
                    artifact.batch(done_ids, 0)
                    progress.advance("personas", done_ids, total)
                    forward_vllm_logs(relay)
                pending = replacement_batches(out)
                if not pending:
                    break
                batches = run.batches()
                added = sum(len(batches[b]) for b in pending)
                total += added
                artifact.total = max(total, 1)
                logger.info("replacing %d personas not kept (exact --personas)", added)
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
    # population fidelity and persona adherence, as finalize computed them (the manifest)
    metrics = RunState(Path(out)).read_manifest().get("metrics") or {}
    figures.update(fidelity.figures(metrics.get("fidelity")))
    figures.update(adherence.figures(metrics.get("adherence")))
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
