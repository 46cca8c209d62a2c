"""LLM judges (a mixture of experts): prompting them and parsing their structured scores.

Each judge is a prompt template `prompts/judge_<name>.j2` asking for a JSON object
`{"rationale": str, "score": 1-5}` (structured output). `judge_flow` asks for every
record x judge in one step (`judge_records` runs it on an engine); outputs that do not
parse are retried (bounded, new seed) and then recorded as a failed judgement, never a
crash.

What the scores decide is `decision`; which judges a record kind gets is `settings`.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from personaloom.critic.rule_critics import full_text, record_id
from personaloom.engine.base import Completion, Engine, GenerationRequest
from personaloom.engine.flows import run_flows
from personaloom.engine.structured import parse_json, structured_batch_flow
from personaloom.generate.prompts import PromptLibrary
from personaloom.seeds import derive_seed

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
    **options: Any,
) -> list[dict[str, JudgeScore]]:
    """Scores of every judge for every record (one dict per record, in record order), all
    sent to `engine` at once; `judge_flow` says what is asked and how it is read."""
    (scores,) = run_flows(engine, [judge_flow(prompts, records, kind, judges, seed, **options)])
    return scores


def judge_flow(
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
) -> Generator[list[GenerationRequest], list[Completion], list[dict[str, JudgeScore]]]:
    """The judging of `records` as a flow (`personaloom.engine.flows`): one step with every
    record x judge, the unparseable ones asked again (bounded, new seed) and then recorded
    as failed judgements, never a crash. Returns one dict per record, in record order.

    Each request's prompt and seed depend only on its record and judge, so a record gets the
    same verdicts judged alone (in its persona's flow) or with its whole batch.
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
        for name in names:
            variables = _variables(record, kind, name, personas or {}, sessions, max_text_chars)
            if variables is None:
                continue
            request_id = f"{rid}/judge/{name}/{i}"
            requests.append(
                GenerationRequest(
                    request_id=request_id,
                    stage="judges",
                    messages=[
                        {"role": "system", "content": system},
                        {"role": "user", "content": prompts.render(f"judge_{name}", **variables)},
                    ],
                    max_tokens=max_tokens,
                    temperature=temperature,
                    seed=derive_seed(seed, rid, "judge", name),
                    json_schema=JUDGEMENT_SCHEMA,
                )
            )
            owner[request_id] = (i, name)
    results: list[dict[str, JudgeScore]] = [{} for _ in records]
    values, failures = yield from structured_batch_flow(
        requests, parse=parse_judgement, retries=retries
    )
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


def check_judge_prompts(prompts: PromptLibrary, judges: Sequence[str]) -> None:
    """Render the system prompt and each judge once with sample values (fail before work)."""
    prompts.render(SYSTEM_TEMPLATE)
    sample = {
        "kind": "persona",
        "persona_name": "Ana Souza",
        "profile": ["demographics.age: 34"],
        "text": "A sample text.",
        "history": ["Session 1 (2025-01-01, travel): sample"],
        "session": 1,
    }
    for name in judges:
        prompts.render(f"judge_{name}", **sample)


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
    name = str(persona.get("name") or "") if persona else ""
    profile = profile_lines(persona, record.get("profile_updates") or []) if persona else []
    return {
        "kind": kind,
        "persona_name": name,  # on its own line: left out of the profile lines
        "profile": [line for line in profile if not (name and line.endswith(f": {name}"))],
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
