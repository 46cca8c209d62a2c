"""Critic rounds: choosing and formatting the few-shot examples of the next round."""

from __future__ import annotations

import pytest

from personaloom.critic.decision import Decision
from personaloom.critic.fewshot import diversity_key, format_fewshot, select_fewshot


def persona(i: int, occupation: str, sections: dict | None = None) -> dict:
    return {
        "persona_id": f"p0-{i:08d}",
        "attributes": [
            {"path": "demographics.age", "value": str(30 + i), "source": "sampled"},
            {"path": "work.occupation", "value": occupation, "source": "sampled"},
        ],
        "narrative": f"Narrative of person {i}.",
        "sections": sections
        or {"background": f"Background of person {i}.", "values": f"Values of person {i}."},
    }


def accepted(score: float) -> Decision:
    return Decision(True, [], score)


def rejected(score: float) -> Decision:
    return Decision(False, ["length: too_short"], score)


def test_best_accepted_examples_first():
    records = [persona(0, "nurse"), persona(1, "chef"), persona(2, "pilot"), persona(3, "baker")]
    decisions = [accepted(0.5), accepted(0.9), rejected(1.0), accepted(0.7)]
    chosen = select_fewshot(records, decisions, 2)
    assert [r["persona_id"] for r in chosen] == ["p0-00000001", "p0-00000003"]


def test_no_two_examples_share_an_occupation_while_others_remain():
    records = [persona(0, "Nurse"), persona(1, "nurse"), persona(2, "chef")]
    chosen = select_fewshot(records, [accepted(0.9), accepted(0.8), accepted(0.1)], 2)
    assert [r["persona_id"] for r in chosen] == ["p0-00000000", "p0-00000002"]


def test_repeats_fill_the_places_left():
    records = [persona(0, "nurse"), persona(1, "nurse"), persona(2, "nurse")]
    chosen = select_fewshot(records, [accepted(0.5), accepted(0.9), accepted(0.7)], 2)
    assert [r["persona_id"] for r in chosen] == ["p0-00000001", "p0-00000002"]


def test_ties_break_on_record_id():
    records = [persona(1, "a"), persona(0, "b")]
    chosen = select_fewshot(records, [accepted(0.5), accepted(0.5)], 1)
    assert chosen[0]["persona_id"] == "p0-00000000"


def test_no_accepted_records_no_examples():
    assert select_fewshot([persona(0, "nurse")], [rejected(0.9)], 3) == []
    assert select_fewshot([persona(0, "nurse")], [accepted(0.9)], 0) == []
    with pytest.raises(ValueError, match="1 records but 2 decisions"):
        select_fewshot([persona(0, "nurse")], [accepted(0.9), accepted(0.1)], 1)


def test_conversations_are_diversified_by_topic():
    convs = [
        {"conversation_id": f"c{i}", "topic": t, "turns": []}
        for i, t in enumerate(["cooking", "cooking", "travel"])
    ]
    assert diversity_key(convs[0]) == "cooking"
    chosen = select_fewshot(convs, [accepted(0.9), accepted(0.8), accepted(0.1)], 2)
    assert [c["conversation_id"] for c in chosen] == ["c0", "c2"]


def test_persona_examples_are_compact_and_vary_the_section():
    text = format_fewshot([persona(0, "nurse"), persona(1, "chef")], "persona")
    assert text == (
        "Example 1 (age: 30; occupation: nurse), background:\nBackground of person 0.\n\n"
        "Example 2 (age: 31; occupation: chef), values:\nValues of person 1."
    )


def test_persona_examples_can_show_one_section():
    text = format_fewshot([persona(0, "nurse"), persona(1, "chef")], "persona", section="values")
    assert "background" not in text and text.count("values:") == 2


def test_long_examples_are_cut_at_a_sentence_end():
    long = "First sentence is here. Second sentence is a little longer than that. " * 20
    text = format_fewshot([persona(0, "nurse", {"background": long})], "persona", max_chars=80)
    body = text.split("\n", 1)[1]
    assert body == "First sentence is here. Second sentence is a little longer than that."


def test_conversation_examples_show_the_first_turns():
    conv = {
        "conversation_id": "c0",
        "topic": "travel",
        "turns": [
            {"role": r, "content": f"turn {i}"} for i, r in enumerate(["user", "assistant"] * 4)
        ],
    }
    text = format_fewshot([conv], "conversation", max_turns=2)
    assert text == "Example 1 (topic: travel):\nuser: turn 0\nassistant: turn 1"


def test_no_examples_format_to_nothing():
    assert format_fewshot([], "persona") == ""
