"""Generator-critic rounds (Synthetic-Persona-Chat style) over one batch.

Round 0 generates every persona of the batch and reviews it (rule critics, then LLM judges
on what the rules passed, then the decision). Each later round regenerates only the
personas not yet accepted, with a fresh request seed and, in the prompts, the best accepted
personas so far (`fewshot.select_fewshot`) as examples. Every rejected candidate is kept as
rejection rows with its critic, score, reason and the candidate itself (`raw`, JSON).

Conversations get the same loop at the level of a persona's whole session sequence (a
session depends on the ones before it, so a rejected session means regenerating the
persona's sessions); their prompts carry no few-shot examples (the user simulator already
carries the persona and its memory, and a 2-4k context leaves no room).

Judge modes: `filter` (thresholds of validators/critics.yaml decide), `advisory` (judges
run and their scores are stored, only rule critics reject) and `off` (rules alone).
`auto` is advisory for the embedded SmolLM2-135M, whose 1-5 verdicts did not separate a
persona contradicting its attributes from a faithful one in our runs (see the scores
tests/test_judges_engine.py prints), and filter for every other model.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from personaloom.engine.base import Engine
from personaloom.engine.embedded import EMBEDDED_MODEL
from personaloom.fewshot import format_fewshot, select_fewshot
from personaloom.judges import CriticConfig, Decision, Thresholds, acceptance_report, review_records
from personaloom.personas import PersonaDraft, enrich, narrate
from personaloom.prompts import PromptLibrary

JUDGE_MODES = ("auto", "filter", "advisory", "off")
FEWSHOT_K = 3


def resolve_judge_mode(mode: str, model: str) -> str:
    """`auto` -> `advisory` for the embedded model, `filter` otherwise."""
    if mode not in JUDGE_MODES:
        raise ValueError(f"judge mode {mode!r}: expected one of {', '.join(JUDGE_MODES)}")
    if mode == "auto":
        return "advisory" if model == EMBEDDED_MODEL else "filter"
    return mode


def mode_thresholds(thresholds: Thresholds, mode: str) -> Thresholds:
    """Advisory judges neither hard-filter nor gate on the combined score."""
    if mode == "advisory":
        return replace(thresholds, hard_judges={}, min_score=0.0)
    return thresholds


def round_seed(seed: int, round_: int) -> int:
    """Round 0 keeps the run's seed (a run without critics produces the same text)."""
    if round_ == 0:
        return seed
    digest = hashlib.blake2b(f"{seed}/round/{round_}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


@dataclass
class CriticPlan:
    """What the critic stage does in a run."""

    config: CriticConfig | None  # None: no critic at all (critic_rounds == 0)
    rounds: int
    mode: str  # filter | advisory | off

    def judges(self, kind: str) -> list[str]:
        if self.config is None or self.mode == "off":
            return []
        return list(self.config.judges.get(kind, []))

    def thresholds(self) -> Thresholds:
        assert self.config is not None
        return mode_thresholds(self.config.thresholds, self.mode)


@dataclass
class RoundsResult:
    accepted: list[dict[str, Any]]
    rejected: list[dict[str, Any]]
    decisions: dict[int, list[Decision]] = field(default_factory=dict)

    def report(self) -> dict[str, Any]:
        return acceptance_report(self.decisions)


def persona_rounds(
    engine: Engine,
    prompts: PromptLibrary,
    make_drafts: Callable[[list[int]], list[PersonaDraft]],
    ids: Sequence[int],
    plan: CriticPlan,
    *,
    seed: int,
    max_tokens_section: int,
    max_tokens_narrative: int,
) -> RoundsResult:
    """Generate, review and regenerate the personas `ids` (drafts come from `make_drafts`,
    which must give persona i the same skeleton every time). Drafts that the sampler already
    rejected (`draft.rejected` set before generation) are left out: the caller records them.
    """
    result = RoundsResult([], [])
    pending = list(ids)
    pool: list[tuple[dict[str, Any], Decision]] = []
    for r in range(max(plan.rounds, 1)):
        drafts = [d for d in make_drafts(pending) if d.rejected is None]
        if not drafts:
            break
        rs = round_seed(seed, r)
        fewshot = ""
        if r > 0 and pool:
            examples = select_fewshot([p for p, _ in pool], [d for _, d in pool], FEWSHOT_K)
            fewshot = format_fewshot(examples, "persona")
        failures = enrich(
            engine, prompts, drafts, seed=rs, max_tokens=max_tokens_section, fewshot=fewshot
        )
        failures += narrate(
            engine, prompts, drafts, seed=rs, max_tokens=max_tokens_narrative, fewshot=fewshot
        )
        for row in failures:
            row["stage"] = f"{row['stage']} (round {r})"
        result.rejected += failures
        records = [d.record(engine.model_name) for d in drafts if d.rejected is None]
        if plan.config is None:
            result.accepted += records
            break
        reviews = review_records(
            engine,
            prompts,
            plan.config.critics,
            records,
            "persona",
            judges=plan.judges("persona"),
            thresholds=plan.thresholds(),
            seed=rs,
        )
        result.decisions[r] = [rv.decision for rv in reviews]
        for rv in reviews:
            if rv.decision.accepted:
                rv.record["scores"] = rv.scores()
                result.accepted.append(rv.record)
                pool.append((rv.record, rv.decision))
            else:
                result.rejected += rv.rejection_rows(
                    "persona", stage=f"critic (round {r})", raw=_raw(rv.record)
                )
        done = {p["index"] for p in result.accepted}
        pending = [i for i in pending if i not in done]
        if not pending:
            break
    result.accepted.sort(key=lambda p: p["index"])
    return result


def conversation_rounds(
    generate: Callable[
        [list[dict[str, Any]], int], tuple[list[dict[str, Any]], list[dict[str, Any]]]
    ],
    engine: Engine,
    prompts: PromptLibrary,
    personas: Sequence[dict[str, Any]],
    plan: CriticPlan,
    *,
    seed: int,
) -> RoundsResult:
    """Sessions of `personas` (`generate(personas, seed)` -> (conversations, failures)),
    reviewed per session; a persona with a rejected session has all its sessions
    regenerated in the next round, with a new seed. Each persona keeps the accepted sessions
    of its best round: the longest unbroken run of sessions from the first, then the most
    sessions, then the earliest round (the caller limits its probes to the sessions before
    the first missing one).
    """
    result = RoundsResult([], [])
    by_id = {p["persona_id"]: p for p in personas}
    pending = list(personas)
    last: dict[str, list[dict[str, Any]]] = {}
    for r in range(max(plan.rounds, 1)):
        rs = round_seed(seed, r)
        conversations, failures = generate(pending, rs)
        for row in failures:
            row["stage"] = f"{row['stage']} (round {r})"
        result.rejected += failures
        failed_sessions = {row["record_id"] for row in failures}
        accepted_ids: set[str] = set()
        if plan.config is None:
            accepted_ids = {c["conversation_id"] for c in conversations}
        else:
            reviews = review_records(
                engine,
                prompts,
                plan.config.critics,
                conversations,
                "conversation",
                judges=plan.judges("conversation"),
                thresholds=plan.thresholds(),
                seed=rs,
                personas=by_id,
            )
            result.decisions[r] = [rv.decision for rv in reviews]
            for rv in reviews:
                if rv.decision.accepted:
                    rv.record["scores"] = rv.scores()
                    accepted_ids.add(rv.record["conversation_id"])
                else:
                    result.rejected += rv.rejection_rows(
                        "conversation", stage=f"critic (round {r})", raw=_raw(rv.record)
                    )
                    failed_sessions.add(rv.record["conversation_id"])
        retry = []
        for persona in pending:
            pid = persona["persona_id"]
            mine = [
                c
                for c in conversations
                if c["persona_id"] == pid and c["conversation_id"] in accepted_ids
            ]
            if pid not in last or _better(mine, last[pid]):
                last[pid] = mine
            if any(s.startswith(f"{pid}-s") for s in failed_sessions):
                retry.append(persona)
        if plan.config is None or not retry or r + 1 >= max(plan.rounds, 1):
            break
        pending = retry
    for sessions in last.values():
        result.accepted += sessions
    return result


def _better(new: list[dict[str, Any]], old: list[dict[str, Any]]) -> bool:
    def rank(sessions: list[dict[str, Any]]) -> tuple[int, int]:
        have = {c["session"] for c in sessions}
        prefix = next(i for i in range(len(have) + 1) if i not in have)
        return prefix, len(have)

    return rank(new) > rank(old)


def _raw(record: dict[str, Any]) -> str:
    """The rejected candidate itself, so a rejection loses nothing."""
    return json.dumps(record, ensure_ascii=False, default=str)


def critic_summary(batch_reports: Sequence[dict[str, Any] | None]) -> dict[str, Any]:
    """Sum the batches' per-round reports (`RoundsResult.report()` per kind) into the
    run's: `report` has per kind and round the records reviewed, accepted, mean score and
    per critic checked/rejected; `rates` the acceptance rates the card shows (per kind:
    all rounds, each round, each critic)."""
    totals: dict[str, dict[int, dict[str, Any]]] = {}
    for report in batch_reports:
        for kind, per_kind in (report or {}).items():
            for row in per_kind.get("rounds", []):
                acc = totals.setdefault(kind, {}).setdefault(
                    row["round"], {"records": 0, "accepted": 0, "score_sum": 0.0, "critics": {}}
                )
                acc["records"] += row["records"]
                acc["accepted"] += row["accepted"]
                acc["score_sum"] += (row["mean_score"] or 0.0) * row["records"]
                for name, c in row["critics"].items():
                    mine = acc["critics"].setdefault(name, {"checked": 0, "rejected": 0})
                    mine["checked"] += c["checked"]
                    mine["rejected"] += c["rejected"]
    report: dict[str, Any] = {}
    rates: dict[str, Any] = {}
    for kind, rounds in sorted(totals.items()):
        rows = []
        every = {"records": 0, "accepted": 0, "critics": {}}
        for r, acc in sorted(rounds.items()):
            n = acc["records"]
            rows.append(
                {
                    "round": r,
                    "records": n,
                    "accepted": acc["accepted"],
                    "acceptance": _rate(acc["accepted"], n),
                    "mean_score": round(acc["score_sum"] / n, 4) if n else None,
                    "critics": {
                        name: {**c, "acceptance": _rate(c["checked"] - c["rejected"], c["checked"])}
                        for name, c in sorted(acc["critics"].items())
                    },
                }
            )
            every["records"] += n
            every["accepted"] += acc["accepted"]
            for name, c in acc["critics"].items():
                mine = every["critics"].setdefault(name, {"checked": 0, "rejected": 0})
                mine["checked"] += c["checked"]
                mine["rejected"] += c["rejected"]
        report[kind] = {"rounds": rows}
        rates[kind] = {"all rounds": _rate(every["accepted"], every["records"])}
        if len(rows) > 1:
            rates[kind].update({f"round {row['round']}": row["acceptance"] for row in rows})
        rates[kind].update(
            {
                name: _rate(c["checked"] - c["rejected"], c["checked"])
                for name, c in sorted(every["critics"].items())
            }
        )
    return {"report": report, "rates": rates}


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None
