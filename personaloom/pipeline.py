"""The run: prepare (validate everything, nothing written on bad input), batches, finalize.

Prefect-free: `flows/build_corpus.py` wraps these functions as coarse tasks, and tests call
them directly. Tasks receive the output folder and a batch number, never big objects; the
engine lives at process level (`personaloom.engine.get_engine`).
"""

from __future__ import annotations

import functools
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from personaloom import __version__
from personaloom import schema as S
from personaloom.config import RunConfig
from personaloom.corpus_dedup import dedup_personas
from personaloom.engine import EngineSpec, get_engine
from personaloom.errors import UserError
from personaloom.faults import checkpoint
from personaloom.personas import PersonaDraft
from personaloom.project import Project
from personaloom.prompts import PromptLibrary
from personaloom.records import rejections_table, to_table
from personaloom.rounds import (
    CriticPlan,
    RoundsResult,
    conversation_rounds,
    critic_summary,
    persona_rounds,
    resolve_judge_mode,
)
from personaloom.runstate import RunState, ensure_writable
from personaloom.secrets import redact
from personaloom.shards import write_shards, write_table_atomic, write_text_atomic

PERSONA_PROMPTS = ["system_writer", "persona_enrich", "persona_narrate"]
Progress = Callable[[str, int, int], None]
_ORDER = {
    "conversations": [("persona_id", "ascending"), ("session", "ascending")],
    "probes": [
        ("persona_id", "ascending"),
        ("after_session", "ascending"),
        ("probe_id", "ascending"),
    ],
}


@dataclass
class Run:
    config: RunConfig
    out: Path
    project: Project
    taxonomy_path: Path
    fingerprint: str

    @property
    def state(self) -> RunState:
        return RunState(self.out)

    @property
    def engine_spec(self) -> EngineSpec:
        return EngineSpec(
            engine=self.config.engine,
            model=self.config.model,
            base_url=self.config.base_url,
            compact_json=self.config.compact_json,
        )

    def prompts(self) -> PromptLibrary:
        return PromptLibrary(self.project.prompts)

    def persona_ids(self) -> list[int]:
        shard = self.config.shard
        return list(range(shard.index, self.config.personas, shard.count))

    def batches(self) -> list[list[int]]:
        ids = self.persona_ids()
        size = self.config.batch_size
        return [ids[i : i + size] for i in range(0, len(ids), size)]


# -- content loading (cached per process: tasks reload a run by folder) --------------------
@functools.lru_cache(maxsize=4)
def _taxonomy(path: str, mtime: float):
    from personaloom.taxonomy import load_taxonomy

    return load_taxonomy(Path(path))


def load_taxonomy_cached(path: Path):
    return _taxonomy(str(path), path.stat().st_mtime)


RULE_FILES = "rules*.y*ml"  # validators/rules*.yaml; other YAML there configures critics


@functools.lru_cache(maxsize=4)
def _rules(files: tuple[str, ...], taxonomy_path: str, stamp: tuple):
    from personaloom.rules import RuleSet, load_rules

    if not files:
        return RuleSet.empty()
    return load_rules([Path(f) for f in files], taxonomy=load_taxonomy_cached(Path(taxonomy_path)))


def load_rules_cached(project: Project, taxonomy_path: Path):
    """Rule files `validators/rules*.yaml` that declare this taxonomy's name."""
    files = sorted(project.validators.glob(RULE_FILES)) if project.validators.is_dir() else []
    stamp = tuple((p.name, p.stat().st_mtime) for p in files)
    return _rules(tuple(str(p) for p in files), str(taxonomy_path), stamp)


def content_hashes(project: Project, taxonomy_path: Path) -> dict[str, str]:
    """Hashes of the user-editable content a run depends on (part of its fingerprint)."""

    def digest(paths: list[Path]) -> str:
        h = hashlib.sha256()
        for path in sorted(paths):
            h.update(path.name.encode())
            h.update(path.read_bytes())
        return h.hexdigest()[:16]

    return {
        "taxonomy": digest([taxonomy_path]),
        "prompts": digest(list(project.prompts.glob("*.j2"))),
        "validators": digest(
            [
                p
                for p in project.validators.rglob("*")
                if p.is_file() and p.suffix in {".yaml", ".yml", ".py"}
            ]
        )
        if project.validators.is_dir()
        else "",
    }


# -- prepare ---------------------------------------------------------------------------
def validate(
    config: RunConfig,
    out: Path,
    *,
    project_dir: str | Path | None = None,
    restart: bool = False,
):
    """Every check of a run's input that can fail (exit 2), including that `out` holds no
    run of another configuration (unless `restart`); reads, never writes.

    Returns (project, taxonomy path, taxonomy, content hashes)."""
    out = Path(out)
    text = config.to_yaml()
    if redact(text) != text:
        raise UserError(
            "run options: an option holds the value of a secret (e.g. HF_TOKEN in --base-url); "
            "run state is stored in the clear, so pass credentials through the environment"
        )
    project = Project.locate(project_dir)
    taxonomy_path = project.taxonomy_path(config.taxonomy)
    taxonomy = load_taxonomy_cached(taxonomy_path)
    load_rules_cached(project, taxonomy_path)
    _check_prompts(project, config)
    critic_plan(project, config)
    EngineSpec(engine=config.engine, model=config.model, base_url=config.base_url).validate()
    if config.quotas:
        from personaloom.quotas import plan_quotas

        plan_quotas(taxonomy, config.quotas, n=config.personas, seed=config.seed)
    ensure_writable(out)
    hashes = content_hashes(project, taxonomy_path)
    if not restart:
        fingerprint = config.fingerprint(hashes)
        state = RunState(out)
        previous = state.read_manifest()
        if previous and previous.get("fingerprint") != fingerprint:
            raise UserError(
                f"--out {out}: holds a run with a different configuration "
                f"(fingerprint {previous.get('fingerprint')} != {fingerprint}; compare "
                f"{state.config_path} with your options); pass --restart to start over or "
                f"choose another folder"
            )
    return project, taxonomy_path, taxonomy, hashes


def prepare(
    config: RunConfig,
    out: Path,
    *,
    project_dir: str | Path | None = None,
    restart: bool = False,
    command: list[str] | None = None,
) -> Run:
    """Validate everything, then create or resume the run folder.

    Every check that can fail on user input happens before the first write.
    """
    out = Path(out)
    project, taxonomy_path, taxonomy, hashes = validate(
        config, out, project_dir=project_dir, restart=restart
    )
    fingerprint = config.fingerprint(hashes)
    run = Run(config, out, project, taxonomy_path, fingerprint)
    state = run.state
    if restart:
        state.reset()
    state.clean_orphans()
    state.root.mkdir(parents=True, exist_ok=True)
    write_text_atomic(state.config_path, config.to_yaml())
    manifest = state.read_manifest() if not restart else {}
    manifest.update(
        {
            "personaloom_version": __version__,
            "fingerprint": fingerprint,
            "content_hashes": hashes,
            "config": config.model_dump(mode="json"),
            "command": [redact(a) for a in (command or [])],
            "model": config.model,
            "engine": config.engine,
            "taxonomy": taxonomy.ref,
            "taxonomy_leaves": len(taxonomy.leaves),
            "project": str(project.root),
            "status": "running",
            "started_at": manifest.get("started_at") or _now(),
        }
    )
    state.write_manifest(manifest)
    state.log_event("prepare", restart=restart)
    return run


def _check_prompts(project: Project, config: RunConfig) -> None:
    library = PromptLibrary(project.prompts)
    sample = {
        "category": "demographics",
        "profile": ["demographics.age: 34"],
        "fields": [{"key": "k", "path": "a.b", "description": "d"}],
        "fewshot": "",
        "section": "background",
        "guide": "g",
    }
    library.check(PERSONA_PROMPTS, **sample)
    if config.sessions > 0:
        from personaloom.conversations import check_prompts

        check_prompts(library)


def critic_plan(project: Project, config: RunConfig) -> CriticPlan:
    """The critic stage of a run (loads and checks validators/critics*, judge prompts)."""
    if config.critic_rounds == 0:
        return CriticPlan(None, 0, "off")
    from personaloom.judges import load_critic_config

    critic = load_critic_config(project.validators, PromptLibrary(project.prompts))
    return CriticPlan(critic, config.critic_rounds, resolve_judge_mode(config.judges, config.model))


def load_run(out: Path) -> Run:
    """Rebuild a prepared run from its folder (what a Prefect task does)."""
    state = RunState(out)
    manifest = state.read_manifest()
    if not manifest:
        raise UserError(f"{out}: no personaloom run here (missing {state.manifest_path})")
    config = RunConfig.load(state.config_path)
    project = Project.locate(manifest.get("project"))
    taxonomy_path = project.taxonomy_path(config.taxonomy)
    return Run(config, Path(out), project, taxonomy_path, manifest["fingerprint"])


# -- one batch -------------------------------------------------------------------------
def sample_drafts(run: Run, ids: list[int]) -> tuple[list[PersonaDraft], list[dict[str, Any]]]:
    from personaloom.sampling import sample_skeletons

    taxonomy = load_taxonomy_cached(run.taxonomy_path)
    rules = load_rules_cached(run.project, run.taxonomy_path)
    quota_plan = None
    if run.config.quotas:
        from personaloom.quotas import plan_quotas

        quota_plan = plan_quotas(
            taxonomy, run.config.quotas, n=run.config.personas, seed=run.config.seed
        )
    drafts, rejected = [], []
    skeletons = sample_skeletons(
        taxonomy, run.config.seed, ids, run.config.preset, rules=rules, quota_plan=quota_plan
    )
    for sk in skeletons:
        draft = PersonaDraft(
            index=sk.index,
            seed=run.config.seed,
            taxonomy=taxonomy.ref,
            sampled=list(sk.attributes),
            pending=list(sk.generated),
        )
        if sk.rejected:
            draft.rejected = f"rules: {sk.rejected}"
            rejected.append(
                {
                    "record_id": draft.persona_id,
                    "kind": "persona",
                    "stage": "sample",
                    "critic": "rules",
                    "reason": str(sk.rejected),
                    "score": None,
                    "raw": "",
                }
            )
        drafts.append(draft)
    return drafts, rejected


def run_batch(run: Run, batch: int) -> dict[str, Any]:
    """Generate one batch end to end (critic rounds included) and commit it. Idempotent."""
    state = run.state
    if state.is_done(batch):
        return state.batch_summary(batch)
    ids = run.batches()[batch]
    started = time.perf_counter()
    engine = get_engine(run.engine_spec)
    tokens_before = engine.stats.output_tokens
    prompts = run.prompts()
    plan = critic_plan(run.project, run.config)
    drafts, rejected = sample_drafts(run, ids)
    unused = {d.index: d for d in drafts if d.rejected is None}

    def make_drafts(wanted: list[int]) -> list[PersonaDraft]:
        # Round 0 takes the skeletons sampled above; later rounds get fresh ones (the
        # generation mutates a draft, and the sampler gives persona i the same skeleton).
        if wanted and all(i in unused for i in wanted):
            return [unused.pop(i) for i in wanted]
        return sample_drafts(run, wanted)[0]

    made = persona_rounds(
        engine,
        prompts,
        make_drafts,
        list(unused),
        plan,
        seed=run.config.seed,
        max_tokens_section=run.config.max_tokens_section,
        max_tokens_narrative=run.config.max_tokens_narrative,
    )
    personas = made.accepted
    rejected += made.rejected
    conversations, probes = [], []
    report: dict[str, Any] = {"persona": made.report()}
    if run.config.sessions > 0 and personas:
        conversations, probes, dropped, talk = converse(run, engine, prompts, personas, plan)
        rejected += dropped
        report["conversation"] = talk.report()
    tables = {
        "personas": to_table(personas, S.PERSONAS),
        "conversations": to_table(conversations, S.CONVERSATIONS),
        "probes": to_table(probes, S.PROBES),
        "rejected": rejections_table(rejected),
    }
    seconds = time.perf_counter() - started
    summary = {
        "batch": batch,
        "ids": len(ids),
        "personas": len(personas),
        "rejected": len(
            {r["record_id"] for r in rejected if r["kind"] == "persona"}
            - {p["persona_id"] for p in personas}
        ),
        "rejection_rows": len(rejected),
        "conversations": len(conversations),
        "probes": len(probes),
        "critic": report if plan.config is not None else None,
        "output_tokens": engine.stats.output_tokens - tokens_before,
        "seconds": round(seconds, 3),
    }
    state.write_batch(batch, tables, summary)
    state.log_event("batch_done", batch=batch, personas=len(personas))
    checkpoint(f"after-batch-{batch}")
    return summary


def converse(
    run: Run,
    engine,
    prompts: PromptLibrary,
    personas: list[dict[str, Any]],
    plan: CriticPlan | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]], RoundsResult]:
    """Timelines, dialogues (critic rounds included) and probes for a batch's personas.

    A probe asked after session j is only kept when every session up to j was kept: its
    answer must be learnable from the released conversations.
    """
    from personaloom.conversations import generate_sessions
    from personaloom.probes import make_probes
    from personaloom.timeline import build_timeline

    config = run.config
    plan = plan or CriticPlan(None, 0, "off")
    timelines = {
        p["persona_id"]: build_timeline(
            p,
            sessions=config.sessions,
            seed=config.seed,
            update_probability=config.update_probability,
        )
        for p in personas
    }

    def generate(batch: list[dict[str, Any]], seed: int):
        return generate_sessions(
            engine,
            prompts,
            batch,
            [timelines[p["persona_id"]] for p in batch],
            turns=config.turns,
            seed=seed,
            mode=config.conversation_mode,
        )

    talk = conversation_rounds(generate, engine, prompts, personas, plan, seed=config.seed)
    conversations = sorted(talk.accepted, key=lambda c: (c["persona_id"], c["session"]))
    kept_sessions: dict[str, set[int]] = {}
    for c in conversations:
        kept_sessions.setdefault(c["persona_id"], set()).add(c["session"])
    probes = []
    for persona in personas:
        pid = persona["persona_id"]
        have = kept_sessions.get(pid, set())
        limit = next((s for s in range(config.sessions) if s not in have), config.sessions)
        probes += [
            p
            for p in make_probes(persona, timelines[pid], seed=config.seed)
            if p["after_session"] < limit
        ]
    return conversations, probes, talk.rejected, talk


# -- finalize --------------------------------------------------------------------------
DEDUP_REJECTED = "dedup.parquet"  # rejected/ file of finalize (rewritten on every finalize)


def finalize(run: Run) -> dict[str, Any]:
    """Merge committed batches into the released shards (after corpus dedup), then the
    metrics, the card and the manifest. Re-running it gives the same result."""
    state = run.state
    missing = [b for b in range(len(run.batches())) if not state.is_done(b)]
    if missing:
        raise UserError(f"{run.out}: batches {missing[:5]} are not complete; re-run generate")
    summaries = [state.batch_summary(b) for b in state.completed()]
    batch_rejected = [
        pq.read_table(p).cast(S.REJECTED)
        for p in sorted(state.rejected.glob("*.parquet"))
        if p.name != DEDUP_REJECTED
    ]
    deduped = dedup_personas(
        state.read_batches("personas", S.PERSONAS).sort_by("index"),
        state.read_batches("conversations", S.CONVERSATIONS),
        state.read_batches("probes", S.PROBES),
        threshold=run.config.dedup_threshold,
    )
    write_table_atomic(rejections_table(deduped.rejected), state.rejected / DEDUP_REJECTED)
    rejected = pa.concat_tables([*batch_rejected, rejections_table(deduped.rejected)])
    personas = deduped.personas
    write_shards(personas, run.out / "personas")
    checkpoint("finalize-after-shards")
    for name in ("conversations", "probes"):
        table = getattr(deduped, name)
        if table.num_rows:
            write_shards(table.sort_by(_ORDER[name]), run.out / name)
        else:  # a re-run after dedup removed every row must not leave old shards behind
            for stale in (run.out / name).glob("train-*.parquet"):
                stale.unlink()
    seconds = sum(s["seconds"] for s in summaries)
    tokens = sum(s["output_tokens"] for s in summaries)
    kinds = rejected.column("kind").to_pylist()
    rids = rejected.column("record_id").to_pylist()
    kept_ids = set(personas.column("persona_id").to_pylist())
    conv_ids = set(deduped.conversations.column("conversation_id").to_pylist())
    counts = {
        "personas_requested": len(run.persona_ids()),
        "personas_kept": personas.num_rows,
        "personas_rejected": len(
            {r for k, r in zip(kinds, rids, strict=True) if k == "persona"} - kept_ids
        )
        - deduped.exact
        - deduped.near,
        "duplicates_removed": deduped.exact + deduped.near,
        "exact_duplicates": deduped.exact,
        "near_duplicates": deduped.near,
        "rejected_records": rejected.num_rows,
        "conversations": deduped.conversations.num_rows,
        "conversations_rejected": len(
            {r for k, r in zip(kinds, rids, strict=True) if k == "conversation"} - conv_ids
        ),
        "probes": deduped.probes.num_rows,
    }
    critic = critic_summary([s.get("critic") for s in summaries])
    manifest = state.update_manifest(
        status="finalizing",
        counts=counts,
        critic=critic["rates"],
        critic_report=critic["report"],
        judges=resolve_judge_mode(run.config.judges, run.config.model)
        if run.config.critic_rounds
        else "off",
        throughput={
            "output_tokens": tokens,
            "seconds": round(seconds, 2),
            "tokens_per_s": round(tokens / seconds, 1) if seconds else None,
        },
    )
    from personaloom.metrics import compute_metrics

    metrics = compute_metrics(run.out)
    manifest = state.update_manifest(metrics=metrics)
    # The card describes the finished run; the manifest says `complete` only once it exists.
    finished = {**manifest, "status": "complete", "finished_at": _now()}
    _write_card(run.out, finished)
    manifest = state.update_manifest(status="complete", finished_at=finished["finished_at"])
    return {
        "out": str(run.out),
        "counts": counts,
        "throughput": manifest["throughput"],
        "critic": critic["rates"],
    }


def _write_card(out: Path, manifest: dict[str, Any]) -> None:
    try:
        from personaloom.card import write_card
    except ImportError:  # pragma: no cover - card module not installed yet
        write_card = _minimal_card
    write_card(out, manifest)


def _minimal_card(out: Path, manifest: dict[str, Any]) -> Path:
    from personaloom.shards import write_text_atomic

    configs = [
        c for c in ("personas", "conversations", "probes") if any((out / c).glob("train-*.parquet"))
    ]
    lines = ["---", "configs:"]
    for c in configs:
        lines += [
            f"- config_name: {c}",
            "  data_files:",
            "  - split: train",
            f"    path: {c}/train-*.parquet",
        ]
    lines += [
        "tags:",
        "- synthetic",
        "---",
        "",
        f"# Synthetic personas ({manifest.get('taxonomy')})",
        "",
    ]
    path = out / "README.md"
    write_text_atomic(path, "\n".join(lines) + "\n")
    return path


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
