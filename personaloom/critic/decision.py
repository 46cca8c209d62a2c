"""The accept/reject policy: rule-critic results and judge scores -> a decision and a score.

`decide` applies the hard filters first (every rule critic, then the hard judges such as
faithfulness and safety) and then a threshold on the combined judge score; the thresholds
come from the settings file (`settings.Thresholds`). `review_flow` runs one critic pass
over records in that order (no judge tokens are spent on a record a rule already
rejected; `review_records` runs it on an engine); `rejection_rows` turns a rejection into
rows of the rejected table, one per reason; `acceptance_report` sums decisions up per
round and per critic.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from personaloom.critic.judges import DEFAULT_JUDGES, JudgeScore, judge_flow
from personaloom.critic.rule_critics import CriticResult, RuleCritic, record_id, run_rule_critics
from personaloom.critic.settings import Thresholds
from personaloom.engine.base import Completion, Engine, GenerationRequest
from personaloom.engine.flows import run_flows
from personaloom.generate.prompts import PromptLibrary
from personaloom.records import rejection


# -- one record ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Decision:
    """Accepted or not, every reason (`critic: reason`), the combined score in [0, 1].

    `checked` names every critic and judge that looked at the record and `failed` those
    that rejected it (`score` when only the combined threshold did): per-critic acceptance.
    `advisory` names the advisory rule critics that looked at it and `flagged` those of
    them that failed it (counted, but they do not reject).
    """

    accepted: bool
    reasons: list[str]
    score: float
    checked: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    advisory: list[str] = field(default_factory=list)
    flagged: list[str] = field(default_factory=list)


def decide(
    rule_results: Sequence[CriticResult],
    judge_scores: Mapping[str, JudgeScore],
    thresholds: Thresholds | Mapping[str, Any] | None = None,
    advisory: Collection[str] = (),
) -> Decision:
    """Hard filters (rule critics, hard judges), then the combined judge score threshold.
    A failure of a rule critic named in `advisory` is only flagged."""
    if not isinstance(thresholds, Thresholds):
        thresholds = Thresholds.from_settings(thresholds)
    reasons: list[str] = []
    failed: list[str] = []
    flagged: list[str] = []
    checked = [r.critic for r in rule_results] + list(judge_scores)
    for result in rule_results:
        if not result.passed and result.critic in advisory:
            flagged.append(result.critic)
        elif not result.passed:
            reasons.append(f"{result.critic}: {result.reason}")
            failed.append(result.critic)
    for name, minimum in thresholds.hard_judges.items():
        verdict = judge_scores.get(name)
        if verdict is None:
            continue  # judge not applicable to this record
        if verdict.score is None:
            if thresholds.judge_failure == "reject":
                reasons.append(f"{name}: judge_failed: {verdict.error}")
                failed.append(name)
        elif verdict.score < minimum:
            reasons.append(f"{name}: low_score: {verdict.score} < {minimum}: {verdict.rationale}")
            failed.append(name)
    score = combined_score(judge_scores, thresholds.weights)
    if score is None:
        score = 1.0 if not failed else 0.0  # no judge ran: the rules alone decide
    elif not failed:
        checked.append("score")
        if score < thresholds.min_score:
            reasons.append(f"score: below_threshold: {score:.3f} < {thresholds.min_score}")
            failed.append("score")
    advised = [r.critic for r in rule_results if r.critic in advisory]
    return Decision(not failed, reasons, round(score, 4), checked, failed, advised, flagged)


def combined_score(
    judge_scores: Mapping[str, JudgeScore], weights: Mapping[str, float] | None = None
) -> float | None:
    """Weighted mean of the judges' normalized scores (failed judgements left out)."""
    weights = weights or {}
    total = weight_sum = 0.0
    for name, verdict in judge_scores.items():
        if verdict.normalized is None:
            continue
        w = float(weights.get(name, 1.0))
        total += w * verdict.normalized
        weight_sum += w
    return total / weight_sum if weight_sum else None


def record_scores(judge_scores: Mapping[str, JudgeScore], decision: Decision) -> dict[str, float]:
    """The `scores` column of a kept record: each judge's 1-5 score and the combined score."""
    scores = {
        f"judge_{name}": float(v.score) for name, v in judge_scores.items() if v.score is not None
    }
    scores["critic_score"] = float(decision.score)
    return scores


def rejection_rows(
    record: Mapping[str, Any],
    kind: str,
    stage: str,
    rule_results: Sequence[CriticResult],
    judge_scores: Mapping[str, JudgeScore],
    decision: Decision,
    raw: str = "",
) -> list[dict[str, Any]]:
    """Rows of the rejected table (schema REJECTED) for a rejected record: one per reason."""
    if decision.accepted:
        return []
    rid = record_id(record, kind)
    rules = {r.critic: r for r in rule_results}
    rows = []
    for critic, reason in zip(decision.failed, decision.reasons, strict=True):
        rule = rules.get(critic)
        verdict = judge_scores.get(critic)
        if rule is not None:
            score = rule.score
        elif verdict is not None:
            score = None if verdict.score is None else float(verdict.score)
        else:
            score = decision.score
        rows.append(
            rejection(
                rid,
                kind,
                stage,
                critic,
                re.sub(rf"^{re.escape(critic)}: ", "", reason),
                score=score,
                raw=raw or (verdict.raw if verdict is not None and verdict.raw else ""),
            )
        )
    return rows


# -- one critic pass over a batch ----------------------------------------------------------
@dataclass
class Review:
    """Everything the critic said about one record."""

    record: dict[str, Any]
    rules: list[CriticResult]
    judges: dict[str, JudgeScore]
    decision: Decision

    def scores(self) -> dict[str, float]:
        return record_scores(self.judges, self.decision)

    def rejection_rows(
        self, kind: str, stage: str = "critic", raw: str = ""
    ) -> list[dict[str, Any]]:
        return rejection_rows(self.record, kind, stage, self.rules, self.judges, self.decision, raw)


def review_records(
    engine: Engine | None,
    prompts: PromptLibrary | None,
    critics: Sequence[RuleCritic],
    records: Sequence[dict[str, Any]],
    kind: str,
    *,
    judges: Sequence[str] | None = None,
    **options: Any,
) -> list[Review]:
    """`review_flow` over `records` on `engine` (its judges in one engine call). No engine:
    the rules alone."""
    flow = review_flow(
        prompts, critics, records, kind, judges=[] if engine is None else judges, **options
    )
    if engine is None:
        try:
            next(flow)
        except StopIteration as done:
            return done.value
        raise AssertionError("a review without judges asked the engine")
    (reviews,) = run_flows(engine, [flow])
    return reviews


def review_flow(
    prompts: PromptLibrary | None,
    critics: Sequence[RuleCritic],
    records: Sequence[dict[str, Any]],
    kind: str,
    *,
    judges: Sequence[str] | None = None,
    thresholds: Thresholds | Mapping[str, Any] | None = None,
    seed: int = 0,
    personas: Mapping[str, dict[str, Any]] | None = None,
    earlier: Sequence[dict[str, Any]] = (),
    **judge_options: Any,
) -> Generator[list[GenerationRequest], list[Completion], list[Review]]:
    """One critic pass as a flow (`personaloom.engine.flows`): rule critics on every
    record, then the LLM judges (one step) only on the records every rule passed (hard
    filters first: no tokens spent on a record already rejected), then `decide`.
    `judges=[]` runs the rules alone. Rule critics in mode `advisory` only flag (an
    unresolved `auto` filters). Rules and judges look at one record at a time, so a record
    gets the same review alone (in its own flow, as soon as it is written) or in a batch."""
    if not isinstance(thresholds, Thresholds):
        thresholds = Thresholds.from_settings(thresholds)
    rules = run_rule_critics(critics, records, kind, personas=personas)
    advisory = {c.name for c in critics if c.mode == "advisory"}
    passed = [
        i
        for i, results in enumerate(rules)
        if all(r.passed or r.critic in advisory for r in results)
    ]
    judged: dict[int, dict[str, JudgeScore]] = {}
    names = list(judges) if judges is not None else list(DEFAULT_JUDGES[kind])
    if passed and names:
        if prompts is None:
            raise ValueError("judging needs the prompt library")
        scores = yield from judge_flow(
            prompts,
            [records[i] for i in passed],
            kind,
            names,
            seed,
            personas=personas,
            earlier=earlier,
            **judge_options,
        )
        judged = dict(zip(passed, scores, strict=True))
    return [
        Review(
            record,
            rules[i],
            judged.get(i, {}),
            decide(rules[i], judged.get(i, {}), thresholds, advisory),
        )
        for i, record in enumerate(records)
    ]


# -- per-round report ----------------------------------------------------------------------
def acceptance_report(
    decisions_by_round: Mapping[int, Sequence[Decision]] | Sequence[Sequence[Decision]],
) -> dict[str, Any]:
    """Per round and overall: records, accepted, acceptance rate, mean score, and for each
    critic/judge how many records it checked, how many it rejected (an advisory critic:
    flagged) and its acceptance rate (the share it passed, whatever its mode)."""
    items = (
        sorted(decisions_by_round.items())
        if isinstance(decisions_by_round, Mapping)
        else list(enumerate(decisions_by_round))
    )
    rounds = [{"round": r, **_summary(decisions)} for r, decisions in items]
    every = [d for _, decisions in items for d in decisions]
    return {"rounds": rounds, "total": _summary(every)}


def _summary(decisions: Sequence[Decision]) -> dict[str, Any]:
    n = len(decisions)
    accepted = sum(d.accepted for d in decisions)
    critics: dict[str, dict[str, Any]] = {}
    for d in decisions:
        for name in d.checked:
            critics.setdefault(name, {"checked": 0, "rejected": 0})["checked"] += 1
        for name in set(d.failed):
            critics.setdefault(name, {"checked": 0, "rejected": 0})["rejected"] += 1
        for name in set(d.advisory):
            critics[name]["advisory"] = True
            critics[name].setdefault("flagged", 0)
        for name in set(d.flagged):
            critics[name]["flagged"] += 1
    for c in critics.values():
        not_passed = c["rejected"] + c.get("flagged", 0)
        c["acceptance"] = round(1 - not_passed / c["checked"], 4) if c["checked"] else None
    return {
        "records": n,
        "accepted": accepted,
        "acceptance": round(accepted / n, 4) if n else None,
        "mean_score": round(sum(d.score for d in decisions) / n, 4) if n else None,
        "critics": dict(sorted(critics.items())),
    }
