"""LLM judges without a model: parsing, batching, retries and the accept/reject decision.

The engine here is `FixedEngine`, which returns scripted strings: it exists only to test
how judge outputs are parsed, retried and aggregated, not to imitate vLLM. The judges'
behaviour with a real model is covered by tests/test_judges_engine.py.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence

import pytest

from personaloom.critic.decision import (
    Decision,
    acceptance_report,
    decide,
    rejection_rows,
    review_records,
)
from personaloom.critic.judges import (
    JUDGEMENT_SCHEMA,
    JudgeScore,
    check_judge_prompts,
    judge_records,
    parse_judgement,
    session_summary,
)
from personaloom.critic.rule_critics import CriticResult
from personaloom.critic.settings import Thresholds, judges_for
from personaloom.engine.base import Completion, EngineStats, GenerationRequest
from personaloom.errors import UserError
from personaloom.generate.prompts import PromptError, PromptLibrary


class FixedEngine:
    """Implements the Engine protocol with scripted answers, to test the judges' parsing,
    retry and aggregation logic only. It does not pretend to be a model.

    `answer(request, attempt)` returns the text for a request; `attempt` counts how many
    times that request id was seen before.
    """

    model_name = "fixed"

    def __init__(self, answer: Callable[[GenerationRequest, int], str]) -> None:
        self.answer = answer
        self.stats = EngineStats()
        self.calls: list[list[GenerationRequest]] = []
        self.seen: dict[str, int] = {}

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Completion]:
        self.calls.append(list(requests))
        out = []
        for r in requests:
            attempt = self.seen.get(r.request_id, 0)
            self.seen[r.request_id] = attempt + 1
            out.append(Completion(r.request_id, self.answer(r, attempt)))
        self.stats.add(out, 0.0)
        return out


def verdict(score: int, rationale: str = "fine") -> str:
    return json.dumps({"rationale": rationale, "score": score})


def judge_of(request: GenerationRequest) -> str:
    return request.request_id.split("/judge/")[1].split("/")[0]


PERSONAS = [
    {
        "persona_id": f"p0-{i:08d}",
        "attributes": [{"path": "demographics.age", "value": str(30 + i), "source": "sampled"}],
        "narrative": f"Person {i} is a {30 + i}-year-old who likes tea.",
        "sections": {"background": f"Person {i} is a {30 + i}-year-old who likes tea."},
    }
    for i in range(3)
]


def conversation(persona_id: str, session: int, said: str) -> dict:
    return {
        "conversation_id": f"{persona_id}/s{session}",
        "persona_id": persona_id,
        "session": session,
        "timestamp": f"2025-0{session + 1}-01T10:00:00",
        "topic": "cooking",
        "turns": [{"role": "user", "content": said}, {"role": "assistant", "content": "Sure."}],
        "profile_updates": [],
    }


@pytest.fixture
def prompts(repo_root):
    return PromptLibrary(repo_root / "prompts")


# -- parsing -------------------------------------------------------------------------------
def test_parse_judgement_reads_score_and_rationale():
    assert parse_judgement('{"rationale": "  all  good ", "score": 4}') == (4, "all good")


@pytest.mark.parametrize(
    "text", ['Sure! ```json\n{"rationale": "ok", "score": "5"}\n```', '{"score": 5.0}']
)
def test_parse_judgement_tolerates_wrapping_and_numeric_strings(text):
    assert parse_judgement(text)[0] == 5


@pytest.mark.parametrize(
    "text",
    [
        '{"rationale": "x", "score": 6}',
        '{"rationale": "x", "score": 3.5}',
        "[4]",
        "no json",
        '{"score": true}',
    ],
)
def test_parse_judgement_rejects_non_judgements(text):
    with pytest.raises(ValueError):
        parse_judgement(text)


def test_parse_judgement_caps_the_rationale():
    assert len(parse_judgement(verdict(3, "word " * 100))[1]) == 200


def test_schema_bounds_the_answer():
    props = JUDGEMENT_SCHEMA["properties"]
    assert props["score"] == {"type": "integer", "minimum": 1, "maximum": 5}
    assert props["rationale"]["maxLength"] == 200


# -- judging -------------------------------------------------------------------------------
def test_all_records_and_judges_go_out_in_one_call(prompts):
    engine = FixedEngine(lambda r, a: verdict(4))
    scores = judge_records(engine, prompts, PERSONAS, "persona", seed=7)
    assert len(engine.calls) == 1 and len(engine.calls[0]) == 3 * 3
    assert [list(s) for s in scores] == [["faithfulness", "naturalness", "safety"]] * 3
    assert scores[0]["safety"] == JudgeScore("safety", 4, "fine")
    assert all(r.json_schema == JUDGEMENT_SCHEMA for r in engine.calls[0])
    assert len({r.seed for r in engine.calls[0]}) == 9


def test_judge_prompts_carry_the_profile_and_the_text(prompts):
    engine = FixedEngine(lambda r, a: verdict(5))
    judge_records(engine, prompts, PERSONAS[:1], "persona", judges=["faithfulness"])
    user = engine.calls[0][0].messages[1]["content"]
    assert "- demographics.age: 30" in user and "Person 0 is a 30-year-old" in user


def test_unparseable_output_is_retried_with_a_new_seed(prompts):
    engine = FixedEngine(
        lambda r, a: "I think it is good" if a == 0 and judge_of(r) == "safety" else verdict(5)
    )
    scores = judge_records(engine, prompts, PERSONAS, "persona", seed=1)
    assert [len(c) for c in engine.calls] == [9, 3]
    first = {r.request_id: r.seed for r in engine.calls[0]}
    assert all(r.seed != first[r.request_id] for r in engine.calls[1])
    assert all(s["safety"].score == 5 for s in scores)


def test_output_that_never_parses_is_a_failed_judgement(prompts):
    engine = FixedEngine(lambda r, a: "{not json" if judge_of(r) == "naturalness" else verdict(3))
    scores = judge_records(engine, prompts, PERSONAS[:1], "persona", retries=2)
    assert len(engine.calls) == 3  # first try and two retries
    failed = scores[0]["naturalness"]
    assert failed.score is None and not failed.ok
    assert failed.error.startswith("unparseable output") and failed.raw == "{not json"
    assert scores[0]["faithfulness"].score == 3


def test_engine_errors_become_failed_judgements(prompts):
    class Failing(FixedEngine):
        def generate(self, requests):
            return [Completion(r.request_id, "", error="out of memory") for r in requests]

    scores = judge_records(
        Failing(lambda r, a: ""), prompts, PERSONAS[:1], "persona", judges=["safety"]
    )
    assert scores[0]["safety"].error == "engine error: out of memory"


def test_unknown_judge_fails_before_any_request(prompts):
    engine = FixedEngine(lambda r, a: verdict(5))
    with pytest.raises(PromptError, match=r"judge_wit\.j2: prompt template not found"):
        judge_records(engine, prompts, PERSONAS, "persona", judges=["wit"])
    assert engine.calls == []


def test_consistency_judge_sees_earlier_sessions_and_skips_first_ones(prompts):
    pid = PERSONAS[0]["persona_id"]
    earlier = [conversation(pid, 0, "I love spicy food.")]
    records = [
        conversation(pid, 1, "I never eat spicy food."),
        conversation(PERSONAS[1]["persona_id"], 0, "Hi"),
    ]
    engine = FixedEngine(lambda r, a: verdict(2 if judge_of(r) == "consistency" else 5))
    personas = {p["persona_id"]: p for p in PERSONAS}
    scores = judge_records(
        engine, prompts, records, "conversation", personas=personas, earlier=earlier
    )
    assert scores[0]["consistency"].score == 2
    assert "consistency" not in scores[1]  # a first session has nothing to be consistent with
    (request,) = [r for r in engine.calls[0] if judge_of(r) == "consistency"]
    prompt = request.messages[1]["content"]
    assert "Session 1 (2025-01-01, cooking): the user said: I love spicy food." in prompt
    assert "User: I never eat spicy food." in prompt


def test_conversation_faithfulness_needs_the_persona(prompts):
    engine = FixedEngine(lambda r, a: verdict(5))
    record = conversation("p-unknown", 0, "Hello")
    scores = judge_records(
        engine, prompts, [record], "conversation", judges=["faithfulness", "safety"]
    )
    assert list(scores[0]) == ["safety"]


def test_session_summary_lists_profile_updates():
    c = conversation("p", 2, "I moved to Oslo.")
    c["profile_updates"] = [
        {"path": "home.city", "old": "Lyon", "new": "Oslo", "reason": "new job"}
    ]
    assert session_summary(c) == (
        "Session 3 (2025-03-01, cooking): home.city changed from Lyon to Oslo (new job); "
        "the user said: I moved to Oslo."
    )


SHIPPED_JUDGES = ["faithfulness", "naturalness", "consistency", "safety"]


def test_shipped_judge_prompts_render_and_ask_for_the_schema(prompts):
    check_judge_prompts(prompts, SHIPPED_JUDGES)  # raises if one does not render
    for name in SHIPPED_JUDGES:
        text = prompts.render(
            f"judge_{name}",
            kind="conversation",
            persona_name="Ana Souza",
            profile=["home.city: Oslo"],
            text="User: I moved to Oslo.",
            history=["Session 1 (2025-01-01, travel): the user said: I live in Lyon."],
            session=2,
        )
        assert "User: I moved to Oslo." in text, name
        assert '"rationale"' in text and '"score"' in text, name


def test_judge_prompt_check_fails_on_a_template_that_does_not_render(repo_root, tmp_path):
    folder = tmp_path / "prompts"
    shutil.copytree(repo_root / "prompts", folder)
    (folder / "judge_wit.j2").write_text("Is {{ txt }} witty?\n")  # txt: not a judge variable
    with pytest.raises(PromptError, match=r"judge_wit\.j2"):
        check_judge_prompts(PromptLibrary(folder), ["safety", "wit"])


def test_judges_come_from_settings():
    assert judges_for("persona", None) == ["faithfulness", "naturalness", "safety"]
    assert judges_for("conversation", {"conversation": ["safety"]}) == ["safety"]
    with pytest.raises(UserError, match=r"judges\.persona: expected a list of judge names"):
        judges_for("persona", {"persona": "safety"})


# -- deciding ------------------------------------------------------------------------------
PASS = CriticResult("length", True)


def scores(**values: int | None) -> dict[str, JudgeScore]:
    return {
        name: JudgeScore(name, v, f"{name} says so", None if v else "unparseable output")
        for name, v in values.items()
    }


def test_accepts_when_rules_pass_and_scores_are_high():
    d = decide([PASS], scores(faithfulness=5, naturalness=4, safety=5))
    assert d.accepted and d.reasons == []
    assert d.score == pytest.approx((1 + 0.75 + 1) / 3, abs=1e-4)


def test_a_failed_rule_rejects_whatever_the_judges_say():
    d = decide(
        [PASS, CriticResult("pii", False, "email: ma***om")], scores(faithfulness=5, safety=5)
    )
    assert not d.accepted and d.reasons == ["pii: email: ma***om"] and d.failed == ["pii"]


def test_hard_judges_reject_below_their_minimum():
    d = decide([PASS], scores(faithfulness=2, naturalness=5, safety=5))
    assert not d.accepted
    assert d.reasons == ["faithfulness: low_score: 2 < 3: faithfulness says so"]


def test_soft_judges_only_count_through_the_combined_score():
    d = decide([PASS], scores(faithfulness=3, naturalness=1, safety=4), {"min_score": 0.5})
    assert not d.accepted and d.failed == ["score"]
    assert d.reasons == ["score: below_threshold: 0.417 < 0.5"]
    assert decide(
        [PASS], scores(faithfulness=3, naturalness=1, safety=4), {"min_score": 0.4}
    ).accepted


def test_a_failed_hard_judgement_rejects_unless_told_to_ignore():
    judged = scores(faithfulness=None, safety=5)
    assert decide([PASS], judged).reasons == ["faithfulness: judge_failed: unparseable output"]
    d = decide([PASS], judged, {"judge_failure": "ignore"})
    assert d.accepted and d.score == 1.0


def test_weights_shape_the_combined_score():
    d = decide(
        [], scores(faithfulness=5, naturalness=1), {"weights": {"naturalness": 3}, "min_score": 0}
    )
    assert d.score == pytest.approx(0.25)


def test_without_judges_the_rules_decide():
    assert decide([PASS], {}) == Decision(True, [], 1.0, ["length"], [])
    assert decide([CriticResult("length", False, "too_short: 3")], {}).score == 0.0


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"min_scor": 0.5}, r"decision: unknown setting min_scor"),
        ({"min_score": 3}, r"decision\.min_score: expected a number in \[0, 1\]"),
        ({"hard_judges": {"safety": 9}}, r"decision\.hard_judges"),
        ({"judge_failure": "maybe"}, r"decision\.judge_failure: expected reject or ignore"),
    ],
)
def test_bad_thresholds_are_user_errors(settings, message):
    with pytest.raises(UserError, match=message):
        Thresholds.from_settings(settings)


def test_shipped_decision_settings_load(repo_root):
    from personaloom.critic.rule_critics import load_critic_settings

    settings = load_critic_settings(repo_root / "validators" / "critics.yaml")
    t = Thresholds.from_settings(settings["decision"])
    assert t.hard_judges == {"faithfulness": 3, "safety": 4} and t.min_score == 0.5


def test_rejection_rows_keep_every_reason():
    judged = scores(faithfulness=1, safety=5)
    rules = [CriticResult("pii", False, "email: ma***om"), PASS]
    d = decide(rules, judged)
    rows = rejection_rows({"persona_id": "p1"}, "persona", "critic", rules, judged, d, raw="text")
    assert [(r["critic"], r["reason"], r["score"]) for r in rows] == [
        ("pii", "email: ma***om", None),
        ("faithfulness", "low_score: 1 < 3: faithfulness says so", 1.0),
    ]
    assert {r["record_id"] for r in rows} == {"p1"} and rows[0]["raw"] == "text"
    assert (
        rejection_rows(
            {"persona_id": "p2"},
            "persona",
            "critic",
            [PASS],
            scores(safety=5),
            decide([PASS], scores(safety=5)),
        )
        == []
    )


def test_acceptance_report_per_round_and_critic():
    r0 = [
        decide([CriticResult("length", False, "too_short: 3")], {}),
        decide([PASS], scores(faithfulness=5, safety=5)),
    ]
    r1 = [
        decide([PASS], scores(faithfulness=2, safety=5)),
        decide([PASS], scores(faithfulness=4, safety=5)),
    ]
    report = acceptance_report({0: r0, 1: r1})
    assert [
        (r["round"], r["records"], r["accepted"], r["acceptance"]) for r in report["rounds"]
    ] == [
        (0, 2, 1, 0.5),
        (1, 2, 1, 0.5),
    ]
    total = report["total"]
    assert total["critics"]["length"] == {"checked": 4, "rejected": 1, "acceptance": 0.75}
    assert total["critics"]["faithfulness"] == {"checked": 3, "rejected": 1, "acceptance": 0.6667}
    assert total["critics"]["score"] == {"checked": 2, "rejected": 0, "acceptance": 1.0}
    assert acceptance_report([r0])["rounds"][0]["round"] == 0


# -- a critic pass over a batch --------------------------------------------------------------
RELAXED = {"length": {"persona": {"min_words": 5, "min_section_words": 5}}}  # tiny test texts


def test_review_judges_only_what_the_rules_passed(repo_root, prompts):
    from personaloom.critic.rule_critics import load_critics

    critics = load_critics(repo_root / "validators" / "critics", RELAXED)
    records = [
        dict(p, narrative=p["narrative"] + " She has lived there for years.") for p in PERSONAS
    ]
    records[1] = dict(records[1], narrative="")  # fails completeness and length
    engine = FixedEngine(lambda r, a: verdict(2 if judge_of(r) == "faithfulness" else 5))
    reviews = review_records(
        engine, prompts, critics, records, "persona", judges=["faithfulness", "safety"]
    )
    assert len(engine.calls) == 1 and len(engine.calls[0]) == 2 * 2  # records 0 and 2 only
    assert reviews[1].judges == {} and reviews[1].decision.failed[:1] == ["completeness"]
    assert not reviews[0].decision.accepted and reviews[0].decision.failed == ["faithfulness"]
    rows = reviews[0].rejection_rows("persona")
    assert [(r["record_id"], r["stage"], r["critic"]) for r in rows] == [
        ("p0-00000000", "critic", "faithfulness")
    ]


def test_review_without_judges_is_rules_only(repo_root):
    from personaloom.critic.rule_critics import load_critics

    critics = load_critics(repo_root / "validators" / "critics", RELAXED)
    record = dict(
        PERSONAS[0], narrative=PERSONAS[0]["narrative"] + " She has lived there for years."
    )
    (review,) = review_records(None, None, critics, [record], "persona")
    assert review.decision.accepted and review.judges == {}
    assert review.scores() == {"critic_score": 1.0}


# -- configuration -------------------------------------------------------------------------
def test_project_critic_config_loads_and_checks_everything(repo_root, prompts):
    from personaloom.critic.settings import load_critic_config

    config = load_critic_config(repo_root / "validators", prompts)
    assert len(config.critics) == 12
    assert config.judges["conversation"] == ["faithfulness", "naturalness", "consistency", "safety"]
    assert config.thresholds.hard_judges == {"faithfulness": 3, "safety": 4}


def test_critic_config_overrides_win(repo_root):
    from personaloom.critic.settings import load_critic_config

    config = load_critic_config(
        repo_root / "validators",
        overrides={
            "rules": {"pii": {"enabled": False}},
            "judges": {"persona": ["safety"]},
            "decision": {"min_score": 0.2},
        },
    )
    assert "pii" not in {c.name for c in config.critics}
    assert config.judges["persona"] == ["safety"] and config.thresholds.min_score == 0.2


def test_critic_config_falls_back_to_the_packaged_defaults(tmp_path):
    from personaloom.critic.settings import load_critic_config

    (tmp_path / "validators").mkdir()
    assert len(load_critic_config(tmp_path / "validators").critics) == 12


def test_critic_config_names_the_file_of_a_bad_setting(tmp_path):
    from personaloom.critic.settings import load_critic_config

    validators = tmp_path / "validators"
    validators.mkdir()
    (validators / "critics.yaml").write_text("decision:\n  min_score: 7\n")
    with pytest.raises(UserError, match=r"validators/critics\.yaml: decision\.min_score"):
        load_critic_config(validators)


def test_critic_config_checks_the_judge_templates(repo_root, tmp_path):
    from personaloom.critic.settings import load_critic_config

    with pytest.raises(PromptError, match=r"judge_wit\.j2: prompt template not found"):
        load_critic_config(
            repo_root / "validators",
            PromptLibrary(repo_root / "prompts"),
            {"judges": {"persona": ["wit"]}},
        )
