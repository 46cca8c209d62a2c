"""Generator-critic rounds (Synthetic-Persona-Chat style) over one batch.

Round 0 generates every persona of the batch and reviews it (rule critics, then LLM judges
on what the rules passed, then the decision). With the judges on the generating engine,
each persona is reviewed in its own flow as soon as it is written (`_write_then_review`);
judges on their own engine review the batch's personas together afterwards. Each later round regenerates only the
personas not yet accepted, with a fresh request seed and, in the prompts, the best accepted
personas so far (`fewshot.select_fewshot`) as examples. Every rejected candidate is kept as
rejection rows with its critic, score, reason and the candidate itself (`raw`, JSON).

Conversations get the same loop per persona timeline (`conversation_rounds`): a session
depends on the ones before it, so when session j is rejected the next round regenerates j
and the sessions after it and keeps those before it; a timeline still incomplete after the
last round is rejected whole (or cut to a complete prefix of at least `min_sessions`).
Their prompts carry no few-shot examples (the user simulator already carries the persona
and its memory, and a 2-4k context leaves no room).

Judge modes: `filter` (thresholds of validators/critics.yaml decide), `advisory` (judges
run and their scores are stored, only rule critics reject) and `off` (rules alone).
`auto` is advisory for the embedded SmolLM2-135M, whose 1-5 verdicts did not separate a
persona contradicting its attributes from a faithful one in our runs (see the scores
tests/test_judges_engine.py prints), and filter for every other model. Rule critics have
the same choice per critic (`mode:` in validators/critics.yaml, `resolve_rule_modes`).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from personaloom.critic.decision import (
    Decision,
    Review,
    acceptance_report,
    review_flow,
    review_records,
)
from personaloom.critic.fewshot import format_fewshot, select_fewshot
from personaloom.critic.settings import CriticConfig, Thresholds
from personaloom.engine.base import Completion, Engine, GenerationRequest
from personaloom.engine.embedded import EMBEDDED_MODEL
from personaloom.engine.flows import run_flows
from personaloom.generate.personas import PersonaDraft, PersonaFlow, persona_flows
from personaloom.generate.prompts import PromptLibrary
from personaloom.records import rejection
from personaloom.seeds import round_seed

JUDGE_MODES = ("auto", "filter", "advisory", "off")
FEWSHOT_K = 3


def resolve_judge_mode(mode: str, model: str) -> str:
    """`auto` -> `advisory` for the embedded model, `filter` otherwise."""
    if mode not in JUDGE_MODES:
        raise ValueError(f"judge mode {mode!r}: expected one of {', '.join(JUDGE_MODES)}")
    if mode == "auto":
        return "advisory" if model == EMBEDDED_MODEL else "filter"
    return mode


def resolve_rule_modes(config: CriticConfig, model: str) -> CriticConfig:
    """Each rule critic's `auto` mode made `advisory` for the embedded model, `filter`
    otherwise (the same rule as `--judges auto`)."""
    embedded = model == EMBEDDED_MODEL
    critics = [
        replace(c, mode=("advisory" if embedded else "filter") if c.mode == "auto" else c.mode)
        for c in config.critics
    ]
    return replace(config, critics=critics)


def mode_thresholds(thresholds: Thresholds, mode: str) -> Thresholds:
    """Advisory judges neither hard-filter nor gate on the combined score."""
    if mode == "advisory":
        return replace(thresholds, hard_judges={}, min_score=0.0)
    return thresholds


@dataclass
class CriticPlan:
    """What the critic stage does in a run."""

    config: CriticConfig | None  # None: no critic at all (critic_rounds == 0)
    rounds: int
    mode: str  # filter | advisory | off
    judge_engine: Engine | None = None  # the judges' own model; None: the generating one

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
    narrative: Mapping[str, str] | None = None,
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
        flows = persona_flows(
            prompts,
            drafts,
            seed=rs,
            max_tokens_section=max_tokens_section,
            max_tokens_narrative=max_tokens_narrative,
            fewshot=fewshot,
            sections=narrative,
        )
        review = None
        if plan.config is not None and plan.judge_engine is None:
            # the judges share the generating engine: each persona is judged in its own
            # flow as soon as its last section is written
            review = functools.partial(
                review_flow,
                prompts,
                plan.config.critics,
                kind="persona",
                judges=plan.judges("persona"),
                thresholds=plan.thresholds(),
                seed=rs,
            )
        written = run_flows(
            engine, [_write_then_review(d, f, engine.model_name, review) for d, f in flows]
        )
        failures = [row for rows, _ in written for row in rows]
        for row in failures:
            row["stage"] = f"{row['stage']} (round {r})"
        result.rejected += failures
        if plan.config is None:
            result.accepted += [d.record(engine.model_name) for d in drafts if d.rejected is None]
            break
        if review is not None:
            reviews = [rv for _, rv in written if rv is not None]
        else:  # the judges' own engine: the batch's personas are judged together
            reviews = review_records(
                plan.judge_engine,
                prompts,
                plan.config.critics,
                [d.record(engine.model_name) for d in drafts if d.rejected is None],
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


def _write_then_review(
    draft: PersonaDraft,
    flow: PersonaFlow,
    model: str,
    review: Callable[..., Generator[Any, Any, list[Review]]] | None,
) -> Generator[
    list[GenerationRequest], list[Completion], tuple[list[dict[str, Any]], Review | None]
]:
    """A persona's flow, then (when `review` is given and the persona was written) its
    critic pass: (rejection rows, review or None)."""
    rows = yield from flow
    if review is None or draft.rejected is not None:
        return rows, None
    (rv,) = yield from review([draft.record(model)])
    return rows, rv


Generate = Callable[
    [list[dict[str, Any]], list[int], list[list[dict[str, Any]]], int],
    tuple[list[dict[str, Any]], list[dict[str, Any]]],
]


@dataclass
class ConversationRounds(RoundsResult):
    """`RoundsResult` of the conversations: `accepted` holds complete timelines only.

    - `session_rounds`: conversation id -> the round its kept session comes from;
    - `incomplete`: persona id -> why its timeline could not be completed (`session`,
      `round`, `critic`, `reason`); such a persona is rejected whole: `rejected` holds a
      persona row for it and a row for each of its sessions that had been accepted;
    - `truncated`: persona id -> sessions kept (a complete prefix of at least
      `min_sessions`, shorter than the run's sessions).
    """

    session_rounds: dict[str, int] = field(default_factory=dict)
    incomplete: dict[str, dict[str, Any]] = field(default_factory=dict)
    truncated: dict[str, int] = field(default_factory=dict)

    def report(self) -> dict[str, Any]:
        """The acceptance report, each round with `kept` (sessions kept from that round),
        plus `session_rounds` (the round of every kept session)."""
        report = acceptance_report(self.decisions)
        kept: dict[int, int] = {}
        for r in self.session_rounds.values():
            kept[r] = kept.get(r, 0) + 1
        rows = {row["round"]: row for row in report["rounds"]}
        for r in kept:
            if r not in rows:  # no critic: round 0's sessions were not reviewed
                rows[r] = {
                    "round": r,
                    "records": 0,
                    "accepted": 0,
                    "acceptance": None,
                    "mean_score": None,
                    "critics": {},
                }
        for r, row in rows.items():
            row["kept"] = kept.get(r, 0)
        report["rounds"] = [rows[r] for r in sorted(rows)]
        report["total"]["kept"] = len(self.session_rounds)
        report["session_rounds"] = dict(sorted(self.session_rounds.items()))
        return report


def _split(conversation_id: str) -> tuple[str, int]:
    """(persona id, session) of a conversation id `<persona id>-sNN`."""
    pid, session = conversation_id.rsplit("-s", 1)
    return pid, int(session)


def conversation_rounds(
    generate: Generate,
    engine: Engine,
    prompts: PromptLibrary,
    personas: Sequence[dict[str, Any]],
    plan: CriticPlan,
    *,
    seed: int,
    sessions: int,
    min_sessions: int | None = None,
) -> ConversationRounds:
    """Complete timelines of `sessions` sessions for `personas`, reviewed per session.

    `generate(personas, starts, earlier, seed)` -> (conversations, failures) makes, for
    each persona, its sessions from `starts[i]` on, remembering the kept sessions
    `earlier[i]` (0..starts[i]-1). Round 0 generates every session; when session j of a
    persona is rejected (by generation or a critic), its sessions before j are kept and
    the next round regenerates j and the sessions after it (they depend on j), with a new
    seed and the kept sessions as memory (and as the consistency judge's earlier sessions).
    Sessions after j accepted in the same round are superseded (a rejection row says so).

    After the last round, a persona whose first rejected session j is below `min_sessions`
    (default `sessions`) is rejected whole; with j >= `min_sessions` it keeps the complete
    prefix 0..j-1. Kept sessions are always exactly 0..k-1 for some k.
    """
    need = sessions if min_sessions is None else max(1, min(min_sessions, sessions))
    rounds = max(plan.rounds, 1)
    result = ConversationRounds([], [])
    by_id = {p["persona_id"]: p for p in personas}
    kept: dict[str, list[dict[str, Any]]] = {pid: [] for pid in by_id}
    failure: dict[str, dict[str, Any]] = {}
    pending = list(personas)
    for r in range(rounds):
        rs = round_seed(seed, r)
        starts = [len(kept[p["persona_id"]]) for p in pending]
        earlier = [list(kept[p["persona_id"]]) for p in pending]
        conversations, failures = generate(pending, starts, earlier, rs)
        first: dict[str, tuple[int, str, str]] = {}  # pid -> (session, critic, reason)

        def note(cid: str, critic: str, reason: str, first=first) -> None:
            pid, j = _split(cid)
            if pid not in first or j < first[pid][0]:
                first[pid] = (j, critic, reason)

        for row in failures:
            row["stage"] = f"{row['stage']} (round {r})"
            note(row["record_id"], row["critic"], row["reason"])
        result.rejected += failures
        # sessions after a failed generation remember a session that is not kept: not reviewed
        reviewable = [
            c
            for c in conversations
            if c["persona_id"] not in first or c["session"] < first[c["persona_id"]][0]
        ]
        accepted_ids: set[str] = set()
        if plan.config is None:
            accepted_ids = {c["conversation_id"] for c in reviewable}
        elif reviewable:
            reviews = review_records(
                plan.judge_engine or engine,
                prompts,
                plan.config.critics,
                reviewable,
                "conversation",
                judges=plan.judges("conversation"),
                thresholds=plan.thresholds(),
                seed=rs,
                personas=by_id,
                earlier=[c for p in pending for c in kept[p["persona_id"]]],
            )
            result.decisions[r] = [rv.decision for rv in reviews]
            for rv in reviews:
                cid = rv.record["conversation_id"]
                if rv.decision.accepted:
                    rv.record["scores"] = rv.scores()
                    accepted_ids.add(cid)
                else:
                    rows = rv.rejection_rows(
                        "conversation", stage=f"critic (round {r})", raw=_raw(rv.record)
                    )
                    result.rejected += rows
                    note(cid, rows[0]["critic"] if rows else "critic", _reasons(rows))
        last = r + 1 >= rounds or plan.config is None
        retry = []
        for persona in pending:
            pid = persona["persona_id"]
            j = first[pid][0] if pid in first else None
            mine = sorted(
                (c for c in conversations if c["persona_id"] == pid), key=lambda c: c["session"]
            )
            for c in mine:
                cid = c["conversation_id"]
                if cid not in accepted_ids:
                    continue
                if j is None or c["session"] < j:
                    kept[pid].append(c)
                    result.session_rounds[cid] = r
                    continue
                what = "not kept" if last else "regenerated in the next round"
                result.rejected.append(
                    rejection(
                        cid,
                        "conversation",
                        f"conversation (round {r})",
                        "timeline",
                        f"superseded: session {j} of {pid} was rejected in round {r}, so "
                        f"sessions {j}..{sessions - 1} are {what}",
                        raw=_raw(c),
                    )
                )
            if j is None:
                failure.pop(pid, None)
                continue
            session, critic, reason = first[pid]
            failure[pid] = {"session": session, "round": r, "critic": critic, "reason": reason}
            retry.append(persona)
        if last or not retry:
            break
        pending = retry
    for pid, persona in by_id.items():
        if pid not in failure or len(kept[pid]) >= need:
            result.accepted += kept[pid]
            if pid in failure:
                result.truncated[pid] = len(kept[pid])
            continue
        result.incomplete[pid] = failure[pid]
        for c in kept[pid]:
            del result.session_rounds[c["conversation_id"]]
        result.rejected += timeline_rejections(persona, kept[pid], failure[pid], need, rounds)
    result.accepted.sort(key=lambda c: (c["persona_id"], c["session"]))
    return result


def incomplete_reason(info: Mapping[str, Any], need: int, rounds: int) -> str:
    """Why a persona's timeline could not be completed (its persona row's reason)."""
    j = info["session"]
    kept = {0: "no session kept", 1: "session 0 kept"}.get(j, f"sessions 0..{j - 1} kept")
    return (
        f"incomplete_timeline: session {j} still rejected in round {info['round']} "
        f"(critic rounds: {rounds}) by {info['critic']}: {info['reason']}; {kept}, "
        f"{need} needed"
    )


def timeline_rejections(
    persona: dict[str, Any],
    sessions_kept: Sequence[dict[str, Any]],
    info: Mapping[str, Any],
    need: int,
    rounds: int,
) -> list[dict[str, Any]]:
    """Rejection rows of a persona rejected whole for an incomplete timeline: the persona
    (critic: the one that rejected the failing session) and its accepted sessions."""
    pid = persona["persona_id"]
    reason = incomplete_reason(info, need, rounds)
    rows = [rejection(pid, "persona", "conversation", info["critic"], reason, raw=_raw(persona))]
    rows += [
        rejection(
            c["conversation_id"],
            "conversation",
            "conversation",
            "timeline",
            f"persona {pid} rejected: {reason}",
            raw=_raw(c),
        )
        for c in sessions_kept
    ]
    return rows


def _reasons(rows: Sequence[dict[str, Any]]) -> str:
    """The reasons of a record's rejection rows (each with its critic when there are more)."""
    if len(rows) == 1:
        return rows[0]["reason"]
    return "; ".join(f"{row['critic']}: {row['reason']}" for row in rows) or "rejected"


def _raw(record: dict[str, Any]) -> str:
    """The rejected candidate itself, so a rejection loses nothing."""
    return json.dumps(record, ensure_ascii=False, default=str)


def critic_summary(batch_reports: Sequence[dict[str, Any] | None]) -> dict[str, Any]:
    """Sum the batches' per-round reports (`RoundsResult.report()` per kind) into the
    run's: `report` has per kind and round the records reviewed, accepted, mean score,
    per critic checked/rejected and, for conversations, the sessions kept from the round; `rates` the acceptance rates the card shows (per kind:
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
                if "kept" in row:  # conversations: sessions kept from this round
                    acc["kept"] = acc.get("kept", 0) + row["kept"]
                acc["score_sum"] += (row["mean_score"] or 0.0) * row["records"]
                for name, c in row["critics"].items():
                    mine = acc["critics"].setdefault(name, {"checked": 0, "rejected": 0})
                    _add_counts(mine, c)
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
                    **({"kept": acc["kept"]} if "kept" in acc else {}),
                    "critics": {
                        name: {**c, "acceptance": _rate(_passed(c), c["checked"])}
                        for name, c in sorted(acc["critics"].items())
                    },
                }
            )
            every["records"] += n
            every["accepted"] += acc["accepted"]
            for name, c in acc["critics"].items():
                mine = every["critics"].setdefault(name, {"checked": 0, "rejected": 0})
                _add_counts(mine, c)
        report[kind] = {"rounds": rows}
        rates[kind] = {"all rounds": _rate(every["accepted"], every["records"])}
        if len(rows) > 1:
            rates[kind].update({f"round {row['round']}": row["acceptance"] for row in rows})
        rates[kind].update(
            {
                (f"{name} (advisory)" if c.get("advisory") else name): _rate(
                    _passed(c), c["checked"]
                )
                for name, c in sorted(every["critics"].items())
            }
        )
    return {"report": report, "rates": rates}


def _add_counts(total: dict[str, Any], counts: dict[str, Any]) -> None:
    total["checked"] += counts["checked"]
    total["rejected"] += counts["rejected"]
    if counts.get("advisory"):
        total["advisory"] = True
        total["flagged"] = total.get("flagged", 0) + counts.get("flagged", 0)


def _passed(counts: dict[str, Any]) -> int:
    """Records a critic passed: neither rejected nor (advisory) flagged."""
    return counts["checked"] - counts["rejected"] - counts.get("flagged", 0)


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None
