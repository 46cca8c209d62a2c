"""Symbolic, seeded timelines: when each session happens, what it is about, what changed.

A timeline is drawn from an RNG keyed on (run seed, persona id) only, so a persona gets the
same timeline whatever else is in its batch. Draws are sequential per session and nothing
depends on the total number of sessions: the first k sessions of a longer timeline are the
timeline of k sessions.

The profile state is a flat `{path: value}` dict: the persona's attributes plus a few
preferences from the built-in catalogue (`personaloom.topics.PREFERENCES`) that a user
states in conversation. Persona attributes that look like one of those preferences (by
leaf name, value or category) stand for it, so a persona sampled with
`lifestyle.diet = vegan` changes that attribute rather than growing a second diet.
Between sessions a preference may change (with the configured probability), recorded with
old value, new value and a reason; some changes undo an earlier one.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from personaloom.errors import UserError
from personaloom.schema import persona_id as make_persona_id
from personaloom.topics import PREFERENCES, PREFERENCES_BY_NAME, TOPICS, PreferenceKind, Topic

MAX_SESSIONS = 60
DEFAULT_START = datetime(2025, 1, 6, tzinfo=UTC)
PREFERENCES_PER_PERSONA = 8
REVERT_PROBABILITY = 0.3
TOPIC_FOLLOWS_UPDATE_PROBABILITY = 0.5
MAX_GAP_DAYS = 21
MAX_PREFERENCE_VALUE_WORDS = 5
# Leaf words that make an attribute a quantity, not a preference (exercise_frequency).
NOT_A_PREFERENCE = frozenset(
    {"frequency", "time", "hours", "minutes", "number", "count", "level", "years", "age", "amount"}
)


def derive_seed(*parts: object) -> int:
    """A 31-bit seed from any parts (stable across processes, unlike `hash`)."""
    blob = "\x1f".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.blake2b(blob, digest_size=8).digest(), "big") % (2**31 - 1)


def persona_key(persona: Mapping[str, Any]) -> str:
    """The persona's id (computed from seed and index when the record has none)."""
    pid = persona.get("persona_id")
    if pid:
        return str(pid)
    if "seed" in persona and "index" in persona:
        return make_persona_id(int(persona["seed"]), int(persona["index"]))
    raise UserError("persona: record has no persona_id (nor seed and index)")


@dataclass(frozen=True)
class ProfileUpdate:
    """A change to the profile applied just before session `session`."""

    session: int
    path: str
    old: str
    new: str
    reason: str
    kind: str  # PreferenceKind.name
    reverts: int | None = None  # position in `Timeline.updates` of the change this undoes

    def record(self) -> dict[str, str]:
        """The `profile_updates` item of the conversations config."""
        return {"path": self.path, "old": self.old, "new": self.new, "reason": self.reason}


@dataclass(frozen=True)
class Session:
    index: int  # 0-based
    timestamp: datetime  # timezone-aware UTC, whole seconds
    topic: str
    task: str  # the concrete request the user brings
    stated: tuple[str, ...]  # preference paths the user brings up in this session
    updates: tuple[ProfileUpdate, ...]  # applied just before this session


@dataclass(frozen=True)
class Timeline:
    persona_id: str
    seed: int
    initial: dict[str, str]
    preferences: dict[str, str]  # mutable path -> PreferenceKind.name
    sessions: tuple[Session, ...] = field(default=())

    def __len__(self) -> int:
        return len(self.sessions)

    @property
    def updates(self) -> tuple[ProfileUpdate, ...]:
        return tuple(u for s in self.sessions for u in s.updates)

    def _check(self, session: int) -> None:
        if not 0 <= session < len(self.sessions):
            raise IndexError(f"session {session} out of range 0..{len(self.sessions) - 1}")

    def updates_at(self, session: int) -> list[ProfileUpdate]:
        """Updates applied just before `session` (between session-1 and session)."""
        self._check(session)
        return list(self.sessions[session].updates)

    def updates_before(self, session: int) -> list[ProfileUpdate]:
        """Every update in force at `session` (applied before it starts), in order."""
        self._check(session)
        return [u for u in self.updates if u.session <= session]

    def state_at(self, session: int) -> dict[str, str]:
        """The profile state in force during `session`."""
        state = dict(self.initial)
        for update in self.updates_before(session):
            state[update.path] = update.new
        return state

    def history(self, path: str, session: int) -> list[str]:
        """Values `path` took up to `session`: the initial value, then each change."""
        values = [self.initial[path]]
        values += [u.new for u in self.updates_before(session) if u.path == path]
        return values

    def kind(self, path: str) -> PreferenceKind:
        return PREFERENCES_BY_NAME[self.preferences[path]]

    def label(self, path: str) -> str:
        if path in self.preferences:
            return self.kind(path).label
        return path.rsplit(".", 1)[-1].replace("_", " ")

    def truncated(self, sessions: int) -> Timeline:
        """The first `sessions` sessions: what is known at the end of session sessions-1."""
        return replace(self, sessions=self.sessions[:sessions])

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for session in data["sessions"]:
            session["timestamp"] = session["timestamp"].isoformat()
        return data


_WORD = re.compile(r"[a-z0-9]+")


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _contains_words(haystack: list[str], needle: str) -> bool:
    words = _words(needle)
    n = len(words)
    return any(haystack[i : i + n] == words for i in range(len(haystack) - n + 1))


def _usable_value(value: str) -> bool:
    words = _words(value)
    return 0 < len(words) <= MAX_PREFERENCE_VALUE_WORDS and not all(w.isdigit() for w in words)


def _kind_for(path: str, value: str) -> PreferenceKind | None:
    parts = path.lower().split(".")
    leaf, root = _words(parts[-1].replace("_", " ")), set(_words(parts[0].replace("_", " ")))
    if NOT_A_PREFERENCE & set(leaf):
        return None
    lowered = value.strip().lower()
    for kind in PREFERENCES:
        if any(_contains_words(leaf, alias.replace("_", " ")) for alias in kind.aliases):
            return kind
    for kind in PREFERENCES:
        if lowered in (v.lower() for v in kind.values) or root & set(kind.categories):
            return kind
    return None


def preference_paths(persona: Mapping[str, Any]) -> dict[str, PreferenceKind]:
    """Persona attributes that stand for a catalogue preference (one attribute per kind)."""
    found: dict[str, PreferenceKind] = {}
    taken: set[str] = set()
    for attribute in persona.get("attributes") or ():
        path, value = str(attribute["path"]), str(attribute["value"])
        if path in found or not _usable_value(value):
            continue
        kind = _kind_for(path, value)
        if kind is not None and kind.name not in taken:
            found[path] = kind
            taken.add(kind.name)
    return found


def _initial_state(
    persona: Mapping[str, Any], rng: random.Random
) -> tuple[dict[str, str], dict[str, str]]:
    state: dict[str, str] = {}
    for attribute in persona.get("attributes") or ():
        state.setdefault(str(attribute["path"]), str(attribute["value"]))
    preferences = {path: kind.name for path, kind in preference_paths(persona).items()}
    taken = set(preferences.values())
    extra = [k for k in PREFERENCES if k.name not in taken and k.path not in state]
    rng.shuffle(extra)
    for kind in extra[: max(0, PREFERENCES_PER_PERSONA - len(preferences))]:
        preferences[kind.path] = kind.name
        state[kind.path] = rng.choice(kind.values)
    return state, preferences


def _draw_update(
    rng: random.Random,
    session: int,
    state: dict[str, str],
    preferences: dict[str, str],
    done: list[ProfileUpdate],
) -> ProfileUpdate:
    last: dict[str, int] = {}
    for i, update in enumerate(done):
        last[update.path] = i
    revertible = [
        i
        for i in last.values()
        if done[i].reverts is None and state[done[i].path] == done[i].new != done[i].old
    ]
    if revertible and rng.random() < REVERT_PROBABILITY:
        position = rng.choice(revertible)
        target = done[position]
        kind = PREFERENCES_BY_NAME[target.kind]
        old, new = target.new, target.old
        reason = rng.choice(kind.revert_reasons).format(old=old, new=new)
        return ProfileUpdate(session, target.path, old, new, reason, kind.name, position)
    path = rng.choice(sorted(preferences))
    kind = PREFERENCES_BY_NAME[preferences[path]]
    old = state[path]
    new = rng.choice([v for v in kind.values if v.lower() != old.strip().lower()])
    reason = rng.choice(kind.reasons).format(old=old, new=new)
    return ProfileUpdate(session, path, old, new, reason, kind.name)


def _draw_topic(
    rng: random.Random, updates: list[ProfileUpdate], previous: str | None
) -> tuple[Topic, str]:
    candidates = [t for t in TOPICS if t.name != previous]
    if updates and rng.random() < TOPIC_FOLLOWS_UPDATE_PROBABILITY:
        related = set(PREFERENCES_BY_NAME[updates[-1].kind].topics)
        candidates = [t for t in candidates if t.name in related] or candidates
    topic = rng.choice(candidates)
    return topic, rng.choice(topic.tasks)


def _draw_stated(
    rng: random.Random, topic: Topic, updates: list[ProfileUpdate], preferences: dict[str, str]
) -> tuple[str, ...]:
    stated = [u.path for u in updates]
    related = sorted(
        p for p, k in preferences.items() if topic.name in PREFERENCES_BY_NAME[k].topics
    )
    pool = [p for p in (related or sorted(preferences)) if p not in stated]
    if pool:
        stated.append(rng.choice(pool))
    return tuple(dict.fromkeys(stated))


def build_timeline(
    persona: Mapping[str, Any],
    *,
    sessions: int,
    seed: int,
    update_probability: float = 0.5,
    start: datetime | None = None,
) -> Timeline:
    """Draw the persona's sessions: dates, topics, and profile updates between sessions."""
    if (
        isinstance(sessions, bool)
        or not isinstance(sessions, int)
        or not 1 <= sessions <= MAX_SESSIONS
    ):
        raise UserError(f"--sessions {sessions}: expected a whole number from 1 to {MAX_SESSIONS}")
    if isinstance(update_probability, bool) or not (
        isinstance(update_probability, int | float) and 0.0 <= update_probability <= 1.0
    ):
        raise UserError(f"--update-probability {update_probability}: expected a number from 0 to 1")
    start = DEFAULT_START if start is None else start
    if start.tzinfo is None:
        start = start.replace(tzinfo=UTC)
    start = start.astimezone(UTC).replace(microsecond=0)

    pid = persona_key(persona)
    rng = random.Random(derive_seed(seed, "timeline", pid))
    initial, preferences = _initial_state(persona, rng)
    state = dict(initial)
    done: list[ProfileUpdate] = []
    drawn: list[Session] = []
    day = start.replace(hour=0, minute=0, second=0) + timedelta(days=rng.randint(0, 30))
    previous_topic: str | None = None
    for index in range(sessions):
        if index:
            day += timedelta(days=rng.randint(1, MAX_GAP_DAYS))
        when = day + timedelta(seconds=rng.randint(7 * 3600, 23 * 3600 - 1))
        updates: list[ProfileUpdate] = []
        if index and rng.random() < update_probability:
            update = _draw_update(rng, index, state, preferences, done)
            updates.append(update)
            done.append(update)
            state[update.path] = update.new
        topic, task = _draw_topic(rng, updates, previous_topic)
        stated = _draw_stated(rng, topic, updates, preferences)
        drawn.append(Session(index, max(when, start), topic.name, task, stated, tuple(updates)))
        previous_topic = topic.name
    return Timeline(pid, seed, initial, preferences, tuple(drawn))
