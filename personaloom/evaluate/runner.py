"""Ask a chat model every probe of a corpus and record what it does (`personaloom eval`).

`evaluate(dataset, out, model=..., context=...)`:
1. validates the options and the dataset (UserError, exit 2, before anything is written);
2. selects the probes: all of them, or with `limit=K` the first K in a fixed pseudo-random
   order (`derive_seed` of the probe id), so a larger K extends a smaller one;
3. skips the probes DIR/results.parquet already holds an answer for (a resumed run asks
   only the rest; rows of failed requests are asked again);
4. asks the rest in batches of probes sharing a persona's history (prefix-cache friendly):
   history under the context policy, the question, the answer constrained by a JSON schema
   to one of the choice letters, greedy decoding, a seed per probe;
5. writes DIR/results.parquet atomically after every batch (one row per probe and model:
   the choice, correct or not, status, raw output, context sessions and tokens, latency);
6. scores and writes DIR/report.json, DIR/report.md and DIR/accuracy_by_distance.png.

DIR/eval.json records the dataset, model, engine and context policy; another evaluation
in the same DIR is refused (exit 2). `latency_s` is the wall time of the engine call that
answered the probe (requests go in batches, so it is the time the probe waited for its
answer; `batch_size` says how many shared the call).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from personaloom import __version__, progress
from personaloom.atomic import write_table_atomic, write_text_atomic
from personaloom.engine import EMBEDDED_MODEL, Engine, EngineSpec, GenerationRequest, parse_json
from personaloom.errors import RunError, UserError
from personaloom.evaluate.context import (
    ANSWER_MAX_TOKENS,
    ContextPolicy,
    TokenCounter,
    answer_schema,
    estimate_tokens,
    fit_prompt,
    letters,
)
from personaloom.evaluate.dataset import Corpus, Source, load_corpus, parse_source
from personaloom.seeds import derive_seed

RESULTS = "results.parquet"
SETTINGS = "eval.json"
STAGE = "eval"
DEFAULT_BATCH = 64
BUDGET_MARGIN = 32  # tokens kept free beside the answer (chat-template slack)
RUN_SEED = 0

RESULT_SCHEMA = pa.schema(
    [
        ("probe_id", pa.string()),
        ("persona_id", pa.string()),
        ("type", pa.string()),
        ("after_session", pa.int32()),
        ("evidence_session", pa.int32()),
        ("distance", pa.int32()),
        ("model", pa.string()),
        ("context", pa.string()),
        ("choices", pa.int32()),  # how many choices the probe offered
        ("answer", pa.int32()),  # index of the correct choice
        ("choice", pa.string()),  # the letter the model chose (null: none parsed)
        ("choice_index", pa.int32()),
        ("correct", pa.bool_()),
        ("status", pa.string()),  # answered | unparseable | error
        ("raw", pa.string()),  # the model's output as it came (or the engine's error)
        ("context_sessions", pa.int32()),  # sessions given as history
        ("context_dropped", pa.int32()),  # sessions of the window dropped to fit the budget
        ("context_tokens", pa.int32()),  # prompt tokens (engine's count, else ours)
        ("output_tokens", pa.int32()),
        ("latency_s", pa.float64()),
        ("batch_size", pa.int32()),
    ]
)


@dataclass(frozen=True)
class Settings:
    """What identifies an evaluation (DIR/eval.json); `limit` may change between runs."""

    dataset: str
    model: str
    engine: str
    base_url: str | None
    context: str

    @classmethod
    def read(cls, out: Path) -> Settings | None:
        path = out / SETTINGS
        if not path.exists():
            return None
        try:
            data = json.loads(path.read_text())
            return cls(**{k: data.get(k) for k in cls.__dataclass_fields__})
        except (OSError, json.JSONDecodeError, TypeError) as exc:
            raise UserError(f"--out {out}: unreadable {SETTINGS} ({exc})") from None


def dataset_key(source: Source) -> str:
    if source.is_hub:
        return source.text.rstrip("/")
    assert source.path is not None
    return str(source.path.resolve())


def default_out(source: Source, model: str, context: ContextPolicy) -> Path:
    def slug(text: str) -> str:
        return "".join(c if c.isalnum() or c in "._-" else "-" for c in text).strip("-")

    name = "embedded-smollm2-135m" if model == EMBEDDED_MODEL else model
    return Path("evals") / slug(source.label) / f"{slug(name)}-{slug(str(context))}"


def select(probes: Sequence[Mapping[str, Any]], limit: int | None) -> list[Mapping[str, Any]]:
    """All probes, or the first `limit` in a fixed pseudo-random order; then in history
    order (persona, session, id) so that probes sharing a prefix run together."""
    chosen = list(probes)
    if limit is not None:
        chosen.sort(key=lambda p: derive_seed(RUN_SEED, str(p["probe_id"]), "eval-limit"))
        chosen = chosen[:limit]
    return sorted(chosen, key=lambda p: (p["persona_id"], p["after_session"], p["probe_id"]))


def read_results(out: Path) -> list[dict[str, Any]]:
    path = out / RESULTS
    if not path.exists():
        return []
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise UserError(f"{path}: not a readable results file ({exc})") from None
    return table.select(RESULT_SCHEMA.names).cast(RESULT_SCHEMA).to_pylist()


def write_results(out: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    ordered = sorted(rows, key=lambda r: r["probe_id"])
    write_table_atomic(pa.Table.from_pylist(ordered, schema=RESULT_SCHEMA), out / RESULTS)


def parse_choice(text: str, n: int) -> str | None:
    """The chosen letter: `{"answer": "B"}` (the constrained form), or a lone letter."""
    keys = letters(n)
    try:
        value = parse_json(text)
    except (ValueError, json.JSONDecodeError):
        value = text
    if isinstance(value, dict):
        value = value.get("answer")
    if isinstance(value, str):
        value = value.strip().strip('"').strip().rstrip(".").strip()
        if len(value) == 1 and value.upper() in keys:
            return value.upper()
    return None


def _tokenizer_counter(spec: EngineSpec, log: Callable[[str], None]) -> TokenCounter | None:
    """Exact prompt lengths with the model's own tokenizer and chat template (vLLM engine)."""
    try:
        from transformers import AutoTokenizer

        if spec.model == EMBEDDED_MODEL:
            from personaloom.engine import embedded_model_dir

            cache = Path(spec.model_cache) if spec.model_cache else None
            where = str(embedded_model_dir(cache))
        else:
            where = spec.model
        tokenizer = AutoTokenizer.from_pretrained(where)
    except Exception as exc:  # a model without a loadable tokenizer: estimate instead
        log(f"warning: no tokenizer for {spec.model} ({type(exc).__name__}); estimating tokens")
        return None

    def count(messages: list[dict[str, str]]) -> int:
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        if isinstance(ids, Mapping):
            ids = ids["input_ids"]
        return len(ids)

    return count


def token_counter(engine: Engine, spec: EngineSpec, log: Callable[[str], None]) -> TokenCounter:
    counter = getattr(engine, "count_tokens", None)
    if callable(counter):
        return counter
    if spec.engine == "vllm":
        found = _tokenizer_counter(spec, log)
        if found is not None:
            return found
    return estimate_tokens


def _request_seed(probe_id: str) -> int:
    return derive_seed(RUN_SEED, probe_id, STAGE)


def _generate(engine: Engine, requests: list[GenerationRequest]) -> tuple[list[Any], float]:
    """Completions for `requests`; a batch the engine raises on is retried one by one, so
    one bad request (say, a prompt the server refuses) is recorded without losing the rest.
    Raises RunError when the engine fails every request of the batch."""
    from personaloom.engine import Completion

    started = time.perf_counter()
    try:
        return engine.generate(requests), time.perf_counter() - started
    except RunError:
        raise
    except Exception as exc:
        if len(requests) == 1:
            error = f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
            return [Completion(requests[0].request_id, "", error=error)], 0.0
        first = exc
    completions = []
    for request in requests:
        done, _ = _generate(engine, [request])
        completions += done
    if all(c.error for c in completions):
        raise RunError(f"the engine failed on every request of a batch: {first}") from first
    return completions, time.perf_counter() - started


@dataclass
class Plan:
    """A validated evaluation: what to ask, where to write (see `prepare`)."""

    out: Path
    spec: EngineSpec
    policy: ContextPolicy
    source: Source
    corpus: Corpus
    chosen: list[Mapping[str, Any]]
    pending: list[Mapping[str, Any]]
    existing: list[dict[str, Any]]
    meta: dict[str, Any]
    batch_size: int
    max_context_tokens: int | None


def prepare(
    dataset: str,
    out: str | Path | None = None,
    *,
    model: str = EMBEDDED_MODEL,
    engine: str = "vllm",
    base_url: str | None = None,
    context: str = "full",
    limit: int | None = None,
    batch_size: int = DEFAULT_BATCH,
    max_context_tokens: int | None = None,
    log: Callable[[str], None] = print,
) -> Plan:
    """Validate the options, read the dataset and the results so far; write nothing.

    UserError (exit 2) for bad options, a dataset without probes (or without the
    conversations a context policy needs), a tag that does not exist, or an --out folder
    holding another evaluation."""
    policy = ContextPolicy.parse(context)
    if limit is not None and (isinstance(limit, bool) or int(limit) < 1):
        raise UserError(f"--limit {limit}: expected a whole number >= 1")
    if batch_size < 1:
        raise UserError(f"--batch-size {batch_size}: expected a whole number >= 1")
    if max_context_tokens is not None and max_context_tokens < 64:
        raise UserError(f"--max-context-tokens {max_context_tokens}: expected at least 64")
    spec = EngineSpec(engine=engine, model=model, base_url=base_url)
    spec.validate()
    source = parse_source(dataset)
    out_dir = Path(out) if out else default_out(source, model, policy)
    settings = Settings(dataset_key(source), model, engine, base_url, str(policy))
    recorded = Settings.read(out_dir)
    if recorded is not None and recorded != settings:
        raise UserError(
            f"--out {out_dir}: holds another evaluation ({recorded.model}, --context "
            f"{recorded.context}, {recorded.dataset}); choose another --out"
        )
    if recorded is None and (out_dir / RESULTS).exists():
        raise UserError(
            f"--out {out_dir}: holds {RESULTS} without {SETTINGS}; choose another --out"
        )
    existing = read_results(out_dir)
    corpus = load_corpus(source, need_conversations=policy.kind != "none")
    _check_probes(corpus)
    chosen = select(corpus.probes, limit)
    answered = {r["probe_id"] for r in existing if r["status"] != "error"}
    pending = [p for p in chosen if p["probe_id"] not in answered]
    log(
        f"{len(chosen)} probes selected of {len(corpus.probes)} in {source.label}; "
        f"{len(chosen) - len(pending)} already answered in {out_dir}, {len(pending)} to ask"
    )
    meta: dict[str, Any] = {
        **asdict(settings),
        "dataset_label": source.label,
        "dataset_commit": corpus.commit,
        "limit": limit,
        "model_name": model,
        "personaloom_version": __version__,
    }
    if recorded is not None:
        previous = json.loads((out_dir / SETTINGS).read_text())
        meta["model_name"] = previous.get("model_name") or model
    return Plan(
        out_dir,
        spec,
        policy,
        source,
        corpus,
        chosen,
        pending,
        existing,
        meta,
        batch_size,
        max_context_tokens,
    )


def execute(
    plan: Plan,
    *,
    engine_instance: Engine | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Ask the pending probes (results written after every batch), then write the reports."""
    from personaloom.engine import get_engine
    from personaloom.evaluate.report import write_reports

    out_dir, spec, meta = plan.out, plan.spec, dict(plan.meta)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = {r["probe_id"]: r for r in plan.existing}
    if plan.pending:
        runner = engine_instance or get_engine(spec)
        meta["model_name"] = getattr(runner, "model_name", None) or spec.model
        write_text_atomic(out_dir / SETTINGS, json.dumps(meta, indent=2) + "\n")
        budget = plan.max_context_tokens
        if budget is None and spec.engine == "vllm":
            budget = spec.max_model_len - ANSWER_MAX_TOKENS - BUDGET_MARGIN
        count = token_counter(runner, spec, log) if budget is not None else None
        total = len(plan.chosen)
        done = total - len(plan.pending)
        for start in range(0, len(plan.pending), plan.batch_size):
            batch = plan.pending[start : start + plan.batch_size]
            new = _ask(runner, batch, plan.corpus, plan.policy, budget, count, meta["model_name"])
            rows.update({r["probe_id"]: r for r in new})
            write_results(out_dir, list(rows.values()))
            done += len(batch)
            progress.advance("probes", done, total)
            correct = sum(1 for r in new if r["correct"])
            log(f"  {done}/{total} probes asked ({correct}/{len(new)} correct in this batch)")
    else:
        write_text_atomic(out_dir / SETTINGS, json.dumps(meta, indent=2) + "\n")
    selected = {p["probe_id"] for p in plan.chosen}
    results = [r for r in rows.values() if r["probe_id"] in selected]
    return write_reports(out_dir, results, meta=meta, total_probes=len(plan.corpus.probes))


def evaluate(
    dataset: str,
    out: str | Path | None = None,
    *,
    engine_instance: Engine | None = None,
    log: Callable[[str], None] = print,
    **options: Any,
) -> dict[str, Any]:
    """Run (or resume) one evaluation; return the report (also in DIR/report.json).
    `options` are `prepare`'s (model, engine, base_url, context, limit, ...)."""
    plan = prepare(dataset, out, log=log, **options)
    return execute(plan, engine_instance=engine_instance, log=log)


def _check_probes(corpus: Corpus) -> None:
    for probe in corpus.probes:
        n = len(probe.get("choices") or ())
        answer = probe.get("answer")
        if not 2 <= n <= 26 or answer is None or not 0 <= int(answer) < n:
            raise UserError(
                f"DATASET {corpus.source.text}: probe {probe.get('probe_id')} has {n} choices "
                f"and answer {answer}; expected 2-26 choices and an answer index among them"
            )


def _ask(
    engine: Engine,
    batch: Sequence[Mapping[str, Any]],
    corpus: Corpus,
    policy: ContextPolicy,
    budget: int | None,
    count: TokenCounter | None,
    model_name: str,
) -> list[dict[str, Any]]:
    prompts = {}
    requests = []
    too_long = {}
    for probe in batch:
        pid = str(probe["probe_id"])
        prompt = fit_prompt(
            probe,
            corpus.sessions.get(str(probe["persona_id"]), {}),
            policy,
            budget=budget,
            count=count,
        )
        prompts[pid] = prompt
        if budget is not None and prompt.tokens is not None and prompt.tokens > budget:
            too_long[pid] = f"prompt of {prompt.tokens} tokens exceeds the budget of {budget}"
            continue
        requests.append(
            GenerationRequest(
                request_id=pid,
                messages=prompt.messages,
                max_tokens=ANSWER_MAX_TOKENS,
                temperature=0.0,
                top_p=1.0,
                seed=_request_seed(pid),
                json_schema=answer_schema(len(probe["choices"])),
                stage=STAGE,
            )
        )
    completions, seconds = _generate(engine, requests) if requests else ([], 0.0)
    by_id = {c.request_id: c for c in completions}
    rows = []
    for probe in batch:
        pid = str(probe["probe_id"])
        prompt = prompts[pid]
        n = len(probe["choices"])
        completion = by_id.get(pid)
        choice = None
        if pid in too_long:
            status, raw, output_tokens, prompt_tokens = "error", too_long[pid], 0, 0
        elif completion is None or completion.error:
            error = completion.error if completion is not None else "no completion returned"
            status, raw, output_tokens, prompt_tokens = "error", str(error), 0, 0
        else:
            raw = completion.text
            output_tokens, prompt_tokens = completion.output_tokens, completion.prompt_tokens
            choice = parse_choice(raw, n)
            status = "answered" if choice is not None else "unparseable"
        index = letters(n).index(choice) if choice is not None else None
        evidence = probe.get("evidence_session")
        rows.append(
            {
                "probe_id": pid,
                "persona_id": str(probe["persona_id"]),
                "type": str(probe["type"]),
                "after_session": int(probe["after_session"]),
                "evidence_session": evidence,
                "distance": None if evidence is None else int(probe["after_session"]) - evidence,
                "model": model_name,
                "context": str(policy),
                "choices": n,
                "answer": int(probe["answer"]),
                "choice": choice,
                "choice_index": index,
                "correct": index is not None and index == int(probe["answer"]),
                "status": status,
                "raw": raw,
                "context_sessions": prompt.sessions,
                "context_dropped": prompt.dropped,
                "context_tokens": prompt_tokens or prompt.tokens,
                "output_tokens": output_tokens,
                "latency_s": round(seconds, 4) if status != "error" else None,
                "batch_size": len(requests),
            }
        )
    return rows
