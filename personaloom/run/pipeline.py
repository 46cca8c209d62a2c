"""The run: prepare (validate everything, nothing written on bad input), batches, finalize.

Prefect-free: `flows/build_corpus.py` wraps these functions as coarse tasks, and tests call
them directly. Tasks receive the output folder and a batch number, never big objects; the
engine lives at process level (`personaloom.engine.get_engine`).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from personaloom import __version__
from personaloom import schema as S
from personaloom.atomic import write_text_atomic
from personaloom.critic.rounds import (
    ConversationRounds,
    CriticPlan,
    conversation_rounds,
    persona_rounds,
    resolve_judge_mode,
    resolve_rule_modes,
)
from personaloom.dedup.corpus import dedup_personas
from personaloom.engine import EngineSpec, get_engine
from personaloom.engine.openai_engine import DEFAULT_CONCURRENCY, server_max_num_seqs
from personaloom.engine.options import check_engine_options
from personaloom.engine.registry import api_key
from personaloom.errors import UserError
from personaloom.faults import checkpoint
from personaloom.generate.personas import PersonaDraft
from personaloom.generate.prompts import PromptLibrary
from personaloom.project import Project
from personaloom.records import rejections_table, to_table
from personaloom.run import replacements
from personaloom.run.config import FINGERPRINT_VERSION, RunConfig
from personaloom.run.finalize import ORDER, DedupSettings, finalize_folder
from personaloom.run.throughput import throughput
from personaloom.secrets import redact
from personaloom.state.run_state import RunState, ensure_writable

log = logging.getLogger("personaloom.run")

PERSONA_PROMPTS = ["system_writer", "persona_enrich", "persona_narrate"]
Progress = Callable[[str, int, int], None]
_ORDER = ORDER  # the released shards' row order (personaloom.run.finalize)


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
        return engine_spec(self.config)

    def prompts(self) -> PromptLibrary:
        return PromptLibrary(self.project.prompts)

    def persona_ids(self) -> list[int]:
        """The slots of this shard: ids i < personas with i mod n == k (its exact share)."""
        shard = self.config.shard
        return replacements.slots(self.config.personas, shard.index, shard.count)

    def initial_batches(self) -> list[list[int]]:
        ids = self.persona_ids()
        size = self.config.batch_size or derived_batch_size(self.config)
        return [ids[i : i + size] for i in range(0, len(ids), size)]

    def replacement_plan(self) -> replacements.ReplacementPlan:
        return replacements.ReplacementPlan.load(self.state.root)

    def batches(self) -> list[list[int]]:
        """Every planned batch: the slots' own ids, then the replacement batches."""
        plan = self.replacement_plan()
        return self.initial_batches() + [ids for _, ids in sorted(plan.batches.items())]

    @property
    def max_candidates(self) -> int:
        return replacements.budget(self.config.max_candidates, len(self.persona_ids()))


def engine_spec(config: RunConfig) -> EngineSpec:
    extra = dict(config.engine_options)
    max_model_len = int(extra.pop("max_model_len", EngineSpec.max_model_len))
    return EngineSpec(
        engine=config.engine,
        model=config.model,
        base_url=config.base_url,
        compact_json=config.compact_json,
        max_model_len=max_model_len,
        concurrency=_concurrency(config, config.engine),
        extra=extra,
    )


def _concurrency(config: RunConfig, engine: str) -> int:
    # In flight to an HTTP endpoint; the offline engine batches itself (and keeping the
    # spec's default lets a process share one engine whatever --concurrency says).
    if engine != "openai":
        return EngineSpec.concurrency
    return config.concurrency or DEFAULT_CONCURRENCY


def resolve_concurrency(config: RunConfig) -> RunConfig:
    """`config` with the requests in flight for --engine openai: its own --concurrency,
    else the server's max_num_seqs where the server reports it (`server_max_num_seqs`),
    else DEFAULT_CONCURRENCY. Speed only: not part of the fingerprint, asked anew on
    resume."""
    if config.engine != "openai" or config.concurrency is not None or not config.base_url:
        return config
    reported = server_max_num_seqs(config.base_url, api_key())
    concurrency = reported or DEFAULT_CONCURRENCY
    log.info(
        "in flight to %s: %d (%s)",
        redact(config.base_url),
        concurrency,
        "the server's max_num_seqs" if reported else "the server does not report max_num_seqs",
    )
    return config.model_copy(update={"concurrency": concurrency})


def judge_spec(config: RunConfig) -> EngineSpec | None:
    """The judges' own engine, or None when they run on the generating model."""
    if config.judge_model is None and config.judge_engine is None and not config.judge_base_url:
        return None
    engine = config.judge_engine or ("openai" if config.judge_base_url else "vllm")
    return EngineSpec(
        engine=engine,
        model=judge_model(config),
        base_url=config.judge_base_url,
        compact_json=config.compact_json,
        concurrency=_concurrency(config, engine),
    )


def judge_model(config: RunConfig) -> str:
    return config.judge_model or config.model


def _check_judge_engine(config: RunConfig) -> None:
    spec = judge_spec(config)
    if spec is None:
        return
    if config.judge_model is None:
        raise UserError(
            "--judge-model is required with --judge-engine or --judge-base-url (the model "
            "the judges' engine serves)"
        )
    if spec.engine == "vllm" and spec.base_url:
        raise UserError("--judge-base-url: only with --judge-engine openai")
    spec.validate(option_prefix="--judge-")


# -- content loading (cached per process: tasks reload a run by folder) --------------------
@functools.lru_cache(maxsize=4)
def _taxonomy(path: str, mtime: float):
    from personaloom.taxonomy.loader import load_taxonomy

    return load_taxonomy(Path(path))


def load_taxonomy_cached(path: Path):
    return _taxonomy(str(path), path.stat().st_mtime)


RULE_FILES = "rules*.y*ml"  # validators/rules*.yaml; other YAML there configures critics


@functools.lru_cache(maxsize=4)
def _rules(files: tuple[str, ...], taxonomy_path: str, stamp: tuple):
    from personaloom.taxonomy.rules import RuleSet, load_rules

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
        # The topic and preference catalogue the conversations draw from (same for every
        # run of this taxonomy; hashed even without sessions, so the fingerprint has one shape).
        "topics": _topics_digest(project, taxonomy_path, digest),
    }


def _topics_digest(
    project: Project, taxonomy_path: Path, digest: Callable[[list[Path]], str]
) -> str:
    from personaloom.generate.topics import catalogue_path

    try:
        path = catalogue_path(project, taxonomy_path)
    except UserError:
        return ""  # no catalogue: validate refuses a run with sessions
    return digest([path]) if path.is_file() else ""


# -- prepare ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Validated:
    """What `validate` established about a run's input."""

    project: Project
    taxonomy_path: Path
    taxonomy: Any
    content_hashes: dict[str, str]
    fingerprint: str
    config: RunConfig  # with its batch size resolved (`resolve_batch_size`)


# vLLM's own max_num_seqs for the offline LLM on CPU and on most GPUs (1024 on H100-class
# GPUs, where a user who wants more in flight sets --engine-option max_num_seqs=1024).
VLLM_MAX_NUM_SEQS = 256


def derived_batch_size(config: RunConfig) -> int:
    """Personas per batch when the run does not say: as many as the engine runs at once.

    Each persona of a batch is a flow with one request in flight (enrichment, narrative,
    turns), so a batch of max_num_seqs personas keeps the offline engine's running batch
    full; for an HTTP endpoint, --concurrency is what it takes at once."""
    if config.engine == "openai":
        return config.concurrency or DEFAULT_CONCURRENCY
    return int(config.engine_options.get("max_num_seqs") or VLLM_MAX_NUM_SEQS)


def resolve_batch_size(config: RunConfig, out: Path, restart: bool) -> RunConfig:
    """`config` with a batch size: its own, else the one the run in `out` recorded (a
    resumed run keeps its batches even when the engine options that derived it changed,
    which they may: max_num_seqs and concurrency only change speed), else derived."""
    if config.batch_size is not None:
        return config
    size = None
    if not restart:
        recorded = (RunState(out).read_manifest() or {}).get("config") or {}
        size = recorded.get("batch_size")
    return config.model_copy(update={"batch_size": int(size or derived_batch_size(config))})


# One validation per run and process: `generate` validates before it starts Prefect (so bad
# input exits 2 with nothing written), and the flow's `prepare` then finds the result here
# instead of checking everything again. Keyed on everything validation depends on,
# including the content hashes, so an edited taxonomy, prompt or critic is checked anew.
_VALIDATED: dict[tuple[Any, ...], Validated] = {}


def validate(
    config: RunConfig,
    out: Path,
    *,
    project_dir: str | Path | None = None,
    restart: bool = False,
) -> Validated:
    """Every check of a run's input that can fail (exit 2), including that `out` holds no
    run of another configuration (unless `restart`); reads, never writes."""
    out = Path(out)
    # engine options first: the derived batch size reads max_num_seqs from them
    check_engine_options(config.engine_options, config.engine)
    text = config.to_yaml()
    if redact(text) != text:  # before anything is sent to --base-url
        raise UserError(
            "run options: an option holds the value of a secret (e.g. HF_TOKEN in --base-url); "
            "run state is stored in the clear, so pass credentials through the environment"
        )
    config = resolve_concurrency(config)
    config = resolve_batch_size(config, out, restart)
    text = config.to_yaml()
    project = Project.locate(project_dir)
    taxonomy_path = project.taxonomy_path(config.taxonomy)
    hashes = content_hashes(project, taxonomy_path)
    key = (text, str(out.resolve()), str(project.root), restart, tuple(sorted(hashes.items())))
    if key in _VALIDATED:
        return _VALIDATED[key]
    _check_judge_engine(config)
    taxonomy = load_taxonomy_cached(taxonomy_path)
    load_rules_cached(project, taxonomy_path)
    _check_prompts(project, config)
    if config.min_sessions is not None and config.min_sessions > config.sessions:
        raise UserError(
            f"--min-sessions {config.min_sessions}: more than --sessions {config.sessions} "
            "(the sessions a persona must keep, at most the sessions it gets)"
        )
    if config.sessions > 0:
        from personaloom.generate.topics import catalogue_notice, catalogue_path, load_catalogue

        topics_path = catalogue_path(project, taxonomy_path)
        load_catalogue(topics_path, taxonomy)
        notice = catalogue_notice(topics_path, taxonomy_path)
        if notice:
            print(notice, file=sys.stderr)
    critic_plan(project, config)
    engine_spec(config).validate()
    if config.quotas:
        from personaloom.taxonomy.quotas import plan_quotas

        plan_quotas(taxonomy, config.quotas, n=config.personas, seed=config.seed)
    ensure_writable(out)
    fingerprint = config.fingerprint(hashes)
    if not restart:
        state = RunState(out)
        previous = state.read_manifest()
        if previous and previous.get("fingerprint") != fingerprint:
            raise UserError(
                f"--out {out}: holds a run with a different configuration "
                f"(fingerprint {previous.get('fingerprint')} != {fingerprint}; compare "
                f"{state.config_path} with your options); pass --restart to start over or "
                f"choose another folder"
            )
    _VALIDATED[key] = Validated(project, taxonomy_path, taxonomy, hashes, fingerprint, config)
    return _VALIDATED[key]


def prepare(
    config: RunConfig,
    out: Path,
    *,
    project_dir: str | Path | None = None,
    restart: bool = False,
    command: list[str] | None = None,
) -> Run:
    """Validate (once per process, see `validate`), then create or resume the run folder.

    Every check that can fail on user input happens before the first write. The caller
    holds the run lock. `command` is the exact command line, recorded for the card; a
    resumed run keeps the command that started it unless it is given again."""
    out = Path(out)
    checked = validate(config, out, project_dir=project_dir, restart=restart)
    config = checked.config
    run = Run(config, out, checked.project, checked.taxonomy_path, checked.fingerprint)
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
            "fingerprint": checked.fingerprint,
            "fingerprint_version": FINGERPRINT_VERSION,
            "content_hashes": checked.content_hashes,
            "config": config.model_dump(mode="json"),
            "command": [redact(a) for a in command] if command else manifest.get("command", []),
            "model": config.model,
            "judge_model": judge_model(config),
            "engine": config.engine,
            "taxonomy": checked.taxonomy.ref,
            "taxonomy_leaves": len(checked.taxonomy.leaves),
            "project": str(checked.project.root),
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
        "persona_name": "Ana Souza",
        "profile": ["demographics.age: 34"],
        "earlier": [{"section": "background", "text": "Ana grew up in Recife."}],
        "established": ["hobbies.pet_peeve: loud phone calls"],
        "fields": [{"key": "k", "path": "a.b", "description": "d"}],
        "fewshot": "",
        "section": "background",
        "guide": "g",
        "continued": False,
    }
    library.check(PERSONA_PROMPTS, **sample)
    if config.sessions > 0:
        from personaloom.generate.conversations import check_prompts

        check_prompts(library)


def critic_plan(project: Project, config: RunConfig) -> CriticPlan:
    """The critic stage of a run (loads and checks validators/critics*, judge prompts)."""
    if config.critic_rounds == 0:
        return CriticPlan(None, 0, "off")
    from personaloom.critic.settings import load_critic_config

    critic = load_critic_config(project.validators, PromptLibrary(project.prompts))
    critic = resolve_rule_modes(critic, config.model)
    mode = resolve_judge_mode(config.judges, judge_model(config))
    return CriticPlan(critic, config.critic_rounds, mode)


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
    from personaloom.records import rejection
    from personaloom.taxonomy.sampling import sample_skeletons

    taxonomy = load_taxonomy_cached(run.taxonomy_path)
    rules = load_rules_cached(run.project, run.taxonomy_path)
    quota_plan = None
    if run.config.quotas:
        from personaloom.taxonomy.quotas import plan_quotas

        quota_plan = plan_quotas(
            taxonomy, run.config.quotas, n=run.config.personas, seed=run.config.seed
        ).with_aliases(run.replacement_plan().slot_of)
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
            name=sk.name,
        )
        if sk.rejected:
            draft.rejected = f"rules: {sk.rejected}"
            rejected.append(
                rejection(draft.persona_id, "persona", "sample", "rules", str(sk.rejected))
            )
        drafts.append(draft)
    return drafts, rejected


def run_batch(run: Run, batch: int) -> dict[str, Any]:
    """Generate one batch end to end (critic rounds included) and commit it. Idempotent."""
    state = run.state
    if state.is_done(batch):
        return state.batch_summary(batch)
    ids = run.batches()[batch]
    engine = get_engine(run.engine_spec)
    before = _token_counts(engine)
    prompts = run.prompts()
    plan = critic_plan(run.project, run.config)
    judges_on = judge_spec(run.config)
    if judges_on is not None and plan.judges("persona") + plan.judges("conversation"):
        plan = dataclasses.replace(plan, judge_engine=get_engine(judges_on))
    # the batch's seconds are its generation's: loading the engines (first batch) is not
    # counted, so output tokens/s compares across batches, runs and engines
    started = time.perf_counter()
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
        narrative=load_taxonomy_cached(run.taxonomy_path).narrative,
    )
    personas = made.accepted
    rejected += made.rejected
    conversations, probes = [], []
    report: dict[str, Any] = {"persona": made.report()}
    if run.config.sessions > 0 and personas:
        talk = converse(run, engine, prompts, personas, plan)
        personas = [p for p in personas if p["persona_id"] not in talk.rejected_personas]
        conversations, probes = talk.conversations, talk.probes
        rejected += talk.rejected
        report["conversation"] = talk.rounds.report()
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
        **{k: v - before[k] for k, v in _token_counts(engine).items()},
        "seconds": round(seconds, 3),
    }
    state.write_batch(batch, tables, summary)
    state.log_event("batch_done", batch=batch, personas=len(personas))
    checkpoint(f"after-batch-{batch}")
    return summary


def _token_counts(engine) -> dict[str, int]:
    stats = engine.stats
    return {
        "requests": stats.requests,
        "output_tokens": stats.output_tokens,
        "prompt_tokens": stats.prompt_tokens,
        "cached_tokens": stats.cached_tokens,
        "cache_counted": stats.cache_counted,
    }


@dataclass
class Conversed:
    """What `converse` gives `run_batch`: the kept conversations and probes (complete
    timelines only), the rejection rows, the critic rounds, and the personas rejected
    whole because their timeline could not be completed (they must leave the batch's kept
    personas; their rows are in `rejected`)."""

    conversations: list[dict[str, Any]]
    probes: list[dict[str, Any]]
    rejected: list[dict[str, Any]]
    rounds: ConversationRounds
    rejected_personas: set[str]


def converse(
    run: Run,
    engine,
    prompts: PromptLibrary,
    personas: list[dict[str, Any]],
    plan: CriticPlan | None = None,
) -> Conversed:
    """Timelines, dialogues (critic rounds included) and probes for a batch's personas.

    Every kept persona keeps sessions 0..S-1 (or a complete prefix of at least
    `min_sessions`), and its probes cover exactly those sessions. A persona whose timeline
    cannot be completed within the critic rounds is rejected whole: a persona row naming
    the failing session and critic, and rows for its sessions and probes.
    """
    from personaloom.generate.conversations import TURN_TOKENS, generate_sessions
    from personaloom.generate.probes import make_probes
    from personaloom.generate.timeline import build_timeline
    from personaloom.generate.topics import catalogue_path, load_catalogue
    from personaloom.records import rejection

    config = run.config
    plan = plan or CriticPlan(None, 0, "off")
    catalogue = load_catalogue(
        catalogue_path(run.project, run.taxonomy_path), load_taxonomy_cached(run.taxonomy_path)
    )
    timelines = {
        p["persona_id"]: build_timeline(
            p,
            catalogue=catalogue,
            sessions=config.sessions,
            seed=config.seed,
            update_probability=config.update_probability,
        )
        for p in personas
    }

    def generate(batch, starts, earlier, seed: int):
        return generate_sessions(
            engine,
            prompts,
            batch,
            [timelines[p["persona_id"]] for p in batch],
            turns=config.turns,
            seed=seed,
            mode=config.conversation_mode,
            max_tokens=config.max_tokens_turn or TURN_TOKENS,
            start=starts,
            earlier=earlier,
            stop_at_rejection=True,
        )

    talk = conversation_rounds(
        generate,
        engine,
        prompts,
        personas,
        plan,
        seed=config.seed,
        sessions=config.sessions,
        min_sessions=config.min_sessions,
    )
    conversations = sorted(talk.accepted, key=lambda c: (c["persona_id"], c["session"]))
    kept: dict[str, int] = {}
    for c in conversations:
        kept[c["persona_id"]] = kept.get(c["persona_id"], 0) + 1
    probes: list[dict[str, Any]] = []
    rejected = list(talk.rejected)
    for persona in personas:
        pid = persona["persona_id"]
        if pid in talk.incomplete:
            done = talk.incomplete[pid]["session"]  # sessions 0..done-1 had been accepted
            if done:
                reason = [r["reason"] for r in rejected if r["record_id"] == pid][-1]
                rejected += [
                    rejection(
                        p["probe_id"],
                        "probe",
                        "conversation",
                        "timeline",
                        f"persona {pid} rejected: {reason}",
                        raw=json.dumps(p, ensure_ascii=False),
                    )
                    for p in make_probes(persona, timelines[pid].truncated(done), seed=config.seed)
                ]
            continue
        probes += make_probes(persona, timelines[pid].truncated(kept[pid]), seed=config.seed)
    return Conversed(conversations, probes, rejected, talk, set(talk.incomplete))


# -- exactly N kept ----------------------------------------------------------------------
def kept_ids(run: Run) -> set[int]:
    """Persona indices that finalize would keep from the committed batches: the same
    corpus dedup, with the same settings, over the same rows in the same order."""
    settings = DedupSettings(threshold=run.config.dedup_threshold, file=DEDUP_REJECTED)
    deduped = dedup_personas(
        run.state.read_batches("personas", S.PERSONAS).sort_by(ORDER["personas"]),
        S.CONVERSATIONS.empty_table(),
        S.PROBES.empty_table(),
        threshold=settings.threshold,
        ngram=settings.ngram,
        num_perm=settings.num_perm,
    )
    return set(deduped.personas.column("index").to_pylist())


def plan_replacements(run: Run) -> list[int]:
    """Once every planned batch is committed: new batches of replacement ids for the slots
    not (yet) kept, within the budget (personaloom/run/replacements.py). Returns their
    batch numbers, empty when the run has N kept personas or the budget is spent."""
    state = run.state
    batches = run.batches()
    missing = [b for b in range(len(batches)) if not state.is_done(b)]
    if missing:
        raise UserError(f"{run.out}: batches {missing[:5]} are not complete; re-run generate")
    plan = run.replacement_plan()
    shard = run.config.shard
    new = replacements.extend(
        plan,
        slot_ids=run.persona_ids(),
        kept=kept_ids(run),
        personas=run.config.personas,
        shard_index=shard.index,
        shard_count=shard.count,
        max_candidates=run.max_candidates,
        batch_size=run.config.batch_size or derived_batch_size(run.config),
        first_batch=len(batches),
    )
    plan.save(state.root)
    if new:
        state.log_event("replacements", batches=new, ids=sum(len(plan.batches[b]) for b in new))
    return new


def prefetch_fidelity_target(run: Run) -> None:
    """Start computing the population-fidelity target of the run in the background (see
    `personaloom.publish.fidelity.prefetch_target`); finalize then reads it."""
    from personaloom.publish.fidelity import prefetch_target

    prefetch_target(run.out, run.state.read_manifest())


# -- finalize --------------------------------------------------------------------------
DEDUP_REJECTED = "dedup.parquet"  # rejected/ file of finalize (rewritten on every finalize)


def finalize(run: Run) -> dict[str, Any]:
    """Merge committed batches into the released shards (after corpus dedup), then the
    metrics, the card and the manifest (`personaloom.run.finalize.finalize_folder`, which
    `merge` uses too). Re-running it gives the same result."""
    state = run.state
    missing = [b for b in range(len(run.batches())) if not state.is_done(b)]
    if missing:
        raise UserError(f"{run.out}: batches {missing[:5]} are not complete; re-run generate")
    summaries = [state.batch_summary(b) for b in state.completed()]
    done = finalize_folder(
        run.out,
        state,
        personas=state.read_batches("personas", S.PERSONAS),
        conversations=state.read_batches("conversations", S.CONVERSATIONS),
        probes=state.read_batches("probes", S.PROBES),
        rejected={
            p.name: pq.read_table(p).cast(S.REJECTED)
            for p in sorted(state.rejected.glob("*.parquet"))
            if p.name != DEDUP_REJECTED
        },
        rejected_in_place=True,  # the batches' files
        dedup=DedupSettings(threshold=run.config.dedup_threshold, file=DEDUP_REJECTED),
        personas_requested=len(run.persona_ids()),
        candidates=replacements.summary(
            run.replacement_plan(), len(run.persona_ids()), run.max_candidates
        ),
        critic_reports=[s.get("critic") for s in summaries],
        manifest_fields={
            "judges": resolve_judge_mode(run.config.judges, run.config.model)
            if run.config.critic_rounds
            else "off",
            "throughput": throughput(summaries),
        },
    )
    return {
        "out": str(run.out),
        "counts": done.counts,
        "throughput": done.manifest["throughput"],
        "critic": done.critic,
        "shortfall": done.manifest.get("shortfall"),
    }


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
