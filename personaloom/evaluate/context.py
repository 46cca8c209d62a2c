"""What the model sees for one probe: earlier sessions as chat history, then the question.

Context policies (`--context`):
- `full`: every session of the persona up to the probe's `after_session`, oldest first;
- `recent:N`: only the last N of them (sessions after_session-N+1 .. after_session);
- `none`: no history at all (the no-context baseline: what the question alone gives away).

Each session's turns go in as they were released, with `user` and `assistant` roles; the
first message of a session opens with `[Conversation on YYYY-MM-DD about TOPIC]`, since
probes name sessions by date and topic. Consecutive messages of one role are joined (some
chat templates refuse two user messages in a row). The question comes last, as a user
message with the choices lettered A, B, C...; the answer is constrained to
`{"answer": LETTER}` by a JSON schema.

When the history does not fit the token budget (the model's context length less the answer
and a margin), whole sessions are dropped from the oldest end until it fits: the probe is
still asked, and the row records how many sessions the model saw and how many were dropped.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from personaloom.errors import UserError

POLICIES = ("full", "recent:N", "none")
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
ANSWER_MAX_TOKENS = 16

SYSTEM_WITH_HISTORY = (
    "You are a helpful assistant with a memory of your earlier conversations with this user. "
    "They follow, oldest first; each opens with its date and topic. Answer the user's "
    "question about themselves from what they told you."
)
SYSTEM_WITHOUT_HISTORY = "You are a helpful assistant. Answer the user's question about themselves."

Messages = list[dict[str, str]]
TokenCounter = Callable[[Messages], int]


@dataclass(frozen=True)
class ContextPolicy:
    kind: str  # full | recent | none
    sessions: int | None = None  # N of recent:N

    @classmethod
    def parse(cls, text: str) -> ContextPolicy:
        value = (text or "").strip().lower()
        if value in ("full", "none"):
            return cls(value)
        match = re.fullmatch(r"recent:(\d+)", value)
        if match and int(match.group(1)) >= 1:
            return cls("recent", int(match.group(1)))
        raise UserError(
            f"--context {text}: unknown context policy; expected full, recent:N (N >= 1) or none"
        )

    def __str__(self) -> str:
        return f"recent:{self.sessions}" if self.kind == "recent" else self.kind

    def window(self, after_session: int) -> range:
        """Session indices the policy gives for a probe asked after `after_session`."""
        if self.kind == "none":
            return range(0)
        first = 0 if self.kind == "full" else max(0, after_session - (self.sessions or 1) + 1)
        return range(first, after_session + 1)


def letters(n: int) -> str:
    if not 1 <= n <= len(LETTERS):
        raise ValueError(f"{n} choices: expected 1 to {len(LETTERS)}")
    return LETTERS[:n]


def answer_schema(n: int) -> dict[str, Any]:
    """The structured-output schema: one of the first `n` letters."""
    return {
        "type": "object",
        "properties": {"answer": {"type": "string", "enum": list(letters(n))}},
        "required": ["answer"],
        "additionalProperties": False,
    }


def _day(value: Any) -> str:
    if hasattr(value, "strftime"):
        return value.strftime("%Y-%m-%d")
    return str(value)[:10]


def session_messages(session: Mapping[str, Any]) -> Messages:
    """One released session as chat messages, its first one opened by a date/topic header."""
    header = f"[Conversation on {_day(session.get('timestamp'))} about {session.get('topic')}]"
    messages: Messages = []
    for turn in session.get("turns") or ():
        role = "assistant" if turn.get("role") == "assistant" else "user"
        messages.append({"role": role, "content": str(turn.get("content") or "")})
    if messages and messages[0]["role"] == "user":
        messages[0] = {"role": "user", "content": f"{header}\n{messages[0]['content']}"}
    else:
        messages.insert(0, {"role": "user", "content": header})
    return messages


def question_message(probe: Mapping[str, Any]) -> dict[str, str]:
    choices = list(probe["choices"])
    keys = letters(len(choices))
    lines = [f"Question: {probe['question']}", ""]
    lines += [f"{key}. {choice}" for key, choice in zip(keys, choices, strict=True)]
    lines += [
        "",
        'Reply with JSON {"answer": LETTER}, where LETTER is one of '
        + ", ".join(keys)
        + ": the letter of the correct choice.",
    ]
    return {"role": "user", "content": "\n".join(lines)}


def _joined(messages: Messages) -> Messages:
    out: Messages = []
    for message in messages:
        if out and out[-1]["role"] == message["role"]:
            out[-1] = {
                "role": message["role"],
                "content": f"{out[-1]['content']}\n\n{message['content']}",
            }
        else:
            out.append(dict(message))
    return out


def build_messages(
    probe: Mapping[str, Any], sessions: list[Mapping[str, Any]], *, with_history: bool
) -> Messages:
    """System prompt, `sessions` (oldest first) as history, then the question."""
    system = SYSTEM_WITH_HISTORY if with_history else SYSTEM_WITHOUT_HISTORY
    history = [m for session in sessions for m in session_messages(session)]
    return [{"role": "system", "content": system}, *_joined([*history, question_message(probe)])]


@dataclass(frozen=True)
class Prompt:
    messages: Messages
    sessions: int  # sessions given as history
    dropped: int  # sessions of the window left out to fit the budget
    missing: int  # sessions of the window the corpus does not hold (rejected ones)
    tokens: int | None  # counted prompt tokens (None without a budget)


def fit_prompt(
    probe: Mapping[str, Any],
    persona_sessions: Mapping[int, Mapping[str, Any]],
    policy: ContextPolicy,
    *,
    budget: int | None = None,
    count: TokenCounter | None = None,
) -> Prompt:
    """The probe's messages under `policy`, oldest sessions dropped until within `budget`."""
    window = policy.window(int(probe["after_session"]))
    present = [persona_sessions[i] for i in window if i in persona_sessions]
    missing = len(window) - len(present)
    with_history = policy.kind != "none"
    dropped = 0
    while True:
        kept = present[dropped:]
        messages = build_messages(probe, kept, with_history=with_history)
        if budget is None or count is None:
            return Prompt(messages, len(kept), dropped, missing, None)
        tokens = count(messages)
        if tokens <= budget or not kept:
            return Prompt(messages, len(kept), dropped, missing, tokens)
        dropped += 1


def estimate_tokens(messages: Messages) -> int:
    """A conservative token count without a tokenizer: 1 per 3 characters + 8 per message."""
    return sum(len(m["content"]) // 3 + 8 for m in messages)
