"""Skeleton sampling: determinism per (seed, index), progressive conditioning, selection mix."""

from __future__ import annotations

import collections
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from personaloom.cli import main
from personaloom.taxonomy import load_taxonomy
from personaloom.taxonomy.rules import RuleSet, load_rules
from personaloom.taxonomy.sampling import (
    SamplingSettings,
    Skeleton,
    sample_batch,
    sample_skeleton,
    sample_skeletons,
)
from personaloom.taxonomy.settings import Mix

REPO = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data" / "taxonomies"


@pytest.fixture(scope="module")
def human():
    return load_taxonomy(REPO / "taxonomies" / "human.yaml")


@pytest.fixture(scope="module")
def human_rules(human):
    return load_rules(REPO / "validators", taxonomy=human)


@pytest.fixture(scope="module")
def mini():
    return load_taxonomy(DATA / "mini.yaml")


def test_a_persona_does_not_depend_on_batch_size_order_or_restart(human, human_rules) -> None:
    deep = human.settings("deep")
    whole = list(sample_skeletons(human, 11, range(200), deep, human_rules, batch_size=200))
    small = list(sample_skeletons(human, 11, range(200), deep, human_rules, batch_size=7))
    reversed_ = list(
        sample_skeletons(human, 11, reversed(range(200)), deep, human_rules, batch_size=64)
    )[::-1]
    restarted = whole[:120] + list(sample_skeletons(human, 11, range(120, 200), deep, human_rules))
    assert whole == small == reversed_ == restarted
    assert whole[57] == sample_skeleton(human, seed=11, index=57, settings=deep, rules=human_rules)


def test_shards_reassemble_the_same_run(human, human_rules) -> None:
    quick = human.settings("quick")
    run = {sk.index: sk for sk in sample_skeletons(human, 3, range(300), quick, human_rules)}
    for n in (2, 3):
        for k in range(n):
            for sk in sample_skeletons(human, 3, range(k, 300, n), quick, human_rules):
                assert sk == run[sk.index]


def test_seed_and_index_both_matter(mini) -> None:
    a = sample_skeleton(mini, seed=1, index=0, settings="deep")
    assert a != sample_skeleton(mini, seed=2, index=0, settings="deep")
    assert a.attributes != sample_skeleton(mini, seed=1, index=1, settings="deep").attributes
    assert (a.index, a.seed, a.taxonomy) == (0, 1, "mini@0.1")


def test_anchors_come_first_then_sampling_order(human) -> None:
    for sk in sample_skeletons(human, 5, range(50), human.settings("deep")):
        paths = [p for p, _ in sk.attributes]
        present_anchors = [a for a in human.anchors if a in sk.values]
        assert paths[: len(present_anchors)] == present_anchors
        order = {leaf.path: i for i, leaf in enumerate(human.sampling_order)}
        assert [order[p] for p in paths] == sorted(order[p] for p in paths)


def test_presets_size_personas(human) -> None:
    quick = sample_batch(human, 0, range(2000), "quick").skeletons()
    deep = sample_batch(human, 0, range(2000), "deep").skeletons()
    q_attrs, q_gen = zip(*[(len(s.attributes), len(s.generated)) for s in quick], strict=True)
    d_attrs, d_gen = zip(*[(len(s.attributes), len(s.generated)) for s in deep], strict=True)
    assert 25 <= np.mean(q_attrs) <= 40 and max(q_attrs) <= 40
    assert 4 <= np.mean(q_gen) <= 8 and max(q_gen) <= 8
    assert 200 <= min(d_attrs) and max(d_attrs) <= 350
    assert 25 <= np.mean(d_gen) <= 60


def test_settings_round_trip_and_presets() -> None:
    deep = SamplingSettings.preset("deep")
    assert deep.preset == "deep" and deep.attributes_per_persona == 280
    assert SamplingSettings.from_yaml(deep.to_yaml()) == deep
    assert SamplingSettings.model_validate_json(deep.model_dump_json()) == deep
    assert SamplingSettings().preset == "quick"
    custom = SamplingSettings.preset(
        "quick", mix=Mix(near=1, mid=1, far=1), attributes_per_persona=12
    )
    assert custom.mix.far == 1 and custom.attributes_per_persona == 12


def test_taxonomy_overrides_preset_sizes(mini) -> None:
    assert mini.settings("quick").attributes_per_persona == 8
    assert mini.settings("deep").generated_per_persona == 4
    assert mini.settings("deep", attributes_per_persona=5).attributes_per_persona == 5


def _parents_of_anchors(tax) -> set[str]:
    return {tax.leaf(a).parent for a in tax.anchors}


def test_near_only_mix_stays_in_the_anchor_subcategories(human) -> None:
    settings = SamplingSettings(
        attributes_per_persona=len(human.anchors) + 6,
        focus_subcategories=0,
        mix=Mix(near=1, mid=0, far=0),
    )
    near = _parents_of_anchors(human)
    for sk in sample_skeletons(human, 2, range(200), settings):
        assert {human.leaf(p).parent for p, _ in sk.attributes} <= near


def test_far_only_mix_leaves_the_anchor_categories(human) -> None:
    budget = 12
    settings = SamplingSettings(
        attributes_per_persona=len(human.anchors) + budget,
        focus_subcategories=0,
        mix=Mix(near=0, mid=0, far=1),
    )
    touched = {human.leaf(a).root for a in human.anchors}
    far_counts = []
    for sk in sample_skeletons(human, 2, range(200), settings):
        chosen = [p for p, _ in sk.attributes if p not in human.anchors]
        deps = {d for p in chosen for d in human.leaf(p).depends_on}
        for p in chosen:
            assert human.leaf(p).root not in touched or p in deps, p
        far_counts.append(sum(human.leaf(p).root not in touched for p in chosen))
    assert np.mean(far_counts) >= 0.8 * budget  # a few are dropped by false `when`s


def test_default_mix_spreads_over_near_mid_and_far(human) -> None:
    settings = human.settings("quick")
    near_parents = _parents_of_anchors(human)
    counts = collections.Counter()
    for sk in sample_skeletons(human, 9, range(500), settings):
        for p, _ in sk.attributes:
            if p in human.anchors:
                continue
            leaf = human.leaf(p)
            counts["near" if leaf.parent in near_parents else "other"] += 1
    assert counts["near"] > 0 and counts["other"] > counts["near"]  # themes widen the focus


def test_when_conditions_are_respected(mini) -> None:
    for sk in sample_skeletons(mini, 4, range(500), "deep"):
        v = sk.values
        if any(p.startswith("work.") for p in v):
            assert v["person.role"] == "worker"
        if "taste.food.spicy" in v:
            assert v["taste.food.dish"] == "rice" and v["person.age"] >= 18
        if any(leaf.path == "work.pet_peeve" for leaf in sk.generated):
            assert v["person.role"] == "worker"


def test_conditional_tables_are_respected(mini) -> None:
    bands = {"young": (16, 29), "middle": (30, 59), "old": (60, 95)}
    roles = {
        "young": {"student", "worker"},
        "middle": {"worker", "parent"},
        "old": {"retired", "worker"},
    }
    for sk in sample_skeletons(mini, 4, range(1000), "deep"):
        band = sk.values["person.age_band"]
        lo, hi = bands[band]
        assert lo <= sk.values["person.age"] <= hi and float(sk.values["person.age"]).is_integer()
        assert sk.values["person.role"] in roles[band]


def test_a_leaf_without_its_given_context_is_absent(human) -> None:
    seen_homemaker = False
    for sk in sample_skeletons(human, 42, range(400), "quick"):
        if "career.status.occupation" in sk.values:
            assert "career.status.occupation_group" in sk.values
        if sk.values["career.status.employment_status"] in ("student", "homemaker"):
            seen_homemaker = True
            assert "career.status.occupation_group" not in sk.values
            assert "career.status.occupation" not in sk.values
    assert seen_homemaker


def test_multi_given_table_and_scale_shape_numbers(mini) -> None:
    salaries = collections.defaultdict(list)
    for sk in sample_skeletons(mini, 8, range(4000), "deep"):
        if "work.salary" in sk.values:
            x = sk.values["work.salary"]
            assert x % 100 == 0
            salaries[(sk.values["person.age_band"], sk.values["person.home.city"])].append(x)
    median = {k: float(np.median(v)) for k, v in salaries.items() if len(v) > 30}
    assert median[("old", "Lyon")] == pytest.approx(40000, rel=0.2)
    assert median[("young", "Leeds")] == pytest.approx(22000, rel=0.2)
    assert median[("middle", "Lagos")] == pytest.approx(3000, rel=0.25)  # scaled by 0.1


def test_numeric_display_has_unit_and_decimals(mini) -> None:
    seen = {}
    for sk in sample_skeletons(mini, 1, range(300), "deep"):
        seen.update(dict(sk.attributes))
        age = dict(sk.attributes)["person.age"]
        assert age == f"{int(sk.values['person.age'])} years"
    assert (
        seen["work.hours"].endswith(" h/week")
        and len(seen["work.hours"].split()[0].split(".")[1]) == 1
    )
    assert seen["person.home.rooms"].isdigit()


def test_categorical_frequencies_follow_weights(human) -> None:
    batch = sample_batch(human, 5, range(20000), "quick")
    leaf = human.leaf("demographics.age_band")
    codes = batch.V[:, leaf.index].astype(int)  # anchors: present in every persona
    bands = collections.Counter(leaf.values[c] for c in codes.tolist())
    total = sum(leaf.weights)
    for value, weight in zip(leaf.values, leaf.weights, strict=True):
        assert bands[value] / 20000 == pytest.approx(weight / total, abs=0.012)


def test_truncated_normal_mean(mini) -> None:
    hours = [
        sk.values["work.hours"]
        for sk in sample_skeletons(mini, 6, range(6000), "deep")
        if "work.hours" in sk.values
    ]
    assert len(hours) > 1000
    assert np.mean(hours) == pytest.approx(38, abs=0.6)
    assert min(hours) >= 10 and max(hours) <= 60


def test_generated_leaves_are_ordered_by_category(human) -> None:
    order = {leaf.path: i for i, leaf in enumerate(human.leaves)}
    for sk in sample_skeletons(human, 4, range(100), "deep"):
        assert all(leaf.kind == "generated" for leaf in sk.generated)
        idx = [order[leaf.path] for leaf in sk.generated]
        assert idx == sorted(idx)


def test_arrow_batch_matches_skeleton_objects(mini) -> None:
    batch = sample_batch(mini, 3, range(50), "deep")
    table = batch.to_arrow()
    assert table.num_rows == 50
    assert table.column_names == [
        "index",
        "seed",
        "taxonomy",
        "attributes",
        "generated",
        "rejected",
    ]
    rows = table.to_pylist()
    for row, sk in zip(rows, batch.skeletons(), strict=True):
        assert [(a["path"], a["value"]) for a in row["attributes"]] == sk.attributes
        assert row["generated"] == [leaf.path for leaf in sk.generated]


def test_unsatisfiable_rule_rejects_with_its_name(mini) -> None:
    from personaloom.taxonomy.rules import parse_rules

    rules, problems = parse_rules(
        "taxonomy: mini\nrules:\n  - name: never_blue\n    forbid: taste.colour == blue\n    resample: taste.colour\n"
    )
    assert not problems
    always = RuleSet(rules)
    settings = mini.settings("deep", max_rule_retries=0)
    rejected = [sk for sk in sample_skeletons(mini, 1, range(300), settings, always) if sk.rejected]
    assert rejected and all(
        sk.rejected == "never_blue" and sk.values["taste.colour"] == "blue" for sk in rejected
    )
    assert all(sk.attributes for sk in rejected)  # the last attempt is kept for the record


def test_skeleton_json_is_serialisable(mini) -> None:
    sk = sample_skeleton(mini, seed=0, index=0, settings="deep")
    assert isinstance(sk, Skeleton)
    doc = json.loads(json.dumps(sk.to_json()))
    assert doc["taxonomy"] == "mini@0.1" and doc["attributes"][0]["path"] == "person.age_band"


def test_cli_sample_prints_json_lines(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "taxonomy",
            "sample",
            str(DATA / "mini.yaml"),
            "--n",
            "5",
            "--seed",
            "4",
            "--preset",
            "deep",
            "--rules",
            str(DATA / "rules_mini.yaml"),
        ]
    )
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line)["index"] for line in lines] == [0, 1, 2, 3, 4]
    tax = load_taxonomy(DATA / "mini.yaml")
    rules = load_rules(DATA / "rules_mini.yaml", taxonomy=tax)
    assert json.loads(lines[3]) == sample_skeleton(tax, 4, 3, "deep", rules).to_json()


def test_cli_sample_bad_input_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["taxonomy", "sample", str(DATA / "mini.yaml"), "--n", "-1"]) == 2
    assert "--n -1" in capsys.readouterr().err
    assert (
        main(
            [
                "taxonomy",
                "sample",
                str(DATA / "mini.yaml"),
                "--n",
                "2",
                "--quota",
                "person.nope=uniform",
            ]
        )
        == 2
    )
    assert "unknown attribute" in capsys.readouterr().err


def test_cli_sample_streams_before_finishing() -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "personaloom.cli",
            "taxonomy",
            "sample",
            "human",
            "--n",
            "10000000",
            "--project",
            str(REPO),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=REPO,
    )
    try:
        first = proc.stdout.readline()  # arrives long before ten million personas are done
        assert json.loads(first)["index"] == 0
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.wait()
