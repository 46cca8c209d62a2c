"""Exactly N kept personas: replacements for the rejected, within a candidate budget.

A run of `--personas N` on shard k/n owns the *slots* i < N with i mod n == k (its exact
share of N: the largest remainder of N over n). Each slot is first tried with its own id.
When every planned batch is committed, `plan_replacements` counts the slots whose latest
candidate is not kept (rejected by the sampler's rules, by the critic, rejected whole
for an incomplete timeline, or removed by the corpus dedup that finalize will apply) and
gives each such slot the next unused id i >= N with i mod n == k, in slot order, as new
batches. It repeats until every slot is filled or the budget (`max_candidates`, default
3 x the shard's share) of ids tried is spent; then the run completes with fewer and says
so ("K of N kept, budget exhausted").

A replacement takes its slot's quota values (`QuotaPlan.with_aliases`), so quotas stay
exact over the kept personas. The plan is written to the run state (atomically) before
its batches run, and is computed only from committed batches, so a killed run resumes
with the same replacement ids.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from personaloom.atomic import write_text_atomic

PLAN_FILE = "replacements.json"
DEFAULT_BUDGET_FACTOR = 3


@dataclass
class ReplacementPlan:
    """Replacement batches (batch number -> ids) and each replacement's slot."""

    batches: dict[int, list[int]] = field(default_factory=dict)
    slot_of: dict[int, int] = field(default_factory=dict)
    exhausted: bool = False

    @classmethod
    def load(cls, root: Path) -> ReplacementPlan:
        path = root / PLAN_FILE
        if not path.exists():
            return cls()
        data = json.loads(path.read_text())
        return cls(
            batches={int(b): list(ids) for b, ids in data["batches"].items()},
            slot_of={int(i): int(s) for i, s in data["slot_of"].items()},
            exhausted=bool(data.get("exhausted")),
        )

    def save(self, root: Path) -> None:
        data = {
            "batches": {str(b): ids for b, ids in sorted(self.batches.items())},
            "slot_of": {str(i): s for i, s in sorted(self.slot_of.items())},
            "exhausted": self.exhausted,
        }
        write_text_atomic(root / PLAN_FILE, json.dumps(data, indent=1) + "\n")

    @property
    def ids(self) -> list[int]:
        return [i for _, ids in sorted(self.batches.items()) for i in ids]


def slots(personas: int, shard_index: int, shard_count: int) -> list[int]:
    """The ids that make up a shard's share of `personas`, in order."""
    return list(range(shard_index, personas, shard_count))


def budget(config_max: int | None, share: int) -> int:
    return config_max if config_max is not None else DEFAULT_BUDGET_FACTOR * share


def unfilled_slots(slot_ids: list[int], plan: ReplacementPlan, kept: set[int]) -> list[int]:
    """Slots whose latest candidate (its own id, else its last replacement) is not kept."""
    latest = {s: s for s in slot_ids}
    for replacement in plan.ids:  # in the order they were assigned
        latest[plan.slot_of[replacement]] = replacement
    return [s for s in slot_ids if latest[s] not in kept]


def next_ids(
    start: int, shard_index: int, shard_count: int, used: set[int], count: int
) -> list[int]:
    """The next `count` ids >= start with i mod n == k that are not in `used`."""
    first = start + (shard_index - start) % shard_count
    out: list[int] = []
    i = first
    while len(out) < count:
        if i not in used:
            out.append(i)
        i += shard_count
    return out


def extend(
    plan: ReplacementPlan,
    *,
    slot_ids: list[int],
    kept: set[int],
    personas: int,
    shard_index: int,
    shard_count: int,
    max_candidates: int,
    batch_size: int,
    first_batch: int,
) -> list[int]:
    """Add replacement batches for the unfilled slots (within the budget) to `plan`;
    return the new batch numbers (empty when every slot is filled or the budget is spent)."""
    missing = unfilled_slots(slot_ids, plan, kept)
    if not missing:
        return []
    used = set(slot_ids) | set(plan.ids)
    room = max_candidates - len(used)
    if room <= 0:
        plan.exhausted = True
        return []
    missing = missing[:room]
    new = next_ids(personas, shard_index, shard_count, used, len(missing))
    for replacement, slot in zip(new, missing, strict=True):
        plan.slot_of[replacement] = slot
    numbers = []
    for offset in range(0, len(new), batch_size):
        number = first_batch + len(numbers)
        plan.batches[number] = new[offset : offset + batch_size]
        numbers.append(number)
    return numbers


def shortfall_line(kept: int, wanted: int, exhausted: bool) -> str | None:
    """The one line every report uses when a run kept fewer than asked."""
    if kept >= wanted:
        return None
    return f"{kept} of {wanted} kept" + (", budget exhausted" if exhausted else "")


def summary(plan: ReplacementPlan, share: int, max_candidates: int) -> dict[str, Any]:
    return {
        "candidates": share + len(plan.ids),
        "max_candidates": max_candidates,
        "replacements": len(plan.ids),
        "budget_exhausted": plan.exhausted,
    }
