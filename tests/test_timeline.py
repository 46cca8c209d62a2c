from __future__ import annotations

import itertools
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

from personaloom.errors import UserError
from personaloom.generate import timeline as timeline_module
from personaloom.generate.timeline import applicable_preferences
from personaloom.generate.topics import load_catalogue, parse_catalogue
from personaloom.taxonomy.loader import load_taxonomy
from tests.support.timelines import CATALOGUE, build_timeline

DATA = Path(__file__).resolve().parent / "data" / "taxonomies"
CLINIC = load_taxonomy(DATA / "clinic.yaml")
CLINIC_TOPICS = load_catalogue(DATA / "clinic.topics.yaml", CLINIC)


def persona(index: int, seed: int = 7) -> dict:
    """A kept persona shaped like the pipeline's (attribute paths as in taxonomies/human.yaml)."""
    return {
        "persona_id": f"p{seed:x}-{index:08d}",
        "seed": seed,
        "index": index,
        "taxonomy": "human@1",
        "attributes": [
            {"path": "demographics.age", "value": f"{20 + index % 50} years", "source": "sampled"},
            {"path": "demographics.location.country", "value": "Kenya", "source": "sampled"},
            {
                "path": "career.status.employment_status",
                "value": "employed full-time",
                "source": "sampled",
            },
            {"path": "career.current_job.remote_work", "value": "hybrid", "source": "sampled"},
            {
                "path": "health_and_body.habits.exercise_frequency",
                "value": "weekly",
                "source": "sampled",
            },
            {"path": "lifestyle_and_routine.food.diet", "value": "vegetarian", "source": "sampled"},
            {
                "path": "hobbies_and_interests.pastimes.main_hobby",
                "value": "knitting",
                "source": "sampled",
            },
            {
                "path": "finances.money_worry",
                "value": "Whether the pension will be enough once the mortgage ends.",
                "source": "generated",
            },
        ],
        "narrative": "A teacher from Nairobi.",
        "sections": {},
    }


def updates_of(timeline) -> list:
    return list(timeline.updates)


def test_same_seed_gives_the_same_timeline():
    assert build_timeline(persona(3), sessions=12, seed=1) == build_timeline(
        persona(3), sessions=12, seed=1
    )


def test_different_seed_gives_a_different_timeline():
    a = build_timeline(persona(3), sessions=12, seed=1)
    b = build_timeline(persona(3), sessions=12, seed=2)
    assert a.sessions != b.sessions


def test_different_personas_get_different_timelines():
    a = build_timeline(persona(3), sessions=12, seed=1)
    b = build_timeline(persona(4), sessions=12, seed=1)
    assert a.sessions != b.sessions


def test_timeline_does_not_depend_on_the_rest_of_the_batch():
    batch_a = [persona(i) for i in range(0, 10)]
    batch_b = [persona(i) for i in (5, 99, 42)]
    a = {p["persona_id"]: build_timeline(p, sessions=8, seed=4) for p in batch_a}
    b = {p["persona_id"]: build_timeline(p, sessions=8, seed=4) for p in batch_b}
    assert a[persona(5)["persona_id"]] == b[persona(5)["persona_id"]]


def test_a_shorter_timeline_is_a_prefix_of_a_longer_one():
    long = build_timeline(persona(1), sessions=30, seed=9)
    short = build_timeline(persona(1), sessions=7, seed=9)
    assert short.sessions == long.sessions[:7]
    assert short.initial == long.initial


def test_dates_strictly_increase_and_are_utc():
    for i in range(40):
        timeline = build_timeline(persona(i), sessions=60, seed=3)
        stamps = [s.timestamp for s in timeline.sessions]
        assert all(t.tzinfo is not None and t.utcoffset().total_seconds() == 0 for t in stamps)
        assert all(t.microsecond == 0 for t in stamps)
        assert all(a < b for a, b in itertools.pairwise(stamps))


def test_first_session_is_not_before_start_and_naive_start_means_utc():
    start = datetime(2030, 5, 1, 12, 0)
    timeline = build_timeline(persona(2), sessions=3, seed=1, start=start)
    assert timeline.sessions[0].timestamp >= start.replace(tzinfo=UTC)


def test_session_indices_are_zero_based_and_complete():
    timeline = build_timeline(persona(2), sessions=5, seed=1)
    assert [s.index for s in timeline.sessions] == [0, 1, 2, 3, 4]
    assert len(timeline) == 5


def test_state_at_is_the_initial_state_with_earlier_updates_applied():
    for i in range(30):
        timeline = build_timeline(persona(i), sessions=15, seed=5, update_probability=0.7)
        for j in range(len(timeline)):
            expected = dict(timeline.initial)
            for session in timeline.sessions[: j + 1]:
                for update in session.updates:
                    expected[update.path] = update.new
            assert timeline.state_at(j) == expected
            assert timeline.updates_before(j) == [
                u for s in timeline.sessions[: j + 1] for u in s.updates
            ]


def test_each_update_records_the_value_it_replaces_and_a_reason():
    for i in range(30):
        timeline = build_timeline(persona(i), sessions=20, seed=5, update_probability=0.8)
        for update in timeline.updates:
            assert update.session >= 1, "nothing changes before the first session"
            assert update.old == timeline.state_at(update.session - 1)[update.path]
            assert update.new != update.old
            assert update.path in timeline.preferences
            assert update.reason and "{" not in update.reason


def test_reverts_restore_the_value_before_the_change_they_undo():
    reverts = 0
    for i in range(60):
        timeline = build_timeline(persona(i), sessions=25, seed=8, update_probability=0.8)
        updates = updates_of(timeline)
        for update in updates:
            if update.reverts is None:
                continue
            reverts += 1
            undone = updates[update.reverts]
            assert undone.session < update.session
            assert undone.reverts is None
            assert (update.path, update.old, update.new) == (undone.path, undone.new, undone.old)
    assert reverts >= 10


def test_probability_zero_means_no_updates_and_one_means_one_per_gap():
    never = build_timeline(persona(1), sessions=20, seed=1, update_probability=0.0)
    always = build_timeline(persona(1), sessions=20, seed=1, update_probability=1.0)
    assert never.updates == ()
    assert [len(s.updates) for s in always.sessions] == [0] + [1] * 19


def test_update_rate_follows_the_probability():
    gaps = changes = 0
    for i in range(200):
        timeline = build_timeline(persona(i), sessions=11, seed=2, update_probability=0.3)
        gaps += 10
        changes += len(timeline.updates)
    assert 0.25 < changes / gaps < 0.35


def test_topics_cover_at_least_twelve_kinds():
    seen = Counter(
        s.topic for i in range(50) for s in build_timeline(persona(i), sessions=10, seed=1).sessions
    )
    assert len(seen) >= 12
    assert set(seen) <= {t.name for t in CATALOGUE.topics}


def test_consecutive_sessions_have_different_topics():
    timeline = build_timeline(persona(1), sessions=60, seed=1)
    topics = [s.topic for s in timeline.sessions]
    assert all(a != b for a, b in itertools.pairwise(topics))


def test_a_changed_preference_is_stated_in_the_session_after_the_change():
    timeline = build_timeline(persona(1), sessions=30, seed=1, update_probability=0.6)
    for session in timeline.sessions:
        assert {u.path for u in session.updates} <= set(session.stated)
        assert set(session.stated) <= set(timeline.preferences)


def test_persona_attributes_that_are_catalogue_paths_keep_their_values():
    held, _ = applicable_preferences(persona(1), CATALOGUE)
    assert [k.name for k in held] == ["diet", "hobby", "remote_work"]
    assert {k.path for k in held} <= {a["path"] for a in persona(1)["attributes"]}
    timeline = build_timeline(persona(1), sessions=2, seed=1)
    assert timeline.preferences["lifestyle_and_routine.food.diet"] == "diet"
    assert timeline.initial["lifestyle_and_routine.food.diet"] == "vegetarian"
    assert timeline.initial["career.current_job.remote_work"] == "hybrid"


def test_quantities_and_free_text_are_not_preferences():
    timeline = build_timeline(persona(1), sessions=2, seed=1)
    assert "health_and_body.habits.exercise_frequency" not in timeline.preferences
    assert "finances.money_worry" not in timeline.preferences


def test_every_preference_is_a_taxonomy_leaf_of_the_catalogue():
    from tests.support.timelines import HUMAN

    for i in range(40):
        timeline = build_timeline(persona(i), sessions=8, seed=3, update_probability=0.8)
        assert 1 <= len(timeline.preferences) <= timeline_module.PREFERENCES_PER_PERSONA
        for path, name in timeline.preferences.items():
            kind = CATALOGUE.preference(name)
            assert kind.path == path and path in HUMAN
            assert HUMAN.leaf(path).kind == "categorical"
        for update in timeline.updates:
            assert update.new in HUMAN.leaf(update.path).values


def test_a_persona_without_attributes_gets_preferences_that_apply_to_everyone():
    timeline = build_timeline({"persona_id": "bare"}, sessions=10, seed=1, update_probability=1.0)
    assert len(timeline.preferences) == 8
    kinds = {k.name: k for k in CATALOGUE.preferences}
    for path, kind in timeline.preferences.items():
        assert kinds[kind].always, path  # remote_work and commute need an employed persona
        assert timeline.initial[path] in kinds[kind].values
    assert set(timeline.initial) == set(timeline.preferences)


def test_a_leaf_whose_taxonomy_condition_fails_is_not_drawn():
    retired = {
        "persona_id": "r",
        "attributes": [
            {"path": "career.status.employment_status", "value": "retired", "source": "sampled"}
        ],
    }
    _, possible = applicable_preferences(retired, CATALOGUE)
    assert "remote_work" not in {k.name for k in possible}
    employed = {
        "persona_id": "e",
        "attributes": [
            {"path": "career.status.employment_status", "value": "self-employed", "source": "s"}
        ],
    }
    _, possible = applicable_preferences(employed, CATALOGUE)
    assert {"remote_work", "commute"} <= {k.name for k in possible}


def test_topics_and_tasks_come_up_only_when_their_condition_holds():
    def patient(i: int, age: int, condition: str) -> dict:
        return {
            "persona_id": f"c{i}",
            "attributes": [
                {"path": "patient.age", "value": f"{age} years", "source": "sampled"},
                {"path": "patient.condition", "value": condition, "source": "sampled"},
            ],
        }

    young = [build_clinic(patient(i, 30, "none"), sessions=30) for i in range(10)]
    old = [build_clinic(patient(i, 80, "type 2 diabetes"), sessions=30) for i in range(10)]
    young_topics = {s.topic for t in young for s in t.sessions}
    old_topics = {s.topic for t in old for s in t.sessions}
    assert not {"healthy ageing", "managing a condition"} & young_topics
    assert {"healthy ageing", "managing a condition"} <= old_topics
    tasks = {s.task for t in old for s in t.sessions}
    assert "check blood sugar readings before a review" in tasks
    asthma = build_clinic(patient(0, 40, "asthma"), sessions=40)
    assert "check blood sugar readings before a review" not in {s.task for s in asthma.sessions}
    assert "managing a condition" in {s.topic for s in asthma.sessions}


def build_clinic(persona: dict, sessions: int = 20, probability: float = 0.8):
    return timeline_module.build_timeline(
        persona,
        catalogue=CLINIC_TOPICS,
        sessions=sessions,
        seed=4,
        update_probability=probability,
    )


def test_changes_follow_declared_transitions():
    seen = Counter()
    adult = [{"path": "patient.age", "value": "50 years", "source": "sampled"}]
    for i in range(80):
        timeline = build_clinic({"persona_id": f"s{i}", "attributes": adult}, sessions=20)
        kind = CLINIC_TOPICS.preference("smoking")
        for update in timeline.updates:
            if update.kind != "smoking":
                continue
            assert kind.may_change(update.old, update.new), update
            seen[(update.old, update.new)] += 1
            assert update.old != "never smoked"  # no transition leaves it
    assert seen[("smokes daily", "trying to quit")] and seen[("trying to quit", "quit")]
    assert ("quit", "trying to quit") not in seen


def test_a_preference_whose_when_fails_is_left_out():
    minor = {
        "persona_id": "m",
        "attributes": [{"path": "patient.age", "value": "16 years", "source": "sampled"}],
    }
    held, possible = applicable_preferences(minor, CLINIC_TOPICS)
    assert "smoking" not in {k.name for k in held + possible}
    adult = {"persona_id": "a", "attributes": [{"path": "patient.age", "value": "45 years"}]}
    held, possible = applicable_preferences(adult, CLINIC_TOPICS)
    assert "smoking" in {k.name for k in held + possible}


def test_a_catalogue_not_checked_against_its_taxonomy_is_refused():
    unbound = load_catalogue(DATA / "clinic.topics.yaml")
    with pytest.raises(ValueError, match="against the taxonomy"):
        timeline_module.build_timeline({"persona_id": "x"}, catalogue=unbound, sessions=2, seed=1)
    assert parse_catalogue((DATA / "clinic.topics.yaml").read_text(), taxonomy=CLINIC)


def test_persona_id_falls_back_to_seed_and_index():
    timeline = build_timeline({"seed": 7, "index": 3}, sessions=1, seed=1)
    assert timeline.persona_id == persona(3)["persona_id"]


@pytest.mark.parametrize("sessions", [0, 61, -1, 2.5, "3", True])
def test_bad_session_count_names_the_option(sessions):
    with pytest.raises(UserError, match="--sessions"):
        build_timeline(persona(1), sessions=sessions, seed=1)


@pytest.mark.parametrize("probability", [-0.1, 1.5, "0.5", float("nan")])
def test_bad_update_probability_names_the_option(probability):
    with pytest.raises(UserError, match="--update-probability"):
        build_timeline(persona(1), sessions=3, seed=1, update_probability=probability)


def test_one_and_sixty_sessions_are_allowed():
    assert len(build_timeline(persona(1), sessions=1, seed=1)) == 1
    assert len(build_timeline(persona(1), sessions=60, seed=1)) == 60


def test_state_at_rejects_a_session_outside_the_timeline():
    timeline = build_timeline(persona(1), sessions=3, seed=1)
    with pytest.raises(IndexError):
        timeline.state_at(3)


def test_to_dict_is_json_serialisable():
    import json

    data = build_timeline(persona(1), sessions=4, seed=1, update_probability=1.0).to_dict()
    assert json.loads(json.dumps(data))["sessions"][1]["updates"][0]["session"] == 1
