"""Multi-session dialogues: a user simulator role-plays the persona, an assistant answers.

Batching: sessions of one persona are sequential (the memory of session s depends on the
sessions before it), and so are the turns of a session, but every persona of the batch is
a flow (`personaloom.engine.flows`): its next turn goes to the engine as soon as its last
one is answered, whatever turn or session the other personas have reached. The engine's
queue holds one request of every persona still talking (with `turns` exchanges and S
sessions, a persona makes `2 * turns * S` requests in a row, plus retries). An engine
without streaming (test doubles) gets one `generate` call per step of all personas.

One-call mode (`mode="one_call"`) asks for a whole session as one JSON object
(`{"turns": [{"role", "content"}, ...]}`, bounded by the schema), one request per session;
invalid outputs are retried (bounded), then rejected.

Memory is symbolic, to keep prompts short and cheap: for each earlier session, its date,
topic, the preferences the user stated (with the values in force then) and the first
characters of the assistant's last answer; only the latest `MEMORY_DETAILED` sessions are
shown in full, the `MEMORY_BRIEF` before them as date + topic, older ones as a count. The
first session after a profile update carries the change (old value, new value, reason)
in the user simulator's prompt, and its opening turn is asked to mention it; an opening
that does not name the new value is retried once (and the retry kept either way), and
`update_mentions` measures how often the user's text actually names the new value.

Outputs are cleaned (role prefixes stripped, cut where the model starts writing the other
side's turn, whitespace trimmed); an empty or degenerate output is retried once with a
new seed, after which the conversation is returned as a rejection record (never dropped).
A session rejected this way is still remembered by later sessions by its topic.
"""

from __future__ import annotations

import json
import re
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from typing import Any

from personaloom.engine.base import Completion, Engine, GenerationRequest
from personaloom.engine.flows import run_flows
from personaloom.errors import UserError
from personaloom.generate.prompts import PromptLibrary
from personaloom.generate.timeline import Session, Timeline, persona_key
from personaloom.records import rejection as rejection_row
from personaloom.seeds import derive_seed

USER_SYSTEM = "user_simulator_system"
USER_TURN = "user_simulator_turn"
ASSISTANT_SYSTEM = "assistant_system"
ONE_CALL = "conversation_session"
PROMPT_NAMES = (USER_SYSTEM, USER_TURN, ASSISTANT_SYSTEM, ONE_CALL)

MODES = ("turns", "one_call")
MAX_TURNS = 20
MEMORY_DETAILED = 3
MEMORY_BRIEF = 6
MEMORY_ANSWER_CHARS = 160
PROFILE_LINES = 14
PROFILE_VALUE_CHARS = 160
NARRATIVE_CHARS = 600
ONE_CALL_RETRIES = 2
ONE_CALL_MAX_TOKENS = 3072
STOP = ("\nUser:", "\nAssistant:", "\nYou:", "\nUSER:", "\nASSISTANT:")

# Categories shown first when describing the persona; preference-like ones follow.
PROFILE_FIRST = (
    "demographics",
    "identity",
    "location",
    "career",
    "occupation",
    "education",
    "family",
)


@dataclass
class ConverseStats:
    """Counters of one `generate_sessions` call (they end up in the run report)."""

    conversations: int = 0
    rejected: int = 0
    requests: int = 0
    retried: int = 0
    engine_calls: int = 0
    updates: int = 0
    updates_mentioned: int = 0
    mention_retries: int = 0  # openings retried because they skipped a profile update
    rejected_by_reason: dict[str, int] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------
# Cleaning


_SPEAKER = r"(?:user|assistant|you|me|ai|human|bot|chatbot|customer|client)"
_PREFIX = re.compile(rf"^\s*[*_#]*\s*{_SPEAKER}\s*[*_]*\s*:\s*[*_]*\s*", re.IGNORECASE)
_OTHER_TURN = re.compile(
    rf"(?:\n|(?<=[.!?])[ \t]+)\s*[*_#]*\s*{_SPEAKER}\s*[*_]*\s*:", re.IGNORECASE
)
_QUOTES = "\"'“”‘’"


def clean_turn(text: str, *, truncated: bool = False) -> str:
    """The message itself: no role prefix, nothing of an invented next turn, trimmed.

    `truncated` (the output hit max_tokens) cuts back to the last full sentence when that
    keeps at least half of the text.
    """
    text = text.replace("\r\n", "\n").strip()
    for _ in range(3):
        stripped = _PREFIX.sub("", text, count=1)
        if stripped == text:
            break
        text = stripped
    match = _OTHER_TURN.search(text)
    if match:
        text = text[: match.start()]
    text = text.strip()
    if text[:1] in _QUOTES and not any(q in text[1:] for q in _QUOTES):
        text = text[1:].strip()
    elif len(text) >= 2 and text[0] in _QUOTES and text[-1] in _QUOTES:
        text = text[1:-1].strip()
    if truncated:
        end = max(text.rfind(p) for p in (". ", "! ", "? ", ".\n", "!\n", "?\n"))
        if text.endswith((".", "!", "?")):
            end = len(text) - 1
        if end >= len(text) // 2:
            text = text[: end + 1]
    text = re.sub(r"\n{3,}", "\n\n", text)
    text = re.sub(r"[ \t]+\n", "\n", text)
    return text.strip()


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def degenerate_reason(text: str, previous: str | None = None) -> str | None:
    """Why `text` is not a usable turn (None if it is)."""
    words = _words(text)
    if not text.strip():
        return "empty output"
    if len(words) < 2:
        return "too short"
    if text.rstrip().endswith((",", ":", ";")):
        return "unfinished output"  # a salutation or lead-in whose body went to another turn
    if len(words) >= 16 and len(set(words)) / len(words) < 0.3:
        return "repetitive output"
    lines = [line.strip().lower() for line in text.splitlines() if line.strip()]
    if len(lines) >= 3 and max(lines.count(line) for line in lines) >= 3:
        return "repeated lines"
    if previous is not None and _words(previous) == words:
        return "repeats the previous turn"
    return None


def mentions_value(text: str, value: str) -> bool:
    """Whether `text` names `value` (all its words, in order and adjacent, ignoring case)."""
    needle, hay = _words(value), _words(text)
    n = len(needle)
    return n > 0 and any(hay[i : i + n] == needle for i in range(len(hay) - n + 1))


def update_mentions(conversations: Sequence[dict[str, Any]]) -> tuple[int, int]:
    """(updates whose new value the user's turns mention, updates) over conversations."""
    mentioned = total = 0
    for conversation in conversations:
        said = "\n".join(t["content"] for t in conversation["turns"] if t["role"] == "user")
        for update in conversation["profile_updates"]:
            total += 1
            mentioned += mentions_value(said, update["new"])
    return mentioned, total


# ---------------------------------------------------------------------------------------
# Prompt variables


def _leaf(path: str) -> str:
    return path.rsplit(".", 1)[-1].replace("_", " ")


def _short(text: str, limit: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def profile_lines(persona: dict[str, Any], timeline: Timeline) -> list[str]:
    """Persona attributes worth showing the user simulator (preferences are shown apart)."""
    name = persona.get("name") or ""
    attributes = [
        a
        for a in persona.get("attributes") or ()
        if a["path"] not in timeline.preferences and not (name and a["value"] == name)
    ]

    def rank(attribute: dict[str, Any]) -> tuple[int, int]:
        root = attribute["path"].split(".", 1)[0].lower()
        first = PROFILE_FIRST.index(root) if root in PROFILE_FIRST else len(PROFILE_FIRST)
        return first, len(str(attribute["value"]))

    chosen = sorted(attributes, key=rank)[:PROFILE_LINES]
    return [f"{_leaf(a['path'])}: {_short(a['value'], PROFILE_VALUE_CHARS)}" for a in chosen]


@dataclass
class _Memory:
    """What a persona's user simulator remembers of one earlier session."""

    date: str
    topic: str
    task: str
    stated: list[str]
    last_answer: str | None


def _memory_of(timeline: Timeline, s: int, turns: Sequence[dict[str, str]] | None) -> _Memory:
    """What the user simulator remembers of session `s` (its turns, None if rejected)."""
    session = timeline.sessions[s]
    state = timeline.state_at(s)
    answers = [t["content"] for t in turns or () if t["role"] == "assistant"]
    return _Memory(
        date=session.timestamp.strftime("%Y-%m-%d"),
        topic=session.topic,
        task=session.task,
        stated=[f"{timeline.label(p)}: {state[p]}" for p in session.stated],
        last_answer=_short(answers[-1], MEMORY_ANSWER_CHARS) if answers else None,
    )


def _recalled(timeline: Timeline, start: int, records: Sequence[dict[str, Any]]) -> list[_Memory]:
    """The memory of the kept sessions 0..start-1 (`records`, one per session)."""
    by_session = {int(r["session"]): r for r in records}
    missing = [s for s in range(start) if s not in by_session]
    if missing or not 0 <= start <= len(timeline):
        raise ValueError(
            f"{timeline.persona_id}: start at session {start} needs the kept sessions "
            f"0..{start - 1} (missing {missing})"
        )
    return [_memory_of(timeline, s, by_session[s]["turns"]) for s in range(start)]


def _memory_lines(memory: list[_Memory]) -> list[str]:
    detailed = memory[-MEMORY_DETAILED:]
    earlier = memory[: len(memory) - len(detailed)]
    brief = earlier[-MEMORY_BRIEF:]
    lines: list[str] = []
    if len(earlier) > len(brief):
        lines.append(f"{len(earlier) - len(brief)} earlier conversations, not recalled in detail.")
    lines += [f"{m.date}: {m.topic}." for m in brief]
    for m in detailed:
        line = f"{m.date}: {m.topic} ({m.task})."
        if m.stated:
            line += " Mentioned: " + "; ".join(m.stated) + "."
        if m.last_answer:
            line += f' The assistant\'s last answer began: "{m.last_answer}"'
        lines.append(line)
    return lines


def _variables(
    persona: dict[str, Any], timeline: Timeline, session: Session, memory: list[_Memory]
) -> dict[str, Any]:
    state = timeline.state_at(session.index)
    return {
        "persona_name": persona.get("name") or "",
        "profile": profile_lines(persona, timeline),
        "narrative": _short(persona.get("narrative") or "", NARRATIVE_CHARS),
        "preferences": [
            {"label": timeline.label(p), "value": state[p]} for p in sorted(timeline.preferences)
        ],
        "date": session.timestamp.strftime("%A %d %B %Y"),
        "topic": session.topic,
        "task": session.task,
        "memory": _memory_lines(memory),
        "updates": [
            {"label": timeline.label(u.path), "old": u.old, "new": u.new, "reason": u.reason}
            for u in session.updates
        ],
        "stated": [
            {"label": timeline.label(p), "value": state[p]}
            for p in session.stated
            if p not in {u.path for u in session.updates}
        ],
    }


# ---------------------------------------------------------------------------------------
# Conversations in flight


@dataclass
class _Conversation:
    key: int | str  # persona index (or id): part of every request seed
    persona_id: str
    timeline: Timeline
    session: Session
    variables: dict[str, Any]
    turns: list[dict[str, str]] = field(default_factory=list)
    rejection: dict[str, Any] | None = None

    @property
    def conversation_id(self) -> str:
        return f"{self.persona_id}-s{self.session.index:02d}"

    def reject(self, reason: str, raw: str) -> None:
        self.rejection = rejection_row(
            self.conversation_id, "conversation", "converse", "generation", reason, raw=raw
        )

    def record(self, model: str) -> dict[str, Any]:
        return {
            "conversation_id": self.conversation_id,
            "persona_id": self.persona_id,
            "session": self.session.index,
            "timestamp": self.session.timestamp,
            "topic": self.session.topic,
            "turns": [dict(t) for t in self.turns],
            "profile_updates": [u.record() for u in self.session.updates],
            "model": model,
            "scores": {},
        }


def _seed(seed: int, c: _Conversation, *parts: int | str, attempt: int) -> int:
    return derive_seed(seed, c.key, "converse", c.session.index, *parts, attempt=attempt)


def _transcript(c: _Conversation, me: str, other: str) -> list[dict[str, str]]:
    return [
        {"speaker": me if t["role"] == "user" else other, "content": t["content"]} for t in c.turns
    ]


def _user_request(
    prompts: PromptLibrary,
    c: _Conversation,
    turn: int,
    turns: int,
    attempt: int,
    seed: int,
    max_tokens: int,
) -> GenerationRequest:
    system = prompts.render(USER_SYSTEM, **c.variables)
    instruction = prompts.render(
        USER_TURN,
        transcript=_transcript(c, "You", "Assistant"),
        turn=turn,
        turns=turns,
        task=c.variables["task"],
        updates=c.variables["updates"] if turn == 0 else [],
        stated=c.variables["stated"] if turn == min(1, turns - 1) else [],
    )
    return GenerationRequest(
        request_id=f"{c.conversation_id}-t{turn}-user-a{attempt}",
        stage="conversation turns",
        messages=[{"role": "system", "content": system}, {"role": "user", "content": instruction}],
        max_tokens=max_tokens,
        temperature=0.9,
        seed=_seed(seed, c, turn, "user", attempt=attempt),
        stop=STOP,
    )


def _assistant_request(
    prompts: PromptLibrary, c: _Conversation, turn: int, attempt: int, seed: int, max_tokens: int
) -> GenerationRequest:
    system = prompts.render(ASSISTANT_SYSTEM, date=c.variables["date"])
    messages = [{"role": "system", "content": system}]
    messages += [{"role": t["role"], "content": t["content"]} for t in c.turns]
    return GenerationRequest(
        request_id=f"{c.conversation_id}-t{turn}-assistant-a{attempt}",
        stage="conversation turns",
        messages=messages,
        max_tokens=max_tokens,
        temperature=0.7,
        seed=_seed(seed, c, turn, "assistant", attempt=attempt),
        stop=STOP,
    )


def _accept(completion: Completion, previous: str | None) -> tuple[str | None, str]:
    """(clean text, "") or (None, reason)."""
    if completion.error:
        return None, f"engine error: {completion.error}"
    text = clean_turn(completion.text, truncated=completion.finish_reason == "length")
    reason = degenerate_reason(text, previous)
    return (None, reason) if reason else (text, "")


def _turn_flow(
    prompts: PromptLibrary,
    c: _Conversation,
    role: str,
    turn: int,
    turns: int,
    seed: int,
    max_tokens: int,
    stats: ConverseStats,
) -> Generator[list[GenerationRequest], list[Completion], None]:
    """One side of turn `turn` of a live conversation: one request (+ one retry)."""
    fallback: str | None = None
    for attempt in range(2):
        if role == "user":
            request = _user_request(prompts, c, turn, turns, attempt, seed, max_tokens)
        else:
            request = _assistant_request(prompts, c, turn, attempt, seed, max_tokens)
        stats.requests += 1
        (completion,) = yield [request]
        previous = c.turns[-1]["content"] if c.turns else None
        text, reason = _accept(completion, previous)
        must_mention = (
            [u["new"] for u in c.variables["updates"]] if role == "user" and turn == 0 else []
        )
        if text is not None and all(mentions_value(text, v) for v in must_mention):
            c.turns.append({"role": role, "content": text})
            return
        if attempt == 0:
            # An opening that skips the update is usable but retried once for a better one.
            if text is not None:
                fallback = text
                stats.mention_retries += 1
            stats.retried += 1
        elif text is not None or fallback is not None:
            c.turns.append({"role": role, "content": text or fallback or ""})
        else:
            c.reject(f"{role} turn {turn}: {reason} (after one retry)", completion.text)


# ---------------------------------------------------------------------------------------
# One-call mode


def session_schema(turns: int, max_chars: int) -> dict[str, Any]:
    """JSON schema of a whole session: exactly `2 * turns` bounded turns."""
    return {
        "type": "object",
        "properties": {
            "turns": {
                "type": "array",
                "minItems": 2 * turns,
                "maxItems": 2 * turns,
                "items": {
                    "type": "object",
                    "properties": {
                        "role": {"type": "string", "enum": ["user", "assistant"]},
                        "content": {"type": "string", "minLength": 1, "maxLength": max_chars},
                    },
                    "required": ["role", "content"],
                    "additionalProperties": False,
                },
            }
        },
        "required": ["turns"],
        "additionalProperties": False,
    }


def _first_json(text: str) -> Any:
    text = text.strip()
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        start = text.find("{")
        if start < 0:
            raise
        return json.JSONDecoder().raw_decode(text[start:])[0]


def parse_session(text: str, turns: int, max_chars: int) -> list[dict[str, str]]:
    """Validate a one-call output; raises ValueError naming the first problem."""
    try:
        value = _first_json(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc.msg}") from None
    if not isinstance(value, dict) or not isinstance(value.get("turns"), list):
        raise ValueError('expected an object with a "turns" list')
    items = value["turns"]
    if len(items) != 2 * turns:
        raise ValueError(f"expected {2 * turns} turns, got {len(items)}")
    cleaned: list[dict[str, str]] = []
    for i, item in enumerate(items):
        expected = "user" if i % 2 == 0 else "assistant"
        if not isinstance(item, dict) or item.get("role") != expected:
            raise ValueError(f"turn {i}: expected role {expected}")
        content = item.get("content")
        if not isinstance(content, str) or len(content) > max_chars:
            raise ValueError(f"turn {i}: content missing or longer than {max_chars} characters")
        # Content cut by the schema's maxLength is trimmed back to its last full sentence.
        content = clean_turn(content, truncated=len(content) >= max_chars)
        reason = degenerate_reason(content, cleaned[-1]["content"] if cleaned else None)
        if reason:
            raise ValueError(f"turn {i}: {reason}")
        cleaned.append({"role": expected, "content": content})
    return cleaned


def _one_call_flow(
    prompts: PromptLibrary,
    c: _Conversation,
    turns: int,
    seed: int,
    max_tokens: int,
    stats: ConverseStats,
) -> Generator[list[GenerationRequest], list[Completion], None]:
    """A whole session as one JSON request, retried (bounded) until it parses."""
    max_chars = max(200, 4 * max_tokens)
    schema = session_schema(turns, max_chars)
    budget = min(ONE_CALL_MAX_TOKENS, 2 * turns * (max_tokens + 16) + 16)
    for attempt in range(ONE_CALL_RETRIES + 1):
        request = GenerationRequest(
            request_id=f"{c.conversation_id}-session-a{attempt}",
            stage="conversation sessions",
            messages=[
                {
                    "role": "user",
                    "content": prompts.render(ONE_CALL, **c.variables, turns=turns),
                }
            ],
            max_tokens=budget,
            temperature=0.8,
            seed=_seed(seed, c, "session", attempt=attempt),
            json_schema=schema,
        )
        stats.requests += 1
        (completion,) = yield [request]
        try:
            if completion.error:
                raise ValueError(f"engine error: {completion.error}")
            c.turns = parse_session(completion.text, turns, max_chars)
            return
        except ValueError as exc:
            if attempt < ONE_CALL_RETRIES:
                stats.retried += 1
            else:
                c.reject(
                    f"session: {exc} ({completion.finish_reason}; after {ONE_CALL_RETRIES} retries)",
                    completion.text,
                )


# ---------------------------------------------------------------------------------------
# Entry point


def check_prompts(prompts: PromptLibrary) -> None:
    """Render every conversation template once with sample variables: fail before any work."""
    sample = {
        "persona_name": "Ana Souza",
        "profile": ["age: 34"],
        "narrative": "A person.",
        "preferences": [{"label": "diet", "value": "vegan"}],
        "date": "Monday 06 January 2025",
        "topic": "cooking",
        "task": "plan dinners",
        "memory": ["2025-01-01: asked for help with cooking."],
        "updates": [
            {"label": "diet", "old": "vegan", "new": "vegetarian", "reason": "a doctor said so"}
        ],
        "stated": [{"label": "diet", "value": "vegan"}],
    }
    prompts.render(USER_SYSTEM, **sample)
    prompts.render(
        USER_TURN,
        transcript=[{"speaker": "You", "content": "hi"}],
        turn=1,
        turns=2,
        task="plan dinners",
        updates=sample["updates"],
        stated=sample["stated"],
    )
    prompts.render(ASSISTANT_SYSTEM, date=sample["date"])
    prompts.render(ONE_CALL, **sample, turns=2)


TURN_TOKENS = 160  # token limit of one turn unless the run sets max_tokens_turn


def generate_sessions(
    engine: Engine,
    prompts: PromptLibrary,
    personas: Sequence[dict[str, Any]],
    timelines: Sequence[Timeline],
    *,
    turns: int,
    seed: int,
    mode: str = "turns",
    max_tokens: int = TURN_TOKENS,
    stats: ConverseStats | None = None,
    start: Sequence[int] | None = None,
    earlier: Sequence[Sequence[dict[str, Any]]] | None = None,
    stop_at_rejection: bool = False,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every session of every persona: (conversation records, rejection records).

    Conversations come out in (session, persona) order. `max_tokens` bounds one turn; in
    one-call mode the session's budget is derived from it. Request seeds derive from
    (seed, persona index, session, turn, side, attempt).

    `start[i]` is the first session generated for persona i (default 0); its sessions before
    that are the kept records `earlier[i]` (sessions 0..start-1), which the memory of the
    generated sessions recalls. `stop_at_rejection` ends a persona's sessions at its first
    rejected one (the later ones would remember a session that is not kept).
    """
    if isinstance(turns, bool) or not isinstance(turns, int) or not 1 <= turns <= MAX_TURNS:
        raise UserError(f"--turns {turns}: expected a whole number from 1 to {MAX_TURNS}")
    if mode not in MODES:
        raise UserError(f"--conversation-mode {mode}: expected one of {', '.join(MODES)}")
    if len(personas) != len(timelines):
        raise ValueError(f"{len(personas)} personas but {len(timelines)} timelines")
    for persona, timeline in zip(personas, timelines, strict=True):
        if persona_key(persona) != timeline.persona_id:
            raise ValueError(f"timeline of {timeline.persona_id} given for {persona_key(persona)}")
    stats = stats if stats is not None else ConverseStats()
    check_prompts(prompts)
    starts = list(start) if start is not None else [0] * len(personas)
    kept = list(earlier) if earlier is not None else [[] for _ in personas]
    if len(starts) != len(personas) or len(kept) != len(personas):
        raise ValueError(f"{len(personas)} personas but {len(starts)} starts, {len(kept)} earlier")

    def persona_flow(
        i: int,
    ) -> Generator[list[GenerationRequest], list[Completion], list[_Conversation]]:
        """Persona i's sessions, in order (each remembers the ones before it)."""
        persona, timeline = personas[i], timelines[i]
        memory = _recalled(timeline, starts[i], kept[i])
        done: list[_Conversation] = []
        for s in range(starts[i], len(timeline)):
            session = timeline.sessions[s]
            key = persona.get("index", timeline.persona_id)
            variables = _variables(persona, timeline, session, memory)
            c = _Conversation(key, timeline.persona_id, timeline, session, variables)
            if mode == "turns":
                for turn in range(turns):
                    for role in ("user", "assistant"):
                        if c.rejection is None:
                            yield from _turn_flow(
                                prompts, c, role, turn, turns, seed, max_tokens, stats
                            )
            else:
                yield from _one_call_flow(prompts, c, turns, seed, max_tokens, stats)
            memory.append(_memory_of(timeline, s, c.turns if c.rejection is None else None))
            done.append(c)
            if c.rejection is not None and stop_at_rejection:
                break
        return done

    # Every persona is a flow (`personaloom.engine.flows`): its next turn or session goes
    # to the engine as soon as its last is answered, so the queue holds every persona of
    # the batch whatever session it has reached. Records come out in (session, persona)
    # order, whatever order the engine answered in.
    calls: list[int] = []
    talked = run_flows(engine, [persona_flow(i) for i in range(len(personas))], calls)
    stats.engine_calls += len(calls)
    finished = sorted(
        ((c.session.index, i, c) for i, done in enumerate(talked) for c in done),
        key=lambda item: item[:2],
    )
    conversations: list[dict[str, Any]] = []
    rejections: list[dict[str, Any]] = []
    for _, _, c in finished:
        if c.rejection is not None:
            rejections.append(c.rejection)
            stats.rejected += 1
            reason = c.rejection["reason"].split(": ", 1)[-1].split(" (")[0]
            stats.rejected_by_reason[reason] = stats.rejected_by_reason.get(reason, 0) + 1
        else:
            record = c.record(engine.model_name)
            conversations.append(record)
            stats.conversations += 1
            mentioned, total = update_mentions([record])
            stats.updates += total
            stats.updates_mentioned += mentioned
    return conversations, rejections
