from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pytest

from personaloom.generate import timeline as timeline_module
from personaloom.generate.probes import (
    CHANGE_TYPES,
    PROBE_TYPES,
    make_probes,
    probe_sessions,
    supported_types,
)
from personaloom.generate.topics import load_catalogue
from personaloom.schema import PROBES
from personaloom.taxonomy.loader import load_taxonomy
from tests.support.timelines import build_timeline

DATA = Path(__file__).resolve().parent / "data" / "taxonomies"


def persona(index: int) -> dict:
    return {
        "persona_id": f"p7-{index:08d}",
        "seed": 7,
        "index": index,
        "attributes": [
            {"path": "demographics.age", "value": "41 years", "source": "sampled"},
            {"path": "lifestyle_and_routine.food.diet", "value": "omnivore", "source": "sampled"},
            {
                "path": "hobbies_and_interests.pastimes.main_hobby",
                "value": "photography",
                "source": "sampled",
            },
        ],
    }


def corpus(n: int = 40, sessions: int = 12, probability: float = 0.6):
    for i in range(n):
        p = persona(i)
        timeline = build_timeline(p, sessions=sessions, seed=11, update_probability=probability)
        yield p, timeline, make_probes(p, timeline, seed=11)


def walk(timeline, j: int) -> tuple[dict[str, str], list[tuple[str, str, str, str]]]:
    """The profile in force during session j and every change up to it, found by hand.

    Starts from the persona's initial values and applies, session by session (0..j), the
    updates each session records, noting each change as (path, value before, value after,
    reason) with the value before read from the walked state, not from the update. It uses
    none of the timeline's own helpers (`updates_before`, `state_at`, `history`), so a bug
    in them shows up as a wrong probe answer.
    """
    state = dict(timeline.initial)
    changes = []
    for session in timeline.sessions[: j + 1]:
        for update in session.updates:
            changes.append((update.path, state[update.path], update.new, update.reason))
            state[update.path] = update.new
    return state, changes


def expected_answer(probe: dict, timeline) -> set[str]:
    """What the timeline up to `after_session` says the answer is (an independent derivation)."""
    j = probe["after_session"]
    state, changes = walk(timeline, j)
    kind = probe["type"]
    if kind == "recall_fact":
        return {
            walk(timeline, s.index)[0][path]
            for s in timeline.sessions[: j + 1]
            if s.timestamp.strftime("%Y-%m-%d") in probe["question"]
            and s.topic in probe["question"]
            for path in s.stated
        }
    if not changes:  # nothing changed yet: only a suggestion for a stated preference
        assert kind == "aligned_recommendation", probe
        stated = {path for s in timeline.sessions[: j + 1] for path in s.stated}
        return {timeline.kind(path).suggestion.format(value=state[path]) for path in stated}
    path, before, _, reason = changes[-1]
    if kind == "current_preference":
        return {state[path]}
    if kind == "previous_preference":
        return {before}
    if kind == "change_reason":
        return {reason}
    if kind == "preference_evolution":
        values = [timeline.initial[path]] + [new for p, _, new, _ in changes if p == path]
        return {", then ".join(values)}
    if kind == "aligned_recommendation":
        template = timeline.kind(path).suggestion
        return {template.format(value=state[path])}
    raise AssertionError(kind)


def test_probes_cover_at_least_five_types():
    types = Counter(p["type"] for _, _, probes in corpus() for p in probes)
    assert len(types) >= 5
    assert set(types) == set(PROBE_TYPES)


def test_every_probe_has_four_distinct_choices_and_a_valid_answer():
    for _, _, probes in corpus():
        for probe in probes:
            assert len(probe["choices"]) == 4
            assert len({c.lower() for c in probe["choices"]}) == 4
            assert 0 <= probe["answer"] < 4


def test_answers_follow_from_the_timeline_up_to_the_probe_session():
    checked = 0
    for _, timeline, probes in corpus():
        for probe in probes:
            assert probe["choices"][probe["answer"]] in expected_answer(probe, timeline), probe
            checked += 1
    assert checked > 500


def test_later_sessions_do_not_change_a_probe():
    for p, timeline, probes in corpus(n=20):
        for probe in probes:
            j = probe["after_session"]
            known = make_probes(p, timeline.truncated(j + 1), seed=11)
            assert probe in known


def test_the_state_after_later_sessions_gives_a_different_answer_for_many_probes():
    """Probes are time-sensitive: answering from the final state would often be wrong."""
    outdated = 0
    for _, timeline, probes in corpus():
        last = len(timeline) - 1
        for probe in probes:
            if probe["type"] == "recall_fact" or probe["after_session"] == last:
                continue
            later = expected_answer(dict(probe, after_session=last), timeline)
            if probe["choices"][probe["answer"]] not in later:
                outdated += 1
    assert outdated > 50


def test_the_outdated_value_is_a_distractor():
    for _, timeline, probes in corpus():
        for probe in probes:
            if probe["type"] not in ("current_preference", "aligned_recommendation"):
                continue
            path, before, _, _ = walk(timeline, probe["after_session"])[1][-1]
            distractors = [c for i, c in enumerate(probe["choices"]) if i != probe["answer"]]
            if probe["type"] == "current_preference":
                assert before in distractors
            else:
                kind = timeline.kind(path)
                assert kind.suggestion.format(value=before) in distractors


def test_answer_positions_are_spread_over_all_choices():
    positions = Counter(p["answer"] for _, _, probes in corpus() for p in probes)
    total = sum(positions.values())
    assert set(positions) == {0, 1, 2, 3}
    assert all(0.15 < n / total < 0.35 for n in positions.values())


def test_probes_are_deterministic_per_seed():
    p = persona(3)
    timeline = build_timeline(p, sessions=10, seed=11, update_probability=0.6)
    assert make_probes(p, timeline, seed=11) == make_probes(p, timeline, seed=11)
    shuffled = [x["answer"] for x in make_probes(p, timeline, seed=12)]
    assert shuffled != [x["answer"] for x in make_probes(p, timeline, seed=11)]


def test_probes_are_asked_after_each_update_and_after_the_last_session():
    for _, timeline, probes in corpus(n=10):
        points = probe_sessions(timeline)
        assert points[-1] == len(timeline) - 1
        assert {s.index for s in timeline.sessions if s.updates} <= set(points)
        assert {p["after_session"] for p in probes} <= set(points)


def test_without_updates_only_state_probes_are_made():
    p = persona(1)
    timeline = build_timeline(p, sessions=4, seed=11, update_probability=0.0)
    types = {x["type"] for x in make_probes(p, timeline, seed=11)}
    assert types == {"recall_fact", "aligned_recommendation"} == supported_types(timeline)
    assert not types & CHANGE_TYPES


def test_every_history_of_two_sessions_gets_every_type_it_supports():
    for i in range(60):
        p = persona(i)
        for sessions in (2, 3, 5):
            timeline = build_timeline(p, sessions=sessions, seed=i, update_probability=0.5)
            types = {x["type"] for x in make_probes(p, timeline, seed=i)}
            assert types == supported_types(timeline), (i, sessions)
            assert {"recall_fact", "aligned_recommendation"} <= types
            assert (types >= CHANGE_TYPES) == bool(timeline.updates)


# -- another domain: probes stay inside the kept sessions and the taxonomy -------------------
def clinic_patient(i: int) -> dict:
    return {
        "persona_id": f"p3-{i:08d}",
        "attributes": [
            {"path": "patient.age", "value": f"{30 + i % 60} years", "source": "sampled"},
            {"path": "patient.condition", "value": "asthma", "source": "sampled"},
            {"path": "care.pharmacy", "value": "online pharmacy", "source": "sampled"},
        ],
    }


def allowed_values(kind, taxonomy) -> set[str]:
    """What a preference can hold: its declared values, and for a leaf the leaf's."""
    return set(kind.values) | (set(taxonomy.leaf(kind.path).values) if kind.leaf else set())


def probed_kind(probe: dict, timeline, taxonomy):
    """The timeline preference a probe is about: the one its question names by its label,
    or (suggestions) the one whose suggestion template produced every choice."""
    kinds = [timeline.kind(path) for path in timeline.preferences]
    if probe["type"] != "aligned_recommendation":
        named = [
            k
            for k in kinds
            if re.search(rf"(their|user's) {re.escape(k.label)}\b", probe["question"])
        ]
        assert len(named) == 1, probe
        return named[0]
    fits = [
        k
        for k in kinds
        if set(probe["choices"])
        <= {k.suggestion.format(value=v) for v in allowed_values(k, taxonomy)}
    ]
    assert fits, probe
    return fits[0]


def test_no_probe_refers_to_anything_outside_the_kept_sessions_and_taxonomy():
    taxonomy = load_taxonomy(DATA / "clinic.yaml")
    catalogue = load_catalogue(DATA / "clinic.topics.yaml", taxonomy)
    checked = 0
    for i in range(40):
        p = clinic_patient(i)
        full = timeline_module.build_timeline(
            p, catalogue=catalogue, sessions=6, seed=i, update_probability=0.7
        )
        kept = 2 + i % 4  # a persona keeping sessions 0..kept-1
        timeline = full.truncated(kept)
        dates = {s.timestamp.strftime("%Y-%m-%d") for s in timeline.sessions}
        later = {s.timestamp.strftime("%Y-%m-%d") for s in full.sessions[kept:]}
        for probe in make_probes(p, timeline, seed=i):
            checked += 1
            assert probe["after_session"] < kept
            mentioned = set(re.findall(r"\d{4}-\d{2}-\d{2}", probe["question"]))
            assert mentioned <= dates and not mentioned & later, probe
            kind = probed_kind(probe, timeline, taxonomy)
            assert kind.extra or taxonomy.leaf(kind.path).kind == "categorical"
            allowed = allowed_values(kind, taxonomy)
            choices = probe["choices"]
            if probe["type"] in ("recall_fact", "current_preference", "previous_preference"):
                assert set(choices) <= allowed, probe
            elif probe["type"] == "preference_evolution":
                assert {v for c in choices for v in c.split(", then ")} <= allowed, probe
            elif probe["type"] == "aligned_recommendation":
                assert set(choices) <= {kind.suggestion.format(value=v) for v in allowed}
            else:
                assert probe["type"] == "change_reason"
                pairs = [
                    (o, n)
                    for o in allowed
                    for n in allowed
                    if f"change from {o} to {n} (before" in probe["question"]
                ]
                assert len(pairs) == 1, probe
                old, new = pairs[0]
                reasons = (*kind.reasons, *kind.revert_reasons)
                assert set(choices) <= {r.format(old=old, new=new) for r in reasons}, probe
    assert checked > 200


def test_probe_ids_are_unique():
    ids = [x["probe_id"] for _, _, probes in corpus() for x in probes]
    assert len(ids) == len(set(ids))


def test_probe_records_match_the_probes_schema():
    records = [x for _, _, probes in corpus(n=5) for x in probes]
    table = pa.Table.from_pylist(records, schema=PROBES)
    assert table.num_rows == len(records)


def test_a_timeline_of_another_persona_is_refused():
    timeline = build_timeline(persona(1), sessions=3, seed=1)
    with pytest.raises(ValueError, match="timeline of"):
        make_probes(persona(2), timeline, seed=1)
