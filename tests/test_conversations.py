from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pytest

from personaloom.engine.base import Completion, EngineStats, GenerationRequest
from personaloom.errors import UserError
from personaloom.generate.conversations import (
    ONE_CALL_RETRIES,
    ConverseStats,
    clean_turn,
    degenerate_reason,
    generate_sessions,
    mentions_value,
    parse_session,
    update_mentions,
)
from personaloom.generate.prompts import PromptLibrary
from personaloom.schema import CONVERSATIONS
from tests.support.timelines import build_timeline

REPO = Path(__file__).resolve().parent.parent


class RecordingEngine:
    """A deterministic stand-in that records what it is asked (batch sizes, requests).

    It tests batching and bookkeeping only, not generation: its replies are canned text
    derived from the request id (or from `reply`), never a model's output.
    """

    model_name = "recording-engine"

    def __init__(self, reply: Callable[[GenerationRequest], str] | None = None) -> None:
        self.stats = EngineStats()
        self.batches: list[list[GenerationRequest]] = []
        self.reply = reply or canned

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Completion]:
        self.batches.append(list(requests))
        completions = [Completion(r.request_id, self.reply(r), output_tokens=5) for r in requests]
        self.stats.add(completions, 0.0)
        return completions

    @property
    def batch_sizes(self) -> list[int]:
        return [len(b) for b in self.batches]

    def requests(self) -> list[GenerationRequest]:
        return [r for b in self.batches for r in b]


def canned(request: GenerationRequest) -> str:
    if request.json_schema is not None:
        n = request.json_schema["properties"]["turns"]["maxItems"]
        roles = ["user", "assistant"] * (n // 2)
        return json.dumps(
            {
                "turns": [
                    {"role": r, "content": f"{r} line {i} of {request.request_id}"}
                    for i, r in enumerate(roles)
                ]
            }
        )
    side = "user" if "-user-" in request.request_id else "assistant"
    text = f"{side.title()}: canned words for {request.request_id}"
    # A user turn does what it is told about profile updates, so bookkeeping tests see no retries.
    told = re.search(r"is now (.+?) \(it used to be", request.messages[-1]["content"])
    return f"{text}, now {told.group(1)}" if side == "user" and told else text


def persona(index: int) -> dict:
    return {
        "persona_id": f"p5-{index:08d}",
        "seed": 5,
        "index": index,
        "taxonomy": "human@1",
        "attributes": [
            {"path": "demographics.age", "value": str(25 + index), "source": "sampled"},
            {"path": "career.occupation_group", "value": "professionals", "source": "sampled"},
            {"path": "lifestyle_and_routine.diet", "value": "vegan", "source": "sampled"},
        ],
        "narrative": f"Persona {index} lives in Lisbon.",
        "sections": {},
    }


@pytest.fixture(scope="module")
def prompts() -> PromptLibrary:
    return PromptLibrary(REPO / "prompts")


def batch(n: int, sessions: int, probability: float = 0.5, seed: int = 3):
    personas = [persona(i) for i in range(n)]
    timelines = [
        build_timeline(p, sessions=sessions, seed=seed, update_probability=probability)
        for p in personas
    ]
    return personas, timelines


def test_turn_k_of_every_conversation_is_one_engine_call(prompts):
    personas, timelines = batch(8, sessions=2)
    engine = RecordingEngine()
    conversations, rejections = generate_sessions(
        engine, prompts, personas, timelines, turns=3, seed=1
    )
    assert engine.batch_sizes == [8] * (2 * 3 * 2)
    assert len(conversations) == 16 and rejections == []
    sides = ["user" if "-user-" in b[0].request_id else "assistant" for b in engine.batches]
    assert sides == ["user", "assistant"] * 6


def test_each_call_holds_one_turn_of_one_session(prompts):
    personas, timelines = batch(4, sessions=2)
    engine = RecordingEngine()
    generate_sessions(engine, prompts, personas, timelines, turns=2, seed=1)
    for requests in engine.batches:
        parts = {r.request_id.split("-", 2)[2].rsplit("-a", 1)[0] for r in requests}
        assert len(parts) == 1, parts  # e.g. "s01-t1-user"


def test_shorter_timelines_leave_the_batch_after_their_last_session(prompts):
    personas = [persona(i) for i in range(3)]
    timelines = [
        build_timeline(p, sessions=n, seed=1) for p, n in zip(personas, (1, 2, 3), strict=True)
    ]
    engine = RecordingEngine()
    conversations, _ = generate_sessions(engine, prompts, personas, timelines, turns=1, seed=1)
    assert engine.batch_sizes == [3, 3, 2, 2, 1, 1]
    assert [(c["persona_id"][-1], c["session"]) for c in conversations] == [
        ("0", 0),
        ("1", 0),
        ("2", 0),
        ("1", 1),
        ("2", 1),
        ("2", 2),
    ]


def test_records_match_the_conversations_schema(prompts):
    personas, timelines = batch(3, sessions=3, probability=1.0)
    conversations, _ = generate_sessions(
        RecordingEngine(), prompts, personas, timelines, turns=2, seed=1
    )
    table = pa.Table.from_pylist(conversations, schema=CONVERSATIONS)
    assert table.num_rows == 9
    assert table.schema.equals(CONVERSATIONS)


def test_records_carry_the_timeline(prompts):
    personas, timelines = batch(2, sessions=3, probability=1.0)
    conversations, _ = generate_sessions(
        RecordingEngine(), prompts, personas, timelines, turns=2, seed=1
    )
    by_id = {c["conversation_id"]: c for c in conversations}
    for timeline in timelines:
        for session in timeline.sessions:
            record = by_id[f"{timeline.persona_id}-s{session.index:02d}"]
            assert record["persona_id"] == timeline.persona_id
            assert record["session"] == session.index
            assert record["timestamp"] == session.timestamp
            assert isinstance(record["timestamp"], datetime) and record["timestamp"].tzinfo
            assert record["topic"] == session.topic
            assert record["profile_updates"] == [u.record() for u in session.updates]
            assert record["model"] == "recording-engine"
            assert record["scores"] == {}
            assert [t["role"] for t in record["turns"]] == ["user", "assistant"] * 2


def test_role_prefixes_are_stripped_from_the_turns(prompts):
    personas, timelines = batch(1, sessions=1)
    conversations, _ = generate_sessions(
        RecordingEngine(), prompts, personas, timelines, turns=1, seed=1
    )
    turns = conversations[0]["turns"]
    assert turns[0]["content"].startswith("canned words for")
    assert turns[1]["content"].startswith("canned words for")


def test_request_seeds_do_not_depend_on_the_rest_of_the_batch(prompts):
    personas, timelines = batch(6, sessions=2)
    alone, together = RecordingEngine(), RecordingEngine()
    generate_sessions(alone, prompts, personas[2:3], timelines[2:3], turns=2, seed=9)
    generate_sessions(together, prompts, personas, timelines, turns=2, seed=9)
    mine = [r for r in together.requests() if r.request_id.startswith(personas[2]["persona_id"])]
    assert [(r.request_id, r.seed, r.messages) for r in alone.requests()] == [
        (r.request_id, r.seed, r.messages) for r in mine
    ]
    seeds = [r.seed for r in together.requests()]
    assert len(set(seeds)) == len(seeds)


def test_the_run_seed_changes_the_request_seeds(prompts):
    personas, timelines = batch(2, sessions=1)
    a, b = RecordingEngine(), RecordingEngine()
    generate_sessions(a, prompts, personas, timelines, turns=1, seed=1)
    generate_sessions(b, prompts, personas, timelines, turns=1, seed=2)
    assert [r.seed for r in a.requests()] != [r.seed for r in b.requests()]


def test_an_empty_output_is_retried_once_with_a_new_seed(prompts):
    personas, timelines = batch(4, sessions=1)
    target = f"{personas[1]['persona_id']}-s00-t0-user-a0"
    engine = RecordingEngine(lambda r: "  User:  " if r.request_id == target else canned(r))
    conversations, rejections = generate_sessions(
        engine, prompts, personas, timelines, turns=1, seed=1
    )
    # Stages flow: the retry joins the other personas' next step (their assistant turns),
    # and persona 1's assistant turn follows alone.
    assert engine.batch_sizes == [4, 4, 1]
    first = engine.batches[0][1]
    (retry,) = [r for r in engine.batches[1] if r.request_id.startswith(target[:-3])]
    assert retry.request_id.endswith("-a1") and retry.seed != first.seed
    assert rejections == [] and len(conversations) == 4


def test_a_persistently_degenerate_output_becomes_a_rejection(prompts):
    personas, timelines = batch(3, sessions=2)
    doomed = f"{personas[0]['persona_id']}-s00-t1-assistant"
    engine = RecordingEngine(
        lambda r: "ok ok ok " * 10 if r.request_id.startswith(doomed) else canned(r)
    )
    stats = ConverseStats()
    conversations, rejections = generate_sessions(
        engine, prompts, personas, timelines, turns=2, seed=1, stats=stats
    )
    assert rejections == [
        {
            "record_id": f"{personas[0]['persona_id']}-s00",
            "kind": "conversation",
            "stage": "converse",
            "critic": "generation",
            "reason": "assistant turn 1: repetitive output (after one retry)",
            "score": None,
            "raw": "ok ok ok " * 10,
        }
    ]
    ids = {c["conversation_id"] for c in conversations}
    assert f"{personas[0]['persona_id']}-s00" not in ids
    assert f"{personas[0]['persona_id']}-s01" in ids, "later sessions of that persona still run"
    assert len(conversations) + len(rejections) == 6
    assert stats.rejected == 1 and stats.retried == 1 and stats.conversations == 5
    assert stats.rejected_by_reason == {"repetitive output": 1}


def test_engine_errors_are_retried_then_rejected(prompts):
    class Failing(RecordingEngine):
        def generate(self, requests):
            out = super().generate(requests)
            for c in out:
                c.error = "boom"
            return out

    personas, timelines = batch(2, sessions=1)
    engine = Failing()
    conversations, rejections = generate_sessions(
        engine, prompts, personas, timelines, turns=2, seed=1
    )
    assert conversations == [] and len(rejections) == 2
    assert engine.batch_sizes == [2, 2], "a conversation that failed takes no further turns"
    assert rejections[0]["reason"] == "user turn 0: engine error: boom (after one retry)"


def test_the_first_session_after_an_update_tells_the_user_simulator(prompts):
    personas, timelines = batch(6, sessions=4, probability=0.6)
    engine = RecordingEngine()
    generate_sessions(engine, prompts, personas, timelines, turns=2, seed=1)
    checked = 0
    for timeline in timelines:
        for session in timeline.sessions:
            prefix = f"{timeline.persona_id}-s{session.index:02d}-t0-user"
            request = next(r for r in engine.requests() if r.request_id.startswith(prefix))
            system, instruction = request.messages[0]["content"], request.messages[1]["content"]
            for update in session.updates:
                checked += 1
                assert (
                    f"changed from {update.old} to {update.new}, because {update.reason}" in system
                )
                assert f"is now {update.new} (it used to be {update.old})" in instruction
            if not session.updates:
                assert "Changes since" not in system and "is now" not in instruction
    assert checked >= 3


def test_the_user_simulator_sees_the_state_in_force(prompts):
    personas, timelines = batch(4, sessions=4, probability=1.0)
    engine = RecordingEngine()
    generate_sessions(engine, prompts, personas, timelines, turns=1, seed=1)
    for timeline in timelines:
        for session in timeline.sessions:
            prefix = f"{timeline.persona_id}-s{session.index:02d}-t0-user"
            system = next(r for r in engine.requests() if r.request_id.startswith(prefix)).messages[
                0
            ]["content"]
            for path, value in timeline.state_at(session.index).items():
                if path in timeline.preferences:
                    assert f"- {timeline.label(path)}: {value}\n" in system + "\n"


def test_an_opening_that_skips_the_update_is_retried_once_and_kept(prompts):
    personas, timelines = batch(4, sessions=2, probability=1.0)
    engine = RecordingEngine(lambda r: f"I need some help with this ({r.request_id}).")
    stats = ConverseStats()
    conversations, rejections = generate_sessions(
        engine, prompts, personas, timelines, turns=1, seed=1, stats=stats
    )
    assert engine.batch_sizes == [4, 4, 4, 4, 4]  # session 1's openings retried as one call
    assert engine.batches[3][0].request_id.endswith("-s01-t0-user-a1")
    assert rejections == [] and len(conversations) == 8
    assert stats.mention_retries == 4 and (stats.updates_mentioned, stats.updates) == (0, 4)
    assert conversations[4]["turns"][0]["content"].endswith("-s01-t0-user-a1).")


def test_an_opening_that_names_the_update_is_kept_without_retry(prompts):
    personas, timelines = batch(4, sessions=2, probability=1.0)
    engine = RecordingEngine()
    stats = ConverseStats()
    conversations, _ = generate_sessions(
        engine, prompts, personas, timelines, turns=1, seed=1, stats=stats
    )
    assert engine.batch_sizes == [4] * 4
    assert stats.mention_retries == 0 and (stats.updates_mentioned, stats.updates) == (4, 4)
    assert update_mentions(conversations) == (4, 4)


def test_memory_recalls_earlier_sessions(prompts):
    personas, timelines = batch(1, sessions=3)
    engine = RecordingEngine()
    generate_sessions(engine, prompts, personas, timelines, turns=1, seed=1)
    pid = personas[0]["persona_id"]
    first = next(r for r in engine.requests() if r.request_id == f"{pid}-s00-t0-user-a0")
    third = next(r for r in engine.requests() if r.request_id == f"{pid}-s02-t0-user-a0")
    assert "Earlier conversations" not in first.messages[0]["content"]
    memory = third.messages[0]["content"]
    for session in timelines[0].sessions[:2]:
        assert f"{session.timestamp:%Y-%m-%d}: {session.topic} ({session.task})" in memory
    assert f"canned words for {pid}-s01-t0-assistant-a0" in memory


def test_the_assistant_sees_the_dialogue_so_far(prompts):
    personas, timelines = batch(1, sessions=1)
    engine = RecordingEngine()
    conversations, _ = generate_sessions(engine, prompts, personas, timelines, turns=2, seed=1)
    last = engine.batches[-1][0]
    assert [m["role"] for m in last.messages] == ["system", "user", "assistant", "user"]
    assert [m["content"] for m in last.messages[1:]] == [
        t["content"] for t in conversations[0]["turns"][:3]
    ]


def test_one_call_mode_makes_one_call_per_session_with_a_bounded_schema(prompts):
    personas, timelines = batch(5, sessions=2)
    engine = RecordingEngine()
    conversations, rejections = generate_sessions(
        engine, prompts, personas, timelines, turns=3, seed=1, mode="one_call", max_tokens=100
    )
    assert engine.batch_sizes == [5, 5] and rejections == []
    schema = engine.batches[0][0].json_schema
    assert schema["properties"]["turns"]["maxItems"] == 6
    assert schema["properties"]["turns"]["items"]["properties"]["content"]["maxLength"] == 400
    assert all(len(c["turns"]) == 6 for c in conversations)
    pa.Table.from_pylist(conversations, schema=CONVERSATIONS)


def test_one_call_mode_retries_invalid_json_then_rejects(prompts):
    personas, timelines = batch(3, sessions=1)
    bad = personas[2]["persona_id"]
    engine = RecordingEngine(lambda r: '{"turns": [' if r.request_id.startswith(bad) else canned(r))
    conversations, rejections = generate_sessions(
        engine, prompts, personas, timelines, turns=2, seed=1, mode="one_call"
    )
    assert engine.batch_sizes == [3] + [1] * ONE_CALL_RETRIES
    assert len(conversations) == 2
    assert rejections[0]["record_id"] == f"{bad}-s00"
    assert rejections[0]["reason"].startswith("session: not JSON")
    assert rejections[0]["raw"] == '{"turns": ['


def test_parse_session_checks_count_roles_and_content():
    good = {
        "turns": [
            {"role": "user", "content": "Hi there, help me."},
            {"role": "assistant", "content": "Sure, gladly."},
        ]
    }
    assert parse_session(json.dumps(good), 1, 100)[1]["content"] == "Sure, gladly."
    with pytest.raises(ValueError, match="expected 4 turns"):
        parse_session(json.dumps(good), 2, 100)
    swapped = {"turns": list(reversed(good["turns"]))}
    with pytest.raises(ValueError, match="expected role user"):
        parse_session(json.dumps(swapped), 1, 100)
    with pytest.raises(ValueError, match="longer than 5"):
        parse_session(json.dumps(good), 1, 5)
    assert parse_session("Here you go: " + json.dumps(good), 1, 100)
    cut = {"turns": [good["turns"][0], {"role": "assistant", "content": "Sure, gladly. Let us st"}]}
    assert parse_session(json.dumps(cut), 1, 23)[1]["content"] == "Sure, gladly."


def test_clean_turn_strips_prefixes_and_cuts_invented_turns():
    assert clean_turn("  User: Hello there!  ") == "Hello there!"
    assert clean_turn("**Assistant:** Sure.") == "Sure."
    assert clean_turn("You: I need help.\nAssistant: Of course!\nUser: thanks") == "I need help."
    assert clean_turn("Try pasta. User: great idea") == "Try pasta."
    assert clean_turn('"Can you help me plan a trip?"') == "Can you help me plan a trip?"
    assert clean_turn('"Dear assistant,\n\nI need a plan.') == "Dear assistant,\n\nI need a plan."
    assert clean_turn("One.\n\n\n\nTwo.") == "One.\n\nTwo."


def test_clean_turn_cuts_a_truncated_output_back_to_a_sentence():
    text = "Try the lentil soup. It is warming and cheap. Also consider the"
    assert clean_turn(text, truncated=True) == "Try the lentil soup. It is warming and cheap."
    assert (
        clean_turn("A very long sentence that never", truncated=True)
        == "A very long sentence that never"
    )


def test_degenerate_outputs_are_named():
    assert degenerate_reason("") == "empty output"
    assert degenerate_reason("Hi") == "too short"
    assert degenerate_reason("Dear Sarah,") == "unfinished output"
    assert degenerate_reason("Here is the plan:") == "unfinished output"
    assert degenerate_reason("yes " * 30) == "repetitive output"
    assert (
        degenerate_reason("a b\nsame line here\nsame line here\nsame line here") == "repeated lines"
    )
    assert (
        degenerate_reason("I see, thanks.", previous="I see, thanks!")
        == "repeats the previous turn"
    )
    assert degenerate_reason("That sounds lovely, thank you.") is None


def test_update_mentions_counts_new_values_named_by_the_user():
    assert mentions_value("I'm Vegetarian now!", "vegetarian")
    assert not mentions_value("I like indie music", "indie rock")
    conversations = [
        {
            "turns": [
                {"role": "user", "content": "I switched to hiking trips lately."},
                {"role": "assistant", "content": "Beach resorts are nice too."},
            ],
            "profile_updates": [
                {"path": "a", "old": "x", "new": "hiking trips", "reason": "r"},
                {"path": "b", "old": "x", "new": "beach resorts", "reason": "r"},
            ],
        }
    ]
    assert update_mentions(conversations) == (1, 2)


@pytest.mark.parametrize(
    ("kwargs", "option"),
    [
        ({"turns": 0}, "--turns"),
        ({"turns": 21}, "--turns"),
        ({"turns": 2, "mode": "chat"}, "--conversation-mode"),
    ],
)
def test_bad_options_name_the_option(prompts, kwargs, option):
    personas, timelines = batch(1, sessions=1)
    with pytest.raises(UserError, match=option):
        generate_sessions(RecordingEngine(), prompts, personas, timelines, seed=1, **kwargs)


def test_mismatched_timelines_are_refused(prompts):
    personas, timelines = batch(2, sessions=1)
    with pytest.raises(ValueError, match="timeline of"):
        generate_sessions(
            RecordingEngine(), prompts, personas, list(reversed(timelines)), turns=1, seed=1
        )


@pytest.mark.engine
def test_real_engine_sessions_are_valid_conversation_records(engine, prompts):
    personas, timelines = batch(2, sessions=2, probability=1.0)
    before = len(engine.stats.batch_sizes)
    stats = ConverseStats()
    conversations, rejections = generate_sessions(
        engine, prompts, personas, timelines, turns=2, seed=1, max_tokens=64, stats=stats
    )
    assert len(conversations) + len(rejections) == 4
    # the checks below are about kept records: a run that rejected every session fails here
    assert conversations, f"every session was rejected: {[r['reason'] for r in rejections]}"
    # Stages flow: one stream carried every request of both personas' sessions (16 for
    # kept sessions, plus retries), not one engine call per turn.
    sizes = engine.stats.batch_sizes[before:]
    assert len(sizes) == 1 and sizes[0] == stats.requests >= 4 * len(conversations)
    assert stats.engine_calls == 1
    table = pa.Table.from_pylist(conversations, schema=CONVERSATIONS)
    assert table.num_rows == len(conversations)
    for record in conversations:
        assert [t["role"] for t in record["turns"]] == ["user", "assistant"] * 2
        assert all(t["content"].strip() == t["content"] and t["content"] for t in record["turns"])
        assert record["model"] == engine.model_name
    for rejection in rejections:
        assert rejection["kind"] == "conversation" and rejection["stage"] == "converse"
