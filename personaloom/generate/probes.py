"""Multiple-choice probes on a user's state, derived symbolically from the timeline.

A probe asked after session j uses only what the timeline knows at the end of session j
(`timeline.truncated(j + 1)`): the state in force, the updates so far and the preferences
stated so far. Later sessions never change it, so a probe's answer follows from sessions
0..j and an update after j makes it no longer the right answer for the later state. The
caller passes the timeline of the kept sessions only (`timeline.truncated(k)` when a
persona keeps sessions 0..k-1), so no probe refers to a session that is not released.

Probes are asked after every session that follows a profile update and after the last
session. Every probe is about one of the timeline's changing preferences (the catalogue's,
each a taxonomy leaf or a declared extra path), and its choices are values, reasons or
suggestions of that preference. Types (after PersonaMem):
- recall_fact: what the user said about a preference in an earlier session;
- aligned_recommendation: the suggestion that fits the current state (suggestions for
  outdated values are distractors);
- current_preference: a preference's value now, after it changed (the outdated value is a
  distractor);
- previous_preference: what a changed preference was before its latest change;
- preference_evolution: the sequence of values a preference went through;
- change_reason: why the latest change happened.
The first two are made after every probed session of every timeline with a preference (the
catalogue guarantees one, with at least 4 values and 4 reasons). The last four
(`CHANGE_TYPES`) need a change of preference at or before the probed session, so they are
absent from a timeline without one (e.g. with --update-probability 0).
Every probe has 4 choices, shuffled by an RNG keyed on (seed, persona, session, type).
The answer's position is balanced by construction: each block of 4 consecutive probes of
a persona puts it once at every position, in an order drawn per block (the choices are
rotated, which keeps the distractors' shuffled order), so a persona's positions differ by
at most one and a corpus's are uniform (tests/test_eval.py checks 10k probes within 5%).

`evidence_session` is the session where the deciding fact was stated (distance =
after_session - evidence_session): for recall_fact the conversation the question names;
for current_preference and aligned_recommendation the latest session up to j in which the
user brought up the preference with the value in force (at the earliest, the session of
its latest change); for previous_preference and change_reason the session of the latest
change; for preference_evolution the session of the preference's first change (the oldest
fact the sequence needs).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from personaloom.generate.timeline import ProfileUpdate, Timeline
from personaloom.seeds import derive_seed

CHOICES = 4
# (question, (choices, answer index) or None, evidence session) or None
Made = tuple[str, tuple[list[str], int] | None, int] | None
PROBE_TYPES: tuple[str, ...] = (
    "recall_fact",
    "current_preference",
    "previous_preference",
    "preference_evolution",
    "change_reason",
    "aligned_recommendation",
)
# Types that need a change of preference at or before the probed session (may be absent).
CHANGE_TYPES: frozenset[str] = frozenset(
    {"current_preference", "previous_preference", "preference_evolution", "change_reason"}
)


def supported_types(timeline: Timeline) -> set[str]:
    """The probe types a timeline supports: all of them once a preference changed, the
    two that need no change otherwise (none without a stated preference)."""
    if not any(s.stated for s in timeline.sessions):
        return set()
    if timeline.updates:
        return set(PROBE_TYPES)
    return set(PROBE_TYPES) - CHANGE_TYPES


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


def _last_stated(known: Timeline, path: str, j: int) -> int:
    """The latest session up to j that brought up `path` with the value in force at j (an
    update's session always states its path); the latest change's session if none did."""
    changed = max((u.session for u in known.updates_before(j) if u.path == path), default=0)
    stated = [s.index for s in known.sessions[changed : j + 1] if path in s.stated]
    return stated[-1] if stated else changed


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
    return question, _choices(rng, answer, [current], list(known.kind(path).values)), session


def _current_preference(known: Timeline, j: int, rng: random.Random) -> Made:
    update = _latest_update(known, j)
    if update is None:
        return None
    path = update.path
    history = known.history(path, j)
    answer = known.state_at(j)[path]
    outdated = [v for v in reversed(history) if v.lower() != answer.lower()]
    question = f"As of {_date(known, j)}, what is the user's {known.label(path)}?"
    choices = _choices(rng, answer, outdated, list(known.kind(path).values))
    return question, choices, _last_stated(known, path, j)


def _previous_preference(known: Timeline, j: int, rng: random.Random) -> Made:
    update = _latest_update(known, j)
    if update is None:
        return None
    question = (
        f"As of {_date(known, j)}, what was the user's {known.label(update.path)} "
        "before its most recent change?"
    )
    choices = _choices(rng, update.old, [update.new], list(known.kind(update.path).values))
    return question, choices, update.session


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
    # sequences that drop a value: three distractors even when few values are left unused
    distractors += [_sequence(history[1:]), _sequence(history[-1:])]
    question = f"As of {_date(known, j)}, how has the user's {known.label(path)} changed over time?"
    first = min(u.session for u in known.updates_before(j) if u.path == path)
    return question, _choices(rng, _sequence(history), distractors[:2], distractors[2:]), first


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
    return question, _choices(rng, update.reason, [], pool), update.session


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
    choices = _choices(
        rng,
        suggest(value=answer),
        [suggest(value=v) for v in outdated],
        [suggest(value=v) for v in kind.values],
    )
    return question, choices, _last_stated(known, path, j)


_MAKERS: dict[str, Callable[[Timeline, int, random.Random], Made]] = {
    "recall_fact": _recall_fact,
    "current_preference": _current_preference,
    "previous_preference": _previous_preference,
    "preference_evolution": _preference_evolution,
    "change_reason": _change_reason,
    "aligned_recommendation": _aligned_recommendation,
}


def answer_position(seed: int, pid: str, k: int) -> int:
    """Where the answer goes in the persona's k-th probe (0-based): every block of CHOICES
    consecutive probes takes each position once, in an order drawn per block."""
    block = list(range(CHOICES))
    random.Random(derive_seed(seed, pid, "probe-position", k // CHOICES)).shuffle(block)
    return block[k % CHOICES]


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
            rng = random.Random(derive_seed(seed, pid, "probe", j, kind))
            made = _MAKERS[kind](known, j, rng)
            if made is None or made[1] is None:
                continue
            question, (choices, answer), evidence = made
            shift = (answer_position(seed, pid, len(probes)) - answer) % CHOICES
            choices, answer = choices[-shift:] + choices[:-shift], (answer + shift) % CHOICES
            probes.append(
                {
                    "probe_id": f"{pid}-a{j:02d}-{kind}",
                    "persona_id": pid,
                    "after_session": j,
                    "type": kind,
                    "question": question,
                    "choices": choices,
                    "answer": answer,
                    "evidence_session": evidence,
                }
            )
    return probes
