"""Corpus-level persona dedup (no model): planted copies go, with their conversations and probes."""

from __future__ import annotations

import json
import random

from personaloom import schema as S
from personaloom.dedup.corpus import dedup_personas
from personaloom.records import to_table

WORDS = [f"w{i}" for i in range(3000)]


def text(seed: int, n: int = 150) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) for _ in range(n))


def persona(i: int, narrative: str, score: float) -> dict:
    return {
        "persona_id": S.persona_id(0, i),
        "seed": 0,
        "index": i,
        "taxonomy": "t@1",
        "attributes": [{"path": "a.b", "value": str(i), "source": "sampled"}],
        "narrative": narrative,
        "sections": {"background": narrative},
        "model": "m",
        "scores": {"critic_score": score},
    }


def conversation(i: int, session: int) -> dict:
    pid = S.persona_id(0, i)
    return {
        "conversation_id": f"{pid}-s{session:02d}",
        "persona_id": pid,
        "session": session,
        "topic": "t",
        "turns": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
        "profile_updates": [],
        "model": "m",
        "scores": {},
    }


def probe(i: int) -> dict:
    return {
        "probe_id": f"{S.persona_id(0, i)}-q00",
        "persona_id": S.persona_id(0, i),
        "after_session": 0,
        "type": "recall",
        "question": "q",
        "choices": ["a", "b"],
        "answer": 0,
    }


def tables(personas: list[dict]):
    ids = [p["index"] for p in personas]
    return (
        to_table(personas, S.PERSONAS),
        to_table([conversation(i, s) for i in ids for s in (0, 1)], S.CONVERSATIONS),
        to_table([probe(i) for i in ids], S.PROBES),
    )


def test_near_and_exact_copies_are_removed_keeping_the_best_scored():
    base = text(1)
    words = base.split()
    near = " ".join([*words[:-3], "x1", "x2", "x3"])  # 3 of 150 words changed
    personas = [
        persona(0, base, 0.4),
        persona(1, text(2), 0.9),
        persona(2, near, 0.8),  # near copy of 0, better score: 2 is kept, 0 removed
        persona(3, base.upper(), 0.1),  # exact copy after normalization
        persona(4, text(3), 0.5),
    ]
    out = dedup_personas(*tables(personas), threshold=0.8)
    kept = out.personas.column("persona_id").to_pylist()
    assert kept == [S.persona_id(0, i) for i in (1, 2, 4)]
    # 3 is an exact copy of 0, and that group is a near copy of 2: both go, named after 2
    assert out.exact + out.near == 2
    gone = {S.persona_id(0, 0), S.persona_id(0, 3)}
    assert set(out.conversations.column("persona_id").to_pylist()) == set(kept)
    assert set(out.probes.column("persona_id").to_pylist()) == set(kept)
    assert out.conversations.num_rows == 6 and out.probes.num_rows == 3
    by_kind: dict[str, set[str]] = {}
    for row in out.rejected:
        by_kind.setdefault(row["kind"], set()).add(row["record_id"])
        assert row["stage"] == "dedup" and row["critic"] == "dedup"
        assert json.loads(row["raw"])["persona_id"] in gone
    assert by_kind["persona"] == gone
    assert len(by_kind["conversation"]) == 4 and len(by_kind["probe"]) == 2
    persona_rows = [r for r in out.rejected if r["kind"] == "persona"]
    assert all(
        r["reason"].split(":")[0] in {"exact_duplicate_of", "near_duplicate_of"}
        for r in persona_rows
    )


def test_exact_copies_are_counted_as_exact():
    base = text(7)
    personas = [
        persona(0, base, 0.2),
        persona(1, base.upper() + " !", 0.6),
        persona(2, text(8), 0.5),
    ]
    out = dedup_personas(*tables(personas), threshold=0.8)
    assert out.personas.column("index").to_pylist() == [1, 2]  # the better scored copy stays
    assert (out.exact, out.near) == (1, 0)
    (row,) = [r for r in out.rejected if r["kind"] == "persona"]
    assert row["reason"] == f"exact_duplicate_of:{S.persona_id(0, 1)}"


def test_distinct_personas_pass_untouched_and_empty_input_is_fine():
    personas = [persona(i, text(10 + i), 0.5) for i in range(6)]
    p, c, q = tables(personas)
    out = dedup_personas(p, c, q, threshold=0.8)
    assert out.personas.equals(p) and out.conversations.equals(c) and out.probes.equals(q)
    assert out.rejected == [] and out.exact == out.near == 0
    empty = dedup_personas(
        S.PERSONAS.empty_table(),
        S.CONVERSATIONS.empty_table(),
        S.PROBES.empty_table(),
        threshold=0.8,
    )
    assert empty.personas.num_rows == 0 and empty.rejected == []
