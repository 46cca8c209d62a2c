"""Critic rounds: the best accepted records of round r become few-shot examples of round r+1.

`select_fewshot` picks high-scoring accepted records that differ from each other (not two
with the same occupation, or the same topic for conversations, while others are left);
`format_fewshot` renders them compactly for the generation prompts.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from personaloom.critic.decision import Decision
from personaloom.critic.rule_critics import attribute_values, record_id, sentences

DIVERSITY_LEAVES = ("occupation", "job", "job_title", "profession", "occupation_group")
SUMMARY_LEAVES = ("first_name", "name", "age", "gender", "occupation", "city", "country")


def diversity_key(record: dict[str, Any]) -> str | None:
    """What two examples should not share: a persona's occupation, a conversation's topic."""
    if "turns" in record:
        topic = record.get("topic")
        return str(topic).lower() if topic else None
    for leaf in DIVERSITY_LEAVES:
        found = attribute_values(record, leaf)
        if found:
            return found[0][1].strip().lower()
    return None


def select_fewshot(
    records: Sequence[dict[str, Any]],
    decisions: Sequence[Decision],
    k: int,
    *,
    key: Callable[[dict[str, Any]], str | None] = diversity_key,
) -> list[dict[str, Any]]:
    """Up to `k` accepted records, best score first, with distinct `key`s where possible.

    Ties break on the record id so the choice is deterministic. Records whose key repeats
    an already chosen one only fill the places left when no new key remains.
    """
    if len(records) != len(decisions):
        raise ValueError(f"{len(records)} records but {len(decisions)} decisions")
    if k <= 0:
        return []
    accepted = [(d.score, r) for r, d in zip(records, decisions, strict=True) if d.accepted]
    accepted.sort(key=lambda pair: (-pair[0], _id(pair[1])))
    chosen: list[dict[str, Any]] = []
    seen: set[str] = set()
    repeats: list[dict[str, Any]] = []
    for _, record in accepted:
        value = key(record)
        if value is not None and value in seen:
            repeats.append(record)
            continue
        if value is not None:
            seen.add(value)
        chosen.append(record)
        if len(chosen) == k:
            return chosen
    return chosen + repeats[: k - len(chosen)]


def format_fewshot(
    examples: Sequence[dict[str, Any]],
    kind: str,
    *,
    section: str | None = None,
    max_chars: int = 600,
    max_turns: int = 4,
) -> str:
    """Examples rendered for a prompt ("" when there are none).

    Personas: a one-line profile summary, then one section (`section`, or a different one
    per example so the examples show varied writing), cut at a sentence end within
    `max_chars`. Conversations: topic, then the first `max_turns` turns.
    """
    blocks = []
    for i, example in enumerate(examples, start=1):
        if kind == "persona":
            blocks.append(_persona_example(i, example, section, max_chars))
        elif kind == "conversation":
            blocks.append(_conversation_example(i, example, max_chars, max_turns))
        else:
            raise ValueError(f"unknown record kind {kind!r}")
    return "\n\n".join(b for b in blocks if b)


def _persona_example(i: int, persona: dict[str, Any], section: str | None, max_chars: int) -> str:
    summary = "; ".join(
        f"{leaf.replace('_', ' ')}: {found[0][1]}"
        for leaf in SUMMARY_LEAVES
        if (found := attribute_values(persona, leaf))
    )
    sections = dict(persona.get("sections") or {})
    if section is not None and sections.get(section):
        name, text = section, sections[section]
    elif sections:
        names = sorted(sections)
        name = names[(i - 1) % len(names)]
        text = sections[name]
    else:
        name, text = "narrative", persona.get("narrative") or ""
    head = f"Example {i}" + (f" ({summary})" if summary else "")
    return f"{head}, {name.replace('_', ' ')}:\n{_cut(text, max_chars)}"


def _conversation_example(
    i: int, conversation: dict[str, Any], max_chars: int, max_turns: int
) -> str:
    lines = [f"Example {i} (topic: {conversation.get('topic') or 'chat'}):"]
    budget = max_chars
    for turn in (conversation.get("turns") or [])[:max_turns]:
        content = _cut(" ".join(str(turn.get("content") or "").split()), max(80, budget // 2))
        lines.append(f"{turn.get('role')}: {content}")
        budget -= len(content)
        if budget <= 0:
            break
    return "\n".join(lines)


def _cut(text: str, max_chars: int) -> str:
    """`text` up to the last sentence end within `max_chars` (a word boundary otherwise)."""
    text = " ".join(text.split())
    if len(text) <= max_chars:
        return text
    kept = ""
    for sentence in sentences(text):
        candidate = f"{kept} {sentence}".strip()
        if len(candidate) > max_chars:
            break
        kept = candidate
    if kept:
        return kept
    cut = text[:max_chars]
    return re.sub(r"\s+\S*$", "", cut) + " ..."


def _id(record: dict[str, Any]) -> str:
    return record_id(record, "conversation" if "turns" in record else "persona")
