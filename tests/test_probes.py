from __future__ import annotations

from collections import Counter

import pyarrow as pa
import pytest

from personaloom.probes import PROBE_TYPES, make_probes, probe_sessions
from personaloom.schema import PROBES
from personaloom.timeline import build_timeline
from personaloom.topics import PREFERENCES_BY_NAME


def persona(index: int) -> dict:
    return {
        "persona_id": f"p7-{index:08d}",
        "seed": 7,
        "index": index,
        "attributes": [
            {"path": "demographics.age", "value": "41", "source": "sampled"},
            {"path": "lifestyle_and_routine.diet", "value": "omnivore", "source": "sampled"},
            {
                "path": "hobbies_and_interests.main_hobby",
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


def expected_answer(probe: dict, timeline) -> set[str]:
    """What the timeline up to `after_session` says the answer is (an independent derivation)."""
    j = probe["after_session"]
    updates = timeline.updates_before(j)
    state = timeline.state_at(j)
    kind = probe["type"]
    if kind == "recall_fact":
        return {
            timeline.state_at(s.index)[path]
            for s in timeline.sessions[: j + 1]
            if s.timestamp.strftime("%Y-%m-%d") in probe["question"]
            and s.topic in probe["question"]
            for path in s.stated
        }
    latest = updates[-1]
    if kind == "current_preference":
        return {state[latest.path]}
    if kind == "previous_preference":
        return {latest.old}
    if kind == "change_reason":
        return {latest.reason}
    if kind == "preference_evolution":
        values = [timeline.initial[latest.path]] + [u.new for u in updates if u.path == latest.path]
        return {", then ".join(values)}
    if kind == "aligned_recommendation":
        template = PREFERENCES_BY_NAME[timeline.preferences[latest.path]].suggestion
        return {template.format(value=state[latest.path])}
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
            latest = timeline.updates_before(probe["after_session"])[-1]
            distractors = [c for i, c in enumerate(probe["choices"]) if i != probe["answer"]]
            if probe["type"] == "current_preference":
                assert latest.old in distractors
            else:
                kind = PREFERENCES_BY_NAME[latest.kind]
                assert kind.suggestion.format(value=latest.old) in distractors


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
    assert types == {"recall_fact", "aligned_recommendation"}


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
