"""Generator-critic rounds: bookkeeping without a model, and one real-engine run of two rounds."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest

from personaloom.critics import RuleCritic
from personaloom.engine.embedded import EMBEDDED_MODEL
from personaloom.judges import CriticConfig, Thresholds
from personaloom.rounds import (
    CriticPlan,
    _better,
    critic_summary,
    mode_thresholds,
    persona_rounds,
    resolve_judge_mode,
    round_seed,
)


def test_judge_mode_auto_is_advisory_only_for_the_embedded_model():
    assert resolve_judge_mode("auto", EMBEDDED_MODEL) == "advisory"
    assert resolve_judge_mode("auto", "Qwen/Qwen2.5-7B-Instruct") == "filter"
    assert resolve_judge_mode("filter", EMBEDDED_MODEL) == "filter"
    with pytest.raises(ValueError):
        resolve_judge_mode("strict", EMBEDDED_MODEL)


def test_advisory_thresholds_never_reject_on_judges():
    base = Thresholds(hard_judges={"faithfulness": 3}, min_score=0.6)
    advisory = mode_thresholds(base, "advisory")
    assert advisory.hard_judges == {} and advisory.min_score == 0.0
    assert mode_thresholds(base, "filter") == base


def test_round_seeds_differ_per_round_and_round_zero_is_the_run_seed():
    seeds = [round_seed(7, r) for r in range(5)]
    assert seeds[0] == 7 and len(set(seeds)) == 5
    assert round_seed(7, 3) == round_seed(7, 3) and round_seed(8, 3) != round_seed(7, 3)
    assert all(0 <= s < 2**63 for s in seeds)


def _round(r: int, records: int, accepted: int, critics: dict) -> dict:
    return {
        "round": r,
        "records": records,
        "accepted": accepted,
        "acceptance": accepted / records,
        "mean_score": 0.5,
        "critics": critics,
    }


def test_critic_summary_sums_batches_per_round_and_critic():
    b0 = {
        "persona": {
            "rounds": [
                _round(0, 4, 2, {"length": {"checked": 4, "rejected": 2}}),
                _round(1, 2, 1, {"length": {"checked": 2, "rejected": 1}}),
            ]
        }
    }
    b1 = {"persona": {"rounds": [_round(0, 4, 4, {"length": {"checked": 4, "rejected": 0}})]}}
    out = critic_summary([b0, None, b1])
    rounds = out["report"]["persona"]["rounds"]
    assert [(r["round"], r["records"], r["accepted"]) for r in rounds] == [(0, 8, 6), (1, 2, 1)]
    assert rounds[0]["critics"]["length"] == {"checked": 8, "rejected": 2, "acceptance": 0.75}
    rates = out["rates"]["persona"]
    assert rates["all rounds"] == 0.7  # 7 of 10 candidates
    assert rates["round 0"] == 0.75 and rates["round 1"] == 0.5
    assert rates["length"] == 0.7
    assert critic_summary([None, None]) == {"report": {}, "rates": {}}


def test_a_later_round_replaces_sessions_only_when_it_is_better():
    def sessions(*numbers: int) -> list[dict]:
        return [{"session": n} for n in numbers]

    assert _better(sessions(0, 1), sessions(0))
    assert not _better(sessions(1), sessions(0))  # session 0 missing: nothing learnable
    assert not _better(sessions(0), sessions(0))  # a tie keeps the earlier round
    assert _better(sessions(0, 2), sessions(0))  # same prefix, more sessions


# -- real engine -----------------------------------------------------------------------------
class RecordingEngine:
    """The real engine, with the prompts of every request kept for inspection."""

    def __init__(self, engine) -> None:
        self.engine = engine
        self.model_name = engine.model_name
        self.stats = engine.stats
        self.prompts: list[str] = []

    def generate(self, requests):
        self.prompts += [r.messages[-1]["content"] for r in requests]
        return self.engine.generate(requests)


@pytest.mark.engine
def test_two_rounds_regenerate_only_the_rejected_with_fewshot(engine, repo_root):
    from personaloom.config import RunConfig
    from personaloom.pipeline import prepare, sample_drafts

    seen: set[str] = set()

    def first_look(record, context):
        """Rejects odd personas the first time it sees them."""
        pid = record["persona_id"]
        first = pid not in seen
        seen.add(pid)
        if first and record["index"] % 2 == 1:
            return context.fail("first_look: odd persona, first candidate")
        return context.ok()

    critic = RuleCritic("first_look", ("persona",), first_look)
    plan = CriticPlan(CriticConfig([critic], {"persona": []}, Thresholds()), 2, "off")
    config = RunConfig(personas=4, seed=11, critic_rounds=2, judges="off")
    run = prepare(config, Path(tempfile.mkdtemp()) / "out", project_dir=repo_root)
    recording = RecordingEngine(engine)
    result = persona_rounds(
        recording,
        run.prompts(),
        lambda ids: sample_drafts(run, ids)[0],
        [0, 1, 2, 3],
        plan,
        seed=11,
        max_tokens_section=48,
        max_tokens_narrative=64,
    )
    # a candidate may also fail generation itself (unparseable output after retries): the
    # assertions follow what reached the critic
    failed = {
        (r["record_id"], r["stage"][-2]) for r in result.rejected if r["critic"] == "generation"
    }
    rows = [r for r in result.rejected if r["critic"] == "first_look"]
    assert rows and all(r["stage"] == "critic (round 0)" for r in rows)
    assert {int(r["record_id"][-1]) % 2 for r in rows} == {1}
    accepted = {p["persona_id"]: p for p in result.accepted}
    for i in (0, 2):
        pid = f"pb-0000000{i}"
        assert pid in accepted or (pid, "0") in failed
    for row in rows:  # the rejected candidate itself is kept, and regenerated in round 1
        candidate = json.loads(row["raw"])
        assert candidate["persona_id"] == row["record_id"] and candidate["narrative"]
        if (row["record_id"], "1") not in failed:
            kept = accepted[row["record_id"]]
            assert kept["narrative"] != candidate["narrative"]  # new seed, new text
    assert len(result.decisions[1]) == len(rows) - sum(
        1 for r in rows if (r["record_id"], "1") in failed
    )
    # round 1 prompts carry the personas accepted in round 0 as examples; round 0's do not
    with_examples = [p for p in recording.prompts if "Example 1" in p]
    assert with_examples and len(with_examples) < len(recording.prompts)
    assert all(p["scores"] == {"critic_score": 1.0} for p in result.accepted)
    report = result.report()
    assert sum(r["accepted"] for r in report["rounds"]) == len(result.accepted)
