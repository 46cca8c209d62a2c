"""Exactly N kept personas: the replacement plan (which ids replace which slots, within the
budget) and quota aliases, without a model. tests/test_exact_n.py runs it on the engine."""

from __future__ import annotations

import numpy as np
import pytest

from personaloom.run.replacements import (
    ReplacementPlan,
    budget,
    extend,
    shortfall_line,
    slots,
    unfilled_slots,
)
from personaloom.taxonomy import parse_taxonomy
from personaloom.taxonomy.quotas import plan_quotas


def _extend(plan, kept, *, personas=6, shard=(0, 1), max_candidates=18, batch_size=2, first=3):
    return extend(
        plan,
        slot_ids=slots(personas, *shard),
        kept=kept,
        personas=personas,
        shard_index=shard[0],
        shard_count=shard[1],
        max_candidates=max_candidates,
        batch_size=batch_size,
        first_batch=first,
    )


@pytest.mark.parametrize(("n", "parts"), [(10, 3), (7, 2), (5, 5), (3, 4), (100, 7)])
def test_each_shard_owns_its_exact_share(n, parts):
    shares = [len(slots(n, k, parts)) for k in range(parts)]
    assert sum(shares) == n
    assert max(shares) - min(shares) <= 1
    assert sorted(i for k in range(parts) for i in slots(n, k, parts)) == list(range(n))


def test_unfilled_slots_get_the_next_ids_of_the_shard_in_slot_order():
    plan = ReplacementPlan()
    new = _extend(plan, kept={0, 2, 3, 5}, personas=6)  # slots 1 and 4 not kept
    assert new == [3]
    assert plan.batches == {3: [6, 7]}
    assert plan.slot_of == {6: 1, 7: 4}
    # 6 kept, 7 rejected again: only slot 4 gets a new candidate, the next unused id
    assert _extend(plan, kept={0, 2, 3, 5, 6}, personas=6, first=4) == [4]
    assert plan.batches[4] == [8] and plan.slot_of[8] == 4
    assert _extend(plan, kept={0, 2, 3, 5, 6, 8}, personas=6, first=5) == []
    assert not plan.exhausted


def test_a_sharded_run_replaces_with_ids_of_its_own_shard():
    plan = ReplacementPlan()
    assert slots(10, 1, 3) == [1, 4, 7]
    _extend(plan, kept={4}, personas=10, shard=(1, 3), first=1)
    assert plan.ids == [10, 13]
    assert all(i % 3 == 1 and i >= 10 for i in plan.ids)


def test_a_slot_emptied_later_by_dedup_is_filled_again():
    plan = ReplacementPlan()
    _extend(plan, kept={1}, personas=2, first=1)  # slot 0 not kept -> id 2
    assert plan.slot_of == {2: 0}
    # the replacement was kept, but now slot 1's persona lost to a duplicate of it
    assert unfilled_slots([0, 1], plan, kept={2}) == [1]
    assert _extend(plan, kept={2}, personas=2, first=2) == [2]
    assert plan.slot_of[3] == 1


def test_the_budget_stops_replacements_and_says_so():
    plan = ReplacementPlan()
    assert budget(None, 4) == 12 and budget(5, 4) == 5
    new = _extend(plan, kept=set(), personas=4, max_candidates=6, batch_size=8)
    assert plan.ids == [4, 5]  # room for 2 of the 4 unfilled slots
    assert new and not plan.exhausted
    assert _extend(plan, kept=set(), personas=4, max_candidates=6, first=4) == []
    assert plan.exhausted
    assert shortfall_line(1, 4, True) == "1 of 4 kept, budget exhausted"
    assert shortfall_line(4, 4, True) is None


def test_the_plan_round_trips_through_the_run_state(tmp_path):
    plan = ReplacementPlan()
    _extend(plan, kept={0}, personas=3)
    plan.exhausted = True
    plan.save(tmp_path)
    again = ReplacementPlan.load(tmp_path)
    assert (again.batches, again.slot_of, again.exhausted) == (
        plan.batches,
        plan.slot_of,
        plan.exhausted,
    )


TAXONOMY = """
name: tiny
version: "1"
anchors: [who.gender]
categories:
  who:
    gender: {values: [female, male, nonbinary]}
    mood: {values: [calm, busy]}
"""


def test_a_replacement_takes_the_quota_values_of_its_slot():
    tax = parse_taxonomy(TAXONOMY)
    plan = plan_quotas(tax, ["who.gender=uniform"], n=6, seed=3)
    wanted = {i: plan.value_for("who.gender", i) for i in range(6)}
    assert sorted(wanted.values()) == ["female"] * 2 + ["male"] * 2 + ["nonbinary"] * 2
    aliased = plan.with_aliases({6: 4, 9: 1})
    assert aliased.value_for("who.gender", 6) == wanted[4]
    assert aliased.value_for("who.gender", 9) == wanted[1]
    assert plan.value_for("who.gender", 6) is None  # without the alias: free
    codes = aliased.forced_codes(tax, np.array([6, 9, 7]))["who.gender"]
    values = tax.leaf("who.gender").values
    assert values[int(codes[0])] == wanted[4] and values[int(codes[1])] == wanted[1]
    assert np.isnan(codes[2])
