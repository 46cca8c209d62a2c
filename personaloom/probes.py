"""Multiple-choice probes on a user's state, derived symbolically from the timeline.

A probe asked after session j uses only what the timeline knows at the end of session j
(`timeline.truncated(j + 1)`): the state in force, the updates so far and the preferences
stated so far. Later sessions never change it, so a probe's answer follows from sessions
0..j and an update after j makes it no longer the right answer for the later state.

Probes are asked after every session that follows a profile update and after the last
session. Types (after PersonaMem):
- recall_fact: what the user said about a preference in an earlier session;
- current_preference: a preference's value now, after it changed (the outdated value is a
  distractor);
- previous_preference: what a changed preference was before its latest change;
- preference_evolution: the sequence of values a preference went through;
- change_reason: why the latest change happened;
- aligned_recommendation: the suggestion that fits the current state (suggestions for
  outdated values are distractors).
Every probe has 4 choices; the answer position is shuffled by an RNG keyed on (seed,
persona, session, type).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from personaloom.timeline import ProfileUpdate, Timeline, derive_seed

CHOICES = 4
Made = tuple[str, tuple[list[str], int] | None] | None
PROBE_TYPES: tuple[str, ...] = (
    "recall_fact",
    "current_preference",
    "previous_preference",
    "preference_evolution",
    "change_reason",
    "aligned_recommendation",
)


def _unique(values: list[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for value in values:
        key = value.strip().lower()
        if key and key not in seen:
            seen.add(key)
            out.append(value)
    return out


def _choices(
    rng: random.Random, answer: str, required: list[str], pool: list[str]
) -> tuple[list[str], int] | None:
    """Answer + required distractors (e.g. the outdated value) + random ones, shuffled."""
    required = [v for v in _unique(required) if v.strip().lower() != answer.strip().lower()]
    taken = {answer.strip().lower(), *(v.strip().lower() for v in required)}
    rest = [v for v in _unique(pool) if v.strip().lower() not in taken]
    rng.shuffle(rest)
    options = [answer, *required[: CHOICES - 1]]
    options += rest[: CHOICES - len(options)]
    if len(options) < CHOICES:
        return None
    order = list(range(CHOICES))
    rng.shuffle(order)
    return [options[i] for i in order], order.index(0)


def _date(timeline: Timeline, session: int) -> str:
    return timeline.sessions[session].timestamp.strftime("%Y-%m-%d")


def _latest_update(known: Timeline, j: int) -> ProfileUpdate | None:
    updates = known.updates_before(j)
    return updates[-1] if updates else None


def _recall_fact(known: Timeline, j: int, rng: random.Random) -> Made:
    stated = [(s.index, p) for s in known.sessions[: j + 1] for p in s.stated]
    if not stated:
        return None
    session, path = rng.choice(stated)
    answer = known.state_at(session)[path]
    current = known.state_at(j)[path]
    question = (
        f"In the conversation on {_date(known, session)} about {known.sessions[session].topic}, "
        f"what did the user say their {known.label(path)} was?"
    )
    return question, _choices(rng, answer, [current], list(known.kind(path).values))


def _current_preference(known: Timeline, j: int, rng: random.Random) -> Made:
    update = _latest_update(known, j)
    if update is None:
        return None
    path = update.path
    history = known.history(path, j)
    answer = known.state_at(j)[path]
    outdated = [v for v in reversed(history) if v.lower() != answer.lower()]
    question = f"As of {_date(known, j)}, what is the user's {known.label(path)}?"
    return question, _choices(rng, answer, outdated, list(known.kind(path).values))


def _previous_preference(known: Timeline, j: int, rng: random.Random) -> Made:
    update = _latest_update(known, j)
    if update is None:
        return None
    question = (
        f"As of {_date(known, j)}, what was the user's {known.label(update.path)} "
        "before its most recent change?"
    )
    return question, _choices(rng, update.old, [update.new], list(known.kind(update.path).values))


def _sequence(values: list[str]) -> str:
    return ", then ".join(values)


def _preference_evolution(known: Timeline, j: int, rng: random.Random) -> Made:
    update = _latest_update(known, j)
    if update is None:
        return None
    path = update.path
    history = known.history(path, j)
    others = [v for v in known.kind(path).values if v.lower() not in {h.lower() for h in history}]
    rng.shuffle(others)
    distractors = [_sequence(list(reversed(history))), _sequence(history[:-1])]
    if others:
        distractors.append(_sequence([*history[:-1], others[0]]))
        distractors.append(_sequence([*history, others[-1]]))
        distractors.append(_sequence([others[0], *history[1:]]))
    question = f"As of {_date(known, j)}, how has the user's {known.label(path)} changed over time?"
    return question, _choices(rng, _sequence(history), distractors[:2], distractors[2:])


def _change_reason(known: Timeline, j: int, rng: random.Random) -> Made:
    update = _latest_update(known, j)
    if update is None:
        return None
    kind = known.kind(update.path)
    # A revert's distractors include forward reasons; a forward change's never say "went back".
    reasons = (*kind.revert_reasons, *kind.reasons) if update.reverts is not None else kind.reasons
    pool = [r.format(old=update.old, new=update.new) for r in reasons]
    question = (
        f"Why did the user's {kind.label} change from {update.old} to {update.new} "
        f"(before the conversation on {_date(known, update.session)})?"
    )
    return question, _choices(rng, update.reason, [], pool)


def _aligned_recommendation(known: Timeline, j: int, rng: random.Random) -> Made:
    update = _latest_update(known, j)
    if update is not None:
        path = update.path
    else:
        stated = sorted({p for s in known.sessions[: j + 1] for p in s.stated})
        if not stated:
            return None
        path = rng.choice(stated)
    kind = known.kind(path)
    answer = known.state_at(j)[path]
    outdated = [v for v in reversed(known.history(path, j)) if v.lower() != answer.lower()]
    suggest = kind.suggestion.format
    question = (
        f"As of {_date(known, j)}, the user asks the assistant for a suggestion. "
        "Which one fits them best?"
    )
    return question, _choices(
        rng,
        suggest(value=answer),
        [suggest(value=v) for v in outdated],
        [suggest(value=v) for v in kind.values],
    )


_MAKERS: dict[str, Callable[[Timeline, int, random.Random], Made]] = {
    "recall_fact": _recall_fact,
    "current_preference": _current_preference,
    "previous_preference": _previous_preference,
    "preference_evolution": _preference_evolution,
    "change_reason": _change_reason,
    "aligned_recommendation": _aligned_recommendation,
}


def probe_sessions(timeline: Timeline) -> list[int]:
    """Sessions after which probes are asked: each one that follows an update, and the last."""
    points = [s.index for s in timeline.sessions if s.updates]
    if timeline.sessions:
        points.append(len(timeline.sessions) - 1)
    return sorted(set(points))


def make_probes(persona: dict[str, Any], timeline: Timeline, *, seed: int) -> list[dict[str, Any]]:
    """Probe records (PROBES schema) for one persona, in (after_session, type) order."""
    pid = timeline.persona_id
    if persona.get("persona_id") not in (None, pid):
        raise ValueError(f"timeline of {pid} given for persona {persona.get('persona_id')}")
    probes: list[dict[str, Any]] = []
    for j in probe_sessions(timeline):
        known = timeline.truncated(j + 1)
        for kind in PROBE_TYPES:
            rng = random.Random(derive_seed(seed, "probe", pid, j, kind))
            made = _MAKERS[kind](known, j, rng)
            if made is None or made[1] is None:
                continue
            question, (choices, answer) = made
            probes.append(
                {
                    "probe_id": f"{pid}-a{j:02d}-{kind}",
                    "persona_id": pid,
                    "after_session": j,
                    "type": kind,
                    "question": question,
                    "choices": choices,
                    "answer": answer,
                }
            )
    return probes
