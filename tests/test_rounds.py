"""Generator-critic rounds: bookkeeping without a model, and one real-engine run of two rounds."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest

from personaloom.critic.rounds import (
    CriticPlan,
    conversation_rounds,
    critic_summary,
    mode_thresholds,
    persona_rounds,
    resolve_judge_mode,
    round_seed,
)
from personaloom.critic.rule_critics import RuleCritic
from personaloom.critic.settings import CriticConfig, Thresholds
from personaloom.engine.embedded import EMBEDDED_MODEL


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


# -- conversation rounds: complete timelines (a stand-in generator, the real bookkeeping) ----
class FakeSessions:
    """`generate(personas, starts, earlier, seed)` of `conversation_rounds` without a model:
    one record per session from `starts[i]` on, its text naming the round seed; sessions
    listed in `fail` ((persona id, session) -> reason) fail generation and stop the persona
    (as `generate_sessions(stop_at_rejection=True)` does). Records every call."""

    def __init__(self, sessions: int, fail: dict | None = None) -> None:
        self.sessions = sessions
        self.fail = fail or {}
        self.calls: list[tuple[list[str], list[int], list[list[str]], int]] = []

    def __call__(self, personas, starts, earlier, seed):
        self.calls.append(
            (
                [p["persona_id"] for p in personas],
                list(starts),
                [[c["conversation_id"] for c in e] for e in earlier],
                seed,
            )
        )
        records, failures = [], []
        for persona, start, kept in zip(personas, starts, earlier, strict=True):
            assert [c["session"] for c in kept] == list(range(start))
            pid = persona["persona_id"]
            for s in range(start, self.sessions):
                cid = f"{pid}-s{s:02d}"
                reason = self.fail.get((pid, s))
                if reason:
                    failures.append(
                        {
                            "record_id": cid,
                            "kind": "conversation",
                            "stage": "converse",
                            "critic": "generation",
                            "reason": reason,
                            "score": None,
                            "raw": "",
                        }
                    )
                    break
                records.append(
                    {
                        "conversation_id": cid,
                        "persona_id": pid,
                        "session": s,
                        "turns": [{"role": "user", "content": f"seed {seed}"}],
                        "scores": {},
                    }
                )
        return records, failures


def reject_sessions(rule):
    """A critic plan whose one rule critic rejects the sessions `rule(record, round)` names;
    the round is counted by the critic itself (each round reviews each persona once)."""
    seen: dict[str, int] = {}

    def check(record, context):
        r = seen.get(record["conversation_id"], 0)
        seen[record["conversation_id"]] = r + 1
        if rule(record, r):
            return context.fail(f"picky: session {record['session']} on look {r}")
        return context.ok()

    critic = RuleCritic("picky", ("conversation",), check)
    return CriticPlan(CriticConfig([critic], {"conversation": []}, Thresholds()), 2, "off")


PEOPLE = [{"persona_id": f"p9-{i:08d}", "index": i} for i in range(2)]


def test_a_rejected_session_is_regenerated_with_the_sessions_after_it():
    fake = FakeSessions(3)
    plan = reject_sessions(lambda c, look: c["session"] == 1 and look == 0)
    out = conversation_rounds(fake, None, None, PEOPLE, plan, seed=4, sessions=3)
    # round 1 regenerates sessions 1..2 of both personas, remembering their kept session 0
    assert fake.calls[1][1] == [1, 1]
    assert fake.calls[1][2] == [["p9-00000000-s00"], ["p9-00000001-s00"]]
    kept = {c["conversation_id"]: c for c in out.accepted}
    for pid in ("p9-00000000", "p9-00000001"):
        assert [c["session"] for c in out.accepted if c["persona_id"] == pid] == [0, 1, 2]
        rounds = [out.session_rounds[f"{pid}-s{j:02d}"] for j in range(3)]
        assert rounds == [0, 1, 1]
        assert kept[f"{pid}-s00"]["turns"][0]["content"] == "seed 4"  # untouched
        assert kept[f"{pid}-s02"]["turns"][0]["content"] != "seed 4"  # regenerated
    superseded = [r for r in out.rejected if r["critic"] == "timeline"]
    assert {r["record_id"] for r in superseded} == {"p9-00000000-s02", "p9-00000001-s02"}
    assert all("superseded: session 1" in r["reason"] for r in superseded)
    assert not out.incomplete and not out.truncated
    report = out.report()
    assert [(r["round"], r["records"], r["kept"]) for r in report["rounds"]] == [
        (0, 6, 2),
        (1, 4, 4),
    ]
    assert report["session_rounds"]["p9-00000000-s01"] == 1


def test_a_session_that_keeps_failing_rejects_the_persona_whole():
    fake = FakeSessions(3)
    plan = reject_sessions(lambda c, look: c["persona_id"] == "p9-00000001" and c["session"] == 1)
    out = conversation_rounds(fake, None, None, PEOPLE, plan, seed=4, sessions=3)
    assert set(out.incomplete) == {"p9-00000001"}
    assert out.incomplete["p9-00000001"]["session"] == 1
    assert {c["persona_id"] for c in out.accepted} == {"p9-00000000"}
    assert not any(cid.startswith("p9-00000001") for cid in out.session_rounds)
    persona_rows = [r for r in out.rejected if r["kind"] == "persona"]
    assert len(persona_rows) == 1
    row = persona_rows[0]
    assert row["record_id"] == "p9-00000001" and row["critic"] == "picky"
    assert row["stage"] == "conversation"
    assert "session 1 still rejected in round 1" in row["reason"] and "picky" in row["reason"]
    assert json.loads(row["raw"])["persona_id"] == "p9-00000001"
    # its accepted session 0 goes to rejected/ too, naming the persona
    assert any(
        r["record_id"] == "p9-00000001-s00" and "persona p9-00000001 rejected" in r["reason"]
        for r in out.rejected
    )


def test_min_sessions_keeps_a_complete_prefix():
    fake = FakeSessions(4, fail={("p9-00000000", 2): "empty output"})
    plan = CriticPlan(None, 0, "off")  # no critic: one round, generation failures only
    out = conversation_rounds(fake, None, None, PEOPLE, plan, seed=4, sessions=4, min_sessions=2)
    assert out.truncated == {"p9-00000000": 2}
    mine = [c["session"] for c in out.accepted if c["persona_id"] == "p9-00000000"]
    assert mine == [0, 1]
    strict = conversation_rounds(
        FakeSessions(4, fail={("p9-00000000", 2): "empty output"}),
        None,
        None,
        PEOPLE,
        plan,
        seed=4,
        sessions=4,
    )
    assert set(strict.incomplete) == {"p9-00000000"}
    assert strict.incomplete["p9-00000000"]["critic"] == "generation"
    assert next(r for r in strict.rejected if r["kind"] == "persona")["critic"] == "generation"


def test_a_generation_failure_is_retried_from_that_session():
    fake = FakeSessions(3, fail={("p9-00000000", 0): "empty output"})

    def fails_in_round_0_only(personas, starts, earlier, seed):
        out = fake(personas, starts, earlier, seed)
        fake.fail = {}
        return out

    plan = reject_sessions(lambda c, look: False)
    out = conversation_rounds(fails_in_round_0_only, None, None, PEOPLE, plan, seed=4, sessions=3)
    assert fake.calls[1][:2] == (["p9-00000000"], [0])
    assert [c["session"] for c in out.accepted if c["persona_id"] == "p9-00000000"] == [0, 1, 2]
    assert out.session_rounds["p9-00000000-s00"] == 1
    assert out.session_rounds["p9-00000001-s00"] == 0


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
    from personaloom.run.config import RunConfig
    from personaloom.run.pipeline import prepare, sample_drafts

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
