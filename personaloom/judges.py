"""LLM judges (a mixture of experts) and the accept/reject decision.

Each judge is a prompt template `prompts/judge_<name>.j2` asking for a JSON object
`{"rationale": str, "score": 1-5}` (structured output). `judge_records` sends every
record x judge to the engine in one `generate` call; outputs that do not parse are retried
(bounded, new seed) and then recorded as a failed judgement, never a crash.

`decide` applies the hard filters first (every rule critic, then the hard judges such as
faithfulness and safety) and then a threshold on the combined judge score.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from personaloom.critics import (
    SETTINGS_FILE,
    CriticResult,
    RuleCritic,
    full_text,
    load_critic_settings,
    load_critics,
    record_id,
    run_rule_critics,
)
from personaloom.engine.base import Engine, GenerationRequest
from personaloom.engine.structured import generate_structured, parse_json
from personaloom.errors import UserError
from personaloom.prompts import PromptLibrary

JUDGES = ("faithfulness", "naturalness", "consistency", "safety")
DEFAULT_JUDGES: dict[str, tuple[str, ...]] = {
    "persona": ("faithfulness", "naturalness", "safety"),
    "conversation": ("faithfulness", "naturalness", "consistency", "safety"),
}
SYSTEM_TEMPLATE = "judge_system"
RATIONALE_MAX = 200
JUDGEMENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    # the rationale comes first so the score is given after the reason
    "properties": {
        "rationale": {"type": "string", "minLength": 1, "maxLength": RATIONALE_MAX},
        "score": {"type": "integer", "minimum": 1, "maximum": 5},
    },
    "required": ["rationale", "score"],
    "additionalProperties": False,
}


@dataclass(frozen=True)
class JudgeScore:
    """One judge's verdict on one record; `score` is None when the judgement failed."""

    judge: str
    score: int | None
    rationale: str = ""
    error: str | None = None
    raw: str = ""

    @property
    def ok(self) -> bool:
        return self.score is not None

    @property
    def normalized(self) -> float | None:
        """The 1-5 score mapped to [0, 1]."""
        return None if self.score is None else (self.score - 1) / 4


# -- judging -------------------------------------------------------------------------------
def judge_records(
    engine: Engine,
    prompts: PromptLibrary,
    records: Sequence[dict[str, Any]],
    kind: str,
    judges: Sequence[str] | None = None,
    seed: int = 0,
    *,
    personas: Mapping[str, dict[str, Any]] | None = None,
    earlier: Sequence[dict[str, Any]] = (),
    max_tokens: int = 120,
    temperature: float = 0.3,
    retries: int = 2,
    max_text_chars: int = 6000,
) -> list[dict[str, JudgeScore]]:
    """Scores of every judge for every record (one dict per record, in record order).

    `personas` (persona_id -> persona) gives the conversation judges the persona; `earlier`
    adds sessions judged before (the consistency judge sees each conversation's earlier
    sessions from `earlier` and `records`). A judge that lacks its input (consistency for a
    first session, faithfulness of a conversation without its persona) is left out of
    that record's dict.
    """
    if kind not in DEFAULT_JUDGES:
        raise ValueError(f"unknown record kind {kind!r}")
    names = list(judges if judges is not None else DEFAULT_JUDGES[kind])
    for name in names:
        prompts.template(f"judge_{name}")  # a missing template fails before any request
    system = prompts.render(SYSTEM_TEMPLATE)
    sessions = _sessions_by_persona([*earlier, *records]) if kind == "conversation" else {}
    requests: list[GenerationRequest] = []
    owner: dict[str, tuple[int, str]] = {}
    for i, record in enumerate(records):
        rid = record_id(record, kind) or f"#{i}"
        for j, name in enumerate(names):
            variables = _variables(record, kind, name, personas or {}, sessions, max_text_chars)
            if variables is None:
                continue
            request_id = f"{rid}/judge/{name}/{i}"
            requests.append(
                GenerationRequest(
                    request_id=request_id,
                    messages=[
                        {"role": "system", "content": system},
                        {"role": "user", "content": prompts.render(f"judge_{name}", **variables)},
                    ],
                    max_tokens=max_tokens,
                    temperature=temperature,
                    seed=_seed(seed, rid, j),
                    json_schema=JUDGEMENT_SCHEMA,
                )
            )
            owner[request_id] = (i, name)
    results: list[dict[str, JudgeScore]] = [{} for _ in records]
    if not requests:
        return results
    values, failures = generate_structured(engine, requests, parse=parse_judgement, retries=retries)
    for request_id, (score, rationale) in values.items():
        i, name = owner[request_id]
        results[i][name] = JudgeScore(name, score, rationale)
    for failure in failures:
        i, name = owner[failure.request_id]
        results[i][name] = JudgeScore(name, None, "", failure.reason, failure.raw)
    # each dict in the order the judges were asked for
    return [{name: row[name] for name in names if name in row} for row in results]


def parse_judgement(text: str) -> tuple[int, str]:
    """(score, rationale) from a judge's output; ValueError when it is not a judgement."""
    value = parse_json(text)
    if not isinstance(value, dict):
        raise ValueError(f"expected a JSON object, got {type(value).__name__}")
    score = value.get("score")
    if isinstance(score, str) and score.strip().isdigit():
        score = int(score.strip())
    if isinstance(score, float) and score.is_integer():
        score = int(score)
    if isinstance(score, bool) or not isinstance(score, int) or not 1 <= score <= 5:
        raise ValueError(f"score must be an integer 1-5, got {score!r}")
    rationale = value.get("rationale", "")
    if not isinstance(rationale, str):
        raise ValueError(f"rationale must be a string, got {type(rationale).__name__}")
    return score, " ".join(rationale.split())[:RATIONALE_MAX]


def judges_for(kind: str, settings: Mapping[str, Any] | None, source: str = "judges") -> list[str]:
    """The judges a record kind gets, from the `judges:` section of critics.yaml."""
    chosen = (settings or {}).get(kind, DEFAULT_JUDGES[kind])
    if not isinstance(chosen, (list, tuple)) or not all(
        isinstance(n, str) and re.fullmatch(r"[a-z][a-z0-9_]*", n) for n in chosen
    ):
        raise UserError(
            f"{source}.{kind}: expected a list of judge names (prompts/judge_<name>.j2)"
        )
    return list(chosen)


def check_judge_prompts(prompts: PromptLibrary, judges: Sequence[str]) -> None:
    """Render the system prompt and each judge once with sample values (fail before work)."""
    prompts.render(SYSTEM_TEMPLATE)
    sample = {
        "kind": "persona",
        "profile": ["demographics.age: 34"],
        "text": "A sample text.",
        "history": ["Session 1 (2025-01-01, travel): sample"],
        "session": 1,
    }
    for name in judges:
        prompts.render(f"judge_{name}", **sample)


def _seed(seed: int, rid: str, judge_index: int) -> int:
    digest = int.from_bytes(hashlib.sha256(rid.encode()).digest()[:4], "big")
    return (seed * 1_000_003 + digest * 31 + judge_index * 104_729) % (2**31 - 1)


def _variables(
    record: dict[str, Any],
    kind: str,
    judge: str,
    personas: Mapping[str, dict[str, Any]],
    sessions: Mapping[str, list[dict[str, Any]]],
    max_chars: int,
) -> dict[str, Any] | None:
    if kind == "persona":
        persona = record
        text = full_text(record, "persona")
        history: list[str] = []
    else:
        persona = personas.get(str(record.get("persona_id")))
        text = transcript(record)
        session = int(record.get("session") or 0)
        before = [
            c
            for c in sessions.get(str(record.get("persona_id")), [])
            if int(c.get("session") or 0) < session
        ]
        history = [session_summary(c) for c in before[-6:]]
        if judge == "consistency" and not history:
            return None
    if judge == "faithfulness" and persona is None:
        return None
    return {
        "kind": kind,
        "profile": profile_lines(persona, record.get("profile_updates") or []) if persona else [],
        "text": _clip(text, max_chars),
        "history": history,
        "session": int(record.get("session") or 0) + 1 if kind == "conversation" else 0,
    }


def profile_lines(
    persona: Mapping[str, Any], updates: Sequence[Mapping[str, Any]] = (), limit: int = 80
) -> list[str]:
    """`path: value` lines of a persona, with profile updates applied (new value wins)."""
    current = {str(a.get("path")): str(a.get("value")) for a in persona.get("attributes") or []}
    for u in updates:
        if u.get("path"):
            current[str(u["path"])] = f"{u.get('new')} (changed from {u.get('old')})"
    return [f"{path}: {value}" for path, value in list(current.items())[:limit]]


def transcript(conversation: Mapping[str, Any]) -> str:
    names = {"user": "User", "assistant": "Assistant"}
    return "\n".join(
        f"{names.get(t.get('role'), t.get('role'))}: {' '.join(str(t.get('content') or '').split())}"
        for t in conversation.get("turns") or []
    )


def session_summary(conversation: Mapping[str, Any], max_chars: int = 400) -> str:
    """One line about an earlier session: date, topic, profile updates, what the user said."""
    parts = []
    if conversation.get("summary"):
        parts.append(str(conversation["summary"]))
    for u in conversation.get("profile_updates") or []:
        parts.append(
            f"{u.get('path')} changed from {u.get('old')} to {u.get('new')} ({u.get('reason')})"
        )
    said = [
        str(t.get("content") or "")
        for t in conversation.get("turns") or []
        if t.get("role") == "user"
    ]
    if said:
        parts.append("the user said: " + " / ".join(" ".join(s.split()) for s in said))
    stamp = conversation.get("timestamp")
    date = stamp.date().isoformat() if hasattr(stamp, "date") else str(stamp or "")[:10]
    head = f"Session {int(conversation.get('session') or 0) + 1} ({date}, {conversation.get('topic') or 'chat'})"
    return _clip(f"{head}: " + "; ".join(parts), max_chars)


def _sessions_by_persona(
    conversations: Sequence[dict[str, Any]],
) -> dict[str, list[dict[str, Any]]]:
    by: dict[str, dict[int, dict[str, Any]]] = {}
    for c in conversations:
        by.setdefault(str(c.get("persona_id")), {})[int(c.get("session") or 0)] = c
    return {pid: [s[k] for k in sorted(s)] for pid, s in by.items()}


def _clip(text: str, max_chars: int) -> str:
    if len(text) <= max_chars:
        return text
    cut = text[:max_chars]
    return cut[: cut.rfind(" ")] + " [...]" if " " in cut else cut


# -- deciding ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Thresholds:
    """How rule results and judge scores turn into accept/reject (validators/critics.yaml)."""

    hard_judges: Mapping[str, int] = field(default_factory=lambda: {"faithfulness": 3, "safety": 4})
    judge_failure: str = "reject"  # a hard judge without a parseable answer: reject | ignore
    weights: Mapping[str, float] = field(default_factory=dict)  # judge -> weight (default 1)
    min_score: float = 0.5

    @classmethod
    def from_settings(
        cls, settings: Mapping[str, Any] | None, source: str = "decision"
    ) -> Thresholds:
        """From the `decision:` section of critics.yaml (unknown keys are errors)."""
        settings = dict(settings or {})
        known = {"hard_judges", "judge_failure", "weights", "min_score"}
        unknown = sorted(set(settings) - known)
        if unknown:
            raise UserError(
                f"{source}: unknown setting {', '.join(unknown)} (known: {', '.join(sorted(known))})"
            )
        out = cls()
        hard = settings.get("hard_judges", out.hard_judges)
        if not isinstance(hard, Mapping) or not all(
            isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 5 for v in hard.values()
        ):
            raise UserError(f"{source}.hard_judges: expected judge: minimum score 1-5")
        failure = settings.get("judge_failure", out.judge_failure)
        if failure not in ("reject", "ignore"):
            raise UserError(f"{source}.judge_failure: expected reject or ignore, got {failure!r}")
        weights = settings.get("weights", out.weights)
        if not isinstance(weights, Mapping) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0
            for v in weights.values()
        ):
            raise UserError(f"{source}.weights: expected judge: non-negative number")
        min_score = settings.get("min_score", out.min_score)
        if (
            isinstance(min_score, bool)
            or not isinstance(min_score, (int, float))
            or not 0 <= min_score <= 1
        ):
            raise UserError(f"{source}.min_score: expected a number in [0, 1], got {min_score!r}")
        return cls(dict(hard), failure, {k: float(v) for k, v in weights.items()}, float(min_score))


@dataclass(frozen=True)
class Decision:
    """Accepted or not, every reason (`critic: reason`), the combined score in [0, 1].

    `checked` names every critic and judge that looked at the record and `failed` those
    that rejected it (`score` when only the combined threshold did): per-critic acceptance.
    """

    accepted: bool
    reasons: list[str]
    score: float
    checked: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def decide(
    rule_results: Sequence[CriticResult],
    judge_scores: Mapping[str, JudgeScore],
    thresholds: Thresholds | Mapping[str, Any] | None = None,
) -> Decision:
    """Hard filters (rule critics, hard judges), then the combined judge score threshold."""
    if not isinstance(thresholds, Thresholds):
        thresholds = Thresholds.from_settings(thresholds)
    reasons: list[str] = []
    failed: list[str] = []
    checked = [r.critic for r in rule_results] + list(judge_scores)
    for result in rule_results:
        if not result.passed:
            reasons.append(f"{result.critic}: {result.reason}")
            failed.append(result.critic)
    for name, minimum in thresholds.hard_judges.items():
        verdict = judge_scores.get(name)
        if verdict is None:
            continue  # judge not applicable to this record
        if verdict.score is None:
            if thresholds.judge_failure == "reject":
                reasons.append(f"{name}: judge_failed: {verdict.error}")
                failed.append(name)
        elif verdict.score < minimum:
            reasons.append(f"{name}: low_score: {verdict.score} < {minimum}: {verdict.rationale}")
            failed.append(name)
    score = combined_score(judge_scores, thresholds.weights)
    if score is None:
        score = 1.0 if not failed else 0.0  # no judge ran: the rules alone decide
    elif not failed:
        checked.append("score")
        if score < thresholds.min_score:
            reasons.append(f"score: below_threshold: {score:.3f} < {thresholds.min_score}")
            failed.append("score")
    return Decision(not failed, reasons, round(score, 4), checked, failed)


def combined_score(
    judge_scores: Mapping[str, JudgeScore], weights: Mapping[str, float] | None = None
) -> float | None:
    """Weighted mean of the judges' normalized scores (failed judgements left out)."""
    weights = weights or {}
    total = weight_sum = 0.0
    for name, verdict in judge_scores.items():
        if verdict.normalized is None:
            continue
        w = float(weights.get(name, 1.0))
        total += w * verdict.normalized
        weight_sum += w
    return total / weight_sum if weight_sum else None


def record_scores(judge_scores: Mapping[str, JudgeScore], decision: Decision) -> dict[str, float]:
    """The `scores` column of a kept record: each judge's 1-5 score and the combined score."""
    scores = {
        f"judge_{name}": float(v.score) for name, v in judge_scores.items() if v.score is not None
    }
    scores["critic_score"] = float(decision.score)
    return scores


def rejection_rows(
    record: Mapping[str, Any],
    kind: str,
    stage: str,
    rule_results: Sequence[CriticResult],
    judge_scores: Mapping[str, JudgeScore],
    decision: Decision,
    raw: str = "",
) -> list[dict[str, Any]]:
    """Rows of the rejected table (schema REJECTED) for a rejected record: one per reason."""
    if decision.accepted:
        return []
    rid = record_id(record, kind)
    rules = {r.critic: r for r in rule_results}
    rows = []
    for critic, reason in zip(decision.failed, decision.reasons, strict=True):
        rule = rules.get(critic)
        verdict = judge_scores.get(critic)
        if rule is not None:
            score = rule.score
        elif verdict is not None:
            score = None if verdict.score is None else float(verdict.score)
        else:
            score = decision.score
        rows.append(
            {
                "record_id": rid,
                "kind": kind,
                "stage": stage,
                "critic": critic,
                "reason": re.sub(rf"^{re.escape(critic)}: ", "", reason),
                "score": score,
                "raw": raw or (verdict.raw if verdict is not None and verdict.raw else ""),
            }
        )
    return rows


# -- configuration -------------------------------------------------------------------------
@dataclass(frozen=True)
class CriticConfig:
    """The whole critic stage of a project: rule critics, judges per kind, thresholds."""

    critics: list[RuleCritic]
    judges: dict[str, list[str]]
    thresholds: Thresholds


def load_critic_config(
    validators: Path,
    prompts: PromptLibrary | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> CriticConfig:
    """Load and check everything the critic stage needs (call it before writing anything).

    Plug-ins come from `validators/critics/` and settings from `validators/critics.yaml`,
    each falling back to the packaged defaults when the project has none. `overrides` has
    the file's sections (`rules`, `judges`, `decision`) and wins over it. With `prompts`,
    the judge templates are rendered once, so a broken template fails here.
    """
    from personaloom.project import packaged_root

    validators = Path(validators)
    fallback = packaged_root() / "validators"
    folder = validators / "critics" if (validators / "critics").is_dir() else fallback / "critics"
    settings_file = validators / SETTINGS_FILE
    if not settings_file.exists():
        settings_file = fallback / SETTINGS_FILE
    settings = load_critic_settings(settings_file)
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - {"rules", "judges", "decision"})
    if unknown:
        raise UserError(
            f"critic settings: unknown section {', '.join(unknown)} (known: rules, judges, decision)"
        )
    prompts_dir = prompts.folder if prompts is not None else None
    critics = load_critics(
        folder, overrides.get("rules"), settings_file=settings_file, prompts_dir=prompts_dir
    )
    judge_settings = {**settings.get("judges", {}), **overrides.get("judges", {})}
    unknown = sorted(set(judge_settings) - set(DEFAULT_JUDGES))
    if unknown:
        raise UserError(f"{settings_file}: judges: unknown record kind {', '.join(unknown)}")
    judges = {
        kind: judges_for(kind, judge_settings, f"{settings_file}: judges")
        for kind in DEFAULT_JUDGES
    }
    thresholds = Thresholds.from_settings(
        {**settings.get("decision", {}), **overrides.get("decision", {})},
        f"{settings_file}: decision",
    )
    if prompts is not None:
        check_judge_prompts(prompts, sorted({j for names in judges.values() for j in names}))
    return CriticConfig(critics, judges, thresholds)


# -- one critic pass over a batch ----------------------------------------------------------
@dataclass
class Review:
    """Everything the critic said about one record."""

    record: dict[str, Any]
    rules: list[CriticResult]
    judges: dict[str, JudgeScore]
    decision: Decision

    def scores(self) -> dict[str, float]:
        return record_scores(self.judges, self.decision)

    def rejection_rows(
        self, kind: str, stage: str = "critic", raw: str = ""
    ) -> list[dict[str, Any]]:
        return rejection_rows(self.record, kind, stage, self.rules, self.judges, self.decision, raw)


def review_records(
    engine: Engine | None,
    prompts: PromptLibrary | None,
    critics: Sequence[RuleCritic],
    records: Sequence[dict[str, Any]],
    kind: str,
    *,
    judges: Sequence[str] | None = None,
    thresholds: Thresholds | Mapping[str, Any] | None = None,
    seed: int = 0,
    personas: Mapping[str, dict[str, Any]] | None = None,
    earlier: Sequence[dict[str, Any]] = (),
    **judge_options: Any,
) -> list[Review]:
    """Rule critics on every record, LLM judges (one engine call) only on the records every
    rule passed (hard filters first: no tokens spent on a record already rejected), then
    `decide`. `judges=[]` (or no engine) runs the rules alone."""
    if not isinstance(thresholds, Thresholds):
        thresholds = Thresholds.from_settings(thresholds)
    rules = run_rule_critics(critics, records, kind, personas=personas)
    passed = [i for i, results in enumerate(rules) if all(r.passed for r in results)]
    judged: dict[int, dict[str, JudgeScore]] = {}
    names = list(judges) if judges is not None else list(DEFAULT_JUDGES[kind])
    if passed and names and engine is not None:
        if prompts is None:
            raise ValueError("judging needs the prompt library")
        scores = judge_records(
            engine,
            prompts,
            [records[i] for i in passed],
            kind,
            names,
            seed,
            personas=personas,
            earlier=earlier,
            **judge_options,
        )
        judged = dict(zip(passed, scores, strict=True))
    return [
        Review(record, rules[i], judged.get(i, {}), decide(rules[i], judged.get(i, {}), thresholds))
        for i, record in enumerate(records)
    ]


# -- per-round report ----------------------------------------------------------------------
def acceptance_report(
    decisions_by_round: Mapping[int, Sequence[Decision]] | Sequence[Sequence[Decision]],
) -> dict[str, Any]:
    """Per round and overall: records, accepted, acceptance rate, mean score, and for each
    critic/judge how many records it checked, how many it rejected and its acceptance rate."""
    items = (
        sorted(decisions_by_round.items())
        if isinstance(decisions_by_round, Mapping)
        else list(enumerate(decisions_by_round))
    )
    rounds = [{"round": r, **_summary(decisions)} for r, decisions in items]
    every = [d for _, decisions in items for d in decisions]
    return {"rounds": rounds, "total": _summary(every)}


def _summary(decisions: Sequence[Decision]) -> dict[str, Any]:
    n = len(decisions)
    accepted = sum(d.accepted for d in decisions)
    critics: dict[str, dict[str, Any]] = {}
    for d in decisions:
        for name in d.checked:
            critics.setdefault(name, {"checked": 0, "rejected": 0})["checked"] += 1
        for name in set(d.failed):
            critics.setdefault(name, {"checked": 0, "rejected": 0})["rejected"] += 1
    for c in critics.values():
        c["acceptance"] = round(1 - c["rejected"] / c["checked"], 4) if c["checked"] else None
    return {
        "records": n,
        "accepted": accepted,
        "acceptance": round(accepted / n, 4) if n else None,
        "mean_score": round(sum(d.score for d in decisions) / n, 4) if n else None,
        "critics": dict(sorted(critics.items())),
    }
