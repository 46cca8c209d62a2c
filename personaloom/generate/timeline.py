"""Symbolic, seeded timelines: when each session happens, what it is about, what changed.

A timeline is drawn from an RNG keyed on (run seed, persona id) only, so a persona gets the
same timeline whatever else is in its batch. Draws are sequential per session and nothing
depends on the total number of sessions: the first k sessions of a longer timeline are the
timeline of k sessions.

The profile state is a flat `{path: value}` dict: the persona's attributes plus the
changing preferences of the run's catalogue (`personaloom.generate.topics.Catalogue`, the
taxonomy's `NAME.topics.yaml`) that apply to the persona, up to
`PREFERENCES_PER_PERSONA`. Each preference names its path explicitly: a persona sampled
with that taxonomy leaf starts from its own value (so `lifestyle_and_routine.food.diet =
vegan` changes that attribute rather than growing a second diet); the others are drawn at
random among those whose `when:` (and the taxonomy's conditions on the leaf) hold, with a
random initial value. Sessions draw topics and tasks whose `when:` holds for the persona.
Between sessions a preference may change (with the configured probability) along its
values or transitions, recorded with old value, new value and a reason; some changes undo
an earlier one.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from personaloom.errors import UserError
from personaloom.generate.topics import Catalogue, PreferenceKind, Topic, holds
from personaloom.schema import persona_id as make_persona_id
from personaloom.seeds import derive_seed

MAX_SESSIONS = 60
DEFAULT_START = datetime(2025, 1, 6, tzinfo=UTC)
PREFERENCES_PER_PERSONA = 8
REVERT_PROBABILITY = 0.3
TOPIC_FOLLOWS_UPDATE_PROBABILITY = 0.5
MAX_GAP_DAYS = 21


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
    catalogue: Catalogue = field(repr=False)  # where the preference kinds come from
    sessions: tuple[Session, ...] = field(default=())

    def __len__(self) -> int:
        return len(self.sessions)

    @property
    def updates(self) -> tuple[ProfileUpdate, ...]:
        return tuple(u for s in self.sessions for u in s.updates)

    def _check(self, session: int) -> None:
        if not 0 <= session < len(self.sessions):
            raise IndexError(f"session {session} out of range 0..{len(self.sessions) - 1}")

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
        return self.catalogue.by_name[self.preferences[path]]

    def label(self, path: str) -> str:
        if path in self.preferences:
            return self.kind(path).label
        return path.rsplit(".", 1)[-1].replace("_", " ")

    def truncated(self, sessions: int) -> Timeline:
        """The first `sessions` sessions: what is known at the end of session sessions-1."""
        return replace(self, sessions=self.sessions[:sessions])

    def to_dict(self) -> dict[str, Any]:
        """The drawn timeline as plain data (the catalogue it was drawn from left out)."""
        data = {
            "persona_id": self.persona_id,
            "seed": self.seed,
            "initial": dict(self.initial),
            "preferences": dict(self.preferences),
            "sessions": [asdict(s) for s in self.sessions],
        }
        for session in data["sessions"]:
            session["timestamp"] = session["timestamp"].isoformat()
        return data


def applicable_preferences(
    persona: Mapping[str, Any], catalogue: Catalogue
) -> tuple[list[PreferenceKind], list[PreferenceKind]]:
    """(held, possible): the catalogue's preferences whose path the persona has among its
    attributes, and those it could take up (their `when:` and, for a taxonomy leaf, the
    taxonomy's conditions on that leaf definitely hold), each in file order. A preference
    whose own `when:` does not hold is in neither."""
    values = catalogue.persona_values(persona)
    paths = {str(a["path"]) for a in persona.get("attributes") or ()}
    held: list[PreferenceKind] = []
    possible: list[PreferenceKind] = []
    for kind in catalogue.preferences:
        if not holds(kind.when, values):
            continue
        if kind.path in paths:
            held.append(kind)
        elif all(holds(condition, values) for condition in kind.leaf_when):
            possible.append(kind)
    return held, possible


def _initial_state(
    persona: Mapping[str, Any], rng: random.Random, catalogue: Catalogue
) -> tuple[dict[str, str], dict[str, str]]:
    state: dict[str, str] = {}
    for attribute in persona.get("attributes") or ():
        state.setdefault(str(attribute["path"]), str(attribute["value"]))
    for kind in catalogue.preferences:
        if len(kind.values) < 2:
            raise ValueError(
                f"{catalogue.source}: preference {kind.name} has no values: check the "
                "catalogue against the taxonomy first (load_catalogue(path, taxonomy))"
            )
    held, possible = applicable_preferences(persona, catalogue)
    preferences = {k.path: k.name for k in held[:PREFERENCES_PER_PERSONA]}
    extra = list(possible)
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
    kinds: Mapping[str, PreferenceKind],
) -> ProfileUpdate | None:
    """A change before `session`: an undo of an earlier change (where the preference's
    transitions allow going back) or a change of a preference along its transitions; None
    when no preference of the persona can change from its current value."""
    last: dict[str, int] = {}
    for i, update in enumerate(done):
        last[update.path] = i
    revertible = [
        i
        for i in last.values()
        if done[i].reverts is None
        and state[done[i].path] == done[i].new != done[i].old
        and kinds[done[i].kind].may_change(done[i].new, done[i].old)
    ]
    if revertible and rng.random() < REVERT_PROBABILITY:
        position = rng.choice(revertible)
        target = done[position]
        kind = kinds[target.kind]
        old, new = target.new, target.old
        reason = rng.choice(kind.revert_reasons).format(old=old, new=new)
        return ProfileUpdate(session, target.path, old, new, reason, kind.name, position)
    changeable = [p for p in sorted(preferences) if kinds[preferences[p]].targets(state[p])]
    if not changeable:
        return None
    path = rng.choice(changeable)
    kind = kinds[preferences[path]]
    old = state[path]
    new = rng.choice(kind.targets(old))
    reason = rng.choice(kind.reasons).format(old=old, new=new)
    return ProfileUpdate(session, path, old, new, reason, kind.name)


def _draw_topic(
    rng: random.Random,
    updates: list[ProfileUpdate],
    previous: str | None,
    catalogue: Catalogue,
    tasks: Mapping[str, tuple[str, ...]],
) -> tuple[Topic, str]:
    """A topic that applies to the persona (`tasks`: its tasks per applicable topic), not
    the previous session's when another one applies, and one of its tasks."""
    usable = [t for t in catalogue.topics if tasks.get(t.name)]
    candidates = [t for t in usable if t.name != previous] or usable
    if updates and rng.random() < TOPIC_FOLLOWS_UPDATE_PROBABILITY:
        related = set(catalogue.by_name[updates[-1].kind].topics)
        candidates = [t for t in candidates if t.name in related] or candidates
    topic = rng.choice(candidates)
    return topic, rng.choice(tasks[topic.name])


def _draw_stated(
    rng: random.Random,
    topic: Topic,
    updates: list[ProfileUpdate],
    preferences: dict[str, str],
    kinds: Mapping[str, PreferenceKind],
) -> tuple[str, ...]:
    stated = [u.path for u in updates]
    related = sorted(p for p, k in preferences.items() if topic.name in kinds[k].topics)
    pool = [p for p in (related or sorted(preferences)) if p not in stated]
    if pool:
        stated.append(rng.choice(pool))
    return tuple(dict.fromkeys(stated))


def build_timeline(
    persona: Mapping[str, Any],
    *,
    catalogue: Catalogue,
    sessions: int,
    seed: int,
    update_probability: float = 0.5,
    start: datetime | None = None,
) -> Timeline:
    """Draw the persona's sessions: dates, topics, and profile updates between sessions.

    `catalogue` holds the topics and preference kinds to draw from (`load_catalogue` of
    the taxonomy's topics file, see `personaloom.generate.topics.catalogue_path`)."""
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
    rng = random.Random(derive_seed(seed, pid, "timeline"))
    kinds = catalogue.by_name
    initial, preferences = _initial_state(persona, rng, catalogue)
    values = catalogue.persona_values(persona)
    tasks = {t.name: t.tasks_for(values) for t in catalogue.topics}
    if not any(tasks.values()):
        raise ValueError(f"{catalogue.source}: no topic applies to persona {pid}")
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
            update = _draw_update(rng, index, state, preferences, done, kinds)
            if update is not None:
                updates.append(update)
                done.append(update)
                state[update.path] = update.new
        topic, task = _draw_topic(rng, updates, previous_topic, catalogue, tasks)
        stated = _draw_stated(rng, topic, updates, preferences, kinds)
        drawn.append(Session(index, max(when, start), topic.name, task, stated, tuple(updates)))
        previous_topic = topic.name
    return Timeline(pid, seed, initial, preferences, catalogue, tuple(drawn))
