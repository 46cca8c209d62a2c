"""Quotas: exact marginals by largest remainder, assignment fixed by (seed, N)."""

from __future__ import annotations

import collections
from pathlib import Path

import pytest

from personaloom.errors import UserError
from personaloom.taxonomy import load_taxonomy
from personaloom.taxonomy.quotas import largest_remainder, plan_quotas
from personaloom.taxonomy.rules import load_rules
from personaloom.taxonomy.sampling import sample_skeletons

REPO = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data" / "taxonomies"


@pytest.fixture(scope="module")
def human():
    return load_taxonomy(REPO / "taxonomies" / "human.yaml")


@pytest.mark.parametrize(
    ("n", "shares", "counts"),
    [
        (10, [1, 1, 1], [4, 3, 3]),
        (7, [0.5, 0.5], [4, 3]),
        (100, [0.333, 0.333, 0.334], [33, 33, 34]),
        (3, [5, 0, 1], [3, 0, 0]),
        (0, [1, 2], [0, 0]),
    ],
)
def test_largest_remainder_counts(n: int, shares: list[float], counts: list[int]) -> None:
    assert largest_remainder(n, shares) == counts


def test_run_marginals_match_the_quota_exactly(human) -> None:
    n = 997
    plan = plan_quotas(
        human,
        ["demographics.age_band=uniform", "demographics.gender=woman:0.5,man:0.5"],
        n=n,
        seed=3,
    )
    target = plan.counts
    assert sum(target["demographics.age_band"].values()) == n
    assert set(target["demographics.age_band"].values()) == {110, 111}
    assert target["demographics.gender"] == {"woman": 499, "man": 498}
    rules = load_rules(REPO / "validators", taxonomy=human)
    seen = collections.defaultdict(collections.Counter)
    for sk in sample_skeletons(human, 3, range(n), "quick", rules, plan):
        for path in target:
            seen[path][sk.values[path]] += 1
        # forced values keep their dependants consistent: age follows the forced band
        lo, _, hi = sk.values["demographics.age_band"].partition("-")
        if hi:
            assert int(lo) <= sk.values["demographics.age"] <= int(hi)
    for path, counts in target.items():
        assert dict(seen[path]) == {v: c for v, c in counts.items() if c}


def test_assignment_depends_only_on_seed_and_n(human) -> None:
    a = plan_quotas(human, ["demographics.age_band=uniform"], n=500, seed=1)
    b = plan_quotas(human, ["demographics.age_band=uniform"], n=500, seed=1)
    c = plan_quotas(human, ["demographics.age_band=uniform"], n=500, seed=2)
    values = [a.value_for("demographics.age_band", i) for i in range(500)]
    assert values == [b.value_for("demographics.age_band", i) for i in range(500)]
    assert values != [c.value_for("demographics.age_band", i) for i in range(500)]
    assert a.counts == c.counts
    assert a.value_for("demographics.age_band", 500) is None  # outside the run


def test_shards_together_meet_the_quota(human) -> None:
    n = 300
    plan = plan_quotas(
        human, ["career.status.employment_status=student:1,retired:1,homemaker:1"], n=n, seed=5
    )
    seen = collections.Counter()
    for k in range(3):
        shard_plan = plan_quotas(
            human, ["career.status.employment_status=student:1,retired:1,homemaker:1"], n=n, seed=5
        )
        for sk in sample_skeletons(human, 5, range(k, n, 3), "quick", None, shard_plan):
            seen[sk.values["career.status.employment_status"]] += 1
    assert seen == collections.Counter(plan.counts["career.status.employment_status"])


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("demographics.age_band", "expected PATH=uniform"),
        ("demographics.nope=uniform", "unknown attribute"),
        ("demographics.age=uniform", "quotas apply to categorical"),
        ("demographics.gender=robot:1", "'robot' is not a value"),
        ("demographics.gender=woman:lots", "is not a number"),
        ("demographics.gender=woman:-1", "must be >= 0"),
        ("demographics.gender=woman:0,man:0", "shares sum to 0"),
        ("demographics.gender=woman", "is not value:share"),
    ],
)
def test_bad_quota_specs_are_user_errors(human, spec: str, fragment: str) -> None:
    with pytest.raises(UserError) as info:
        plan_quotas(human, [spec], n=10, seed=0)
    assert f"--quota {spec}" in str(info.value) and fragment in str(info.value)


def test_quota_forces_a_value_even_under_a_condition() -> None:
    tax = load_taxonomy(DATA / "mini.yaml")
    plan = plan_quotas(tax, ["taste.food.spicy=hot:1"], n=40, seed=0)
    got = [
        sk.values.get("taste.food.spicy")
        for sk in sample_skeletons(tax, 0, range(40), "quick", None, plan)
    ]
    assert got == ["hot"] * 40
