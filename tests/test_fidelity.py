"""Population fidelity: target distribution, TV at three points, critic bias (no engine).

Run folders are planted from the sampler itself: every candidate's skeleton is sampled as a
run would, a planted critic rejects some of them, a few released personas are marked as
duplicates, and the rest become persona shards. The fidelity report must find what was
planted.
"""

from __future__ import annotations

import json
import math
import shutil
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest

from personaloom import schema as S
from personaloom.cli import main
from personaloom.publish import fidelity as F
from personaloom.publish.metrics import compute_metrics
from personaloom.records import rejection, rejections_table, to_table
from personaloom.taxonomy.loader import load_taxonomy
from personaloom.taxonomy.quotas import plan_quotas
from personaloom.taxonomy.rules import load_rules
from personaloom.taxonomy.sampling import sample_skeletons

DATA = Path(__file__).parent / "data" / "taxonomies"
SEED = 7

Critic = Callable[[dict[str, str]], str | None]


def make_project(root: Path) -> Path:
    """A corpus project with the mini taxonomy and its rules."""
    project = root / "project"
    (project / "taxonomies").mkdir(parents=True)
    (project / "validators").mkdir()
    shutil.copy(DATA / "mini.yaml", project / "taxonomies" / "mini.yaml")
    shutil.copy(DATA / "rules_mini.yaml", project / "validators" / "rules_mini.yaml")
    return project


def make_run(
    root: Path,
    n: int,
    *,
    critic: Critic | None = None,
    duplicate_every: int = 0,
    quotas: list[str] | None = None,
    preset: str = "quick",
    seed: int = SEED,
) -> Path:
    """A finished run folder of `n` candidates (ids 0..n-1) of the mini taxonomy.

    `critic(values)` returns a rejection reason or None; every `duplicate_every`-th persona
    the critic accepts is removed as a duplicate."""
    project = make_project(root)
    tax = load_taxonomy(project / "taxonomies" / "mini.yaml")
    rules = load_rules([project / "validators" / "rules_mini.yaml"], taxonomy=tax)
    plan = plan_quotas(tax, quotas, n=n, seed=seed) if quotas else None
    out = root / "run"
    (out / "personas").mkdir(parents=True)
    state = out / ".personaloom"
    (state / "rejected").mkdir(parents=True)
    personas, rejected, accepted = [], [], 0
    for sk in sample_skeletons(tax, seed, range(n), preset, rules=rules, quota_plan=plan):
        pid = S.persona_id(seed, sk.index)
        values = {p: str(v) for p, v in sk.values.items()}
        if sk.rejected:
            rejected.append(rejection(pid, "persona", "sample", "rules", sk.rejected))
            continue
        reason = critic(values) if critic else None
        if reason:
            rejected.append(rejection(pid, "persona", "critic (round 0)", "planted", reason))
            continue
        accepted += 1
        if duplicate_every and accepted % duplicate_every == 0:
            rejected.append(rejection(pid, "persona", "dedup", "dedup", "near_duplicate of x"))
            continue
        personas.append(
            {
                "persona_id": pid,
                "seed": seed,
                "index": sk.index,
                "taxonomy": tax.ref,
                "attributes": [
                    {"path": p, "value": v, "source": "sampled"} for p, v in sk.attributes
                ]
                + [{"path": "person.home.view", "value": "a park", "source": "generated"}],
                "narrative": f"Persona {sk.index} lives a life.",
                "sections": {},
                "model": "m",
                "scores": {},
            }
        )
    pq.write_table(
        to_table(personas, S.PERSONAS), out / "personas" / "train-00000-of-00001.parquet"
    )
    pq.write_table(rejections_table(rejected), state / "rejected" / "b000000.parquet")
    config = {
        "taxonomy": "mini",
        "seed": seed,
        "personas": n,
        "preset": preset,
        "quotas": quotas or [],
    }
    manifest = {
        "taxonomy": tax.ref,
        "taxonomy_leaves": len(tax.leaves),
        "status": "complete",
        "config": config,
        "project": str(project),
    }
    (state / "manifest.json").write_text(json.dumps(manifest))
    return out


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    """One Monte Carlo cache for this module's tests, away from the user's."""
    monkeypatch.setenv(F.CACHE_ENV, str(tmp_path_factory.getbasetemp() / "fidelity-cache"))


def reject_students(values: dict[str, str]) -> str | None:
    return "planted: students" if values.get("person.role") == "student" else None


def _report(out: Path, **kwargs) -> dict:
    manifest = json.loads((out / ".personaloom" / "manifest.json").read_text())
    metrics = compute_metrics(out, embeddings=False)
    assert "reason" not in metrics["fidelity"], metrics["fidelity"]
    if kwargs:
        from personaloom.publish.metrics import _read_config, _read_rejected

        personas = _read_config(out, "personas", ("persona_id", "attributes"))
        rejected = _read_rejected(out / ".personaloom" / "rejected")
        return F.population_fidelity(out, manifest, personas, rejected, **kwargs)
    return metrics["fidelity"]


def _row(rows: list[dict], path: str) -> dict:
    return next(r for r in rows if r["path"] == path)


# -- the target ------------------------------------------------------------------------------
def exact_mini_shares() -> dict[str, dict[str, float]]:
    """The mini taxonomy's anchor shares worked out by hand from its tables."""
    third = 1 / 3
    role = {
        "student": third * 0.6,
        "worker": third * (0.4 + 0.8 + 0.1),
        "parent": third * 0.2,
        "retired": third * 0.9,
    }
    return {"person.age_band": {"young": third, "middle": third, "old": third}, "person.role": role}


def test_target_matches_the_exact_shares_within_monte_carlo_error(tmp_path):
    out = make_run(tmp_path, 50)
    sampling = F.run_sampling(out, json.loads((out / ".personaloom/manifest.json").read_text()))
    assert isinstance(sampling, F.RunSampling)
    sampling.rules = load_rules([], taxonomy=sampling.taxonomy)  # exact shares hold without rules
    target = F.target_counts(sampling, size=F.MONTE_CARLO_SKELETONS, cache=False)
    shares = target.shares(sampling)
    size = F.MONTE_CARLO_SKELETONS
    for path, exact in exact_mini_shares().items():
        got = dict(shares.filter(pl.col("path") == path).select("value", "share").iter_rows())
        assert set(got) == set(exact)
        for value, p in exact.items():
            sd = math.sqrt(p * (1 - p) / size)
            assert abs(got[value] - p) < 4 * sd, (path, value, got[value], p)
    # a uniform leaf outside the anchors, present in some skeletons only
    colour = dict(
        shares.filter(pl.col("path") == "taste.colour").select("value", "share").iter_rows()
    )
    n = target.marginals.filter(pl.col("path") == "taste.colour").get_column("count").sum()
    assert 1000 < n < size
    for share in colour.values():
        assert abs(share - 1 / 3) < 4 * math.sqrt(2 / 9 / n)
    # joint of the two categorical anchors: age band x role
    joint = dict(
        shares.filter(pl.col("path") == "person.age_band x person.role")
        .select("value", "share")
        .iter_rows()
    )
    assert abs(joint["young | student"] - 0.2) < 0.006
    assert abs(joint["old | retired"] - 0.3) < 0.006
    assert "old | student" not in joint


def test_target_is_cached_per_content(tmp_path):
    out = make_run(tmp_path, 20)
    sampling = F.run_sampling(out, json.loads((out / ".personaloom/manifest.json").read_text()))
    first = F.target_counts(sampling, size=5000, cache=tmp_path / "cache")
    again = F.target_counts(sampling, size=5000, cache=tmp_path / "cache")
    assert not first.cached and again.cached
    assert first.marginals.sort("path", "value").equals(again.marginals.sort("path", "value"))
    assert first.pairs.sort("path", "value").equals(again.pairs.sort("path", "value"))
    other = F.target_counts(sampling, size=5000, seed=1, cache=tmp_path / "cache")
    assert not other.cached


def test_a_prefetched_target_is_computed_once_and_found_by_finalize(tmp_path, monkeypatch):
    """A generating run starts the target in a background thread; a report asked for
    while it runs waits for it, and one asked for later reads it from the cache."""
    monkeypatch.setenv(F.CACHE_ENV, str(tmp_path / "cache"))
    out = make_run(tmp_path, 20)
    manifest = json.loads((out / ".personaloom/manifest.json").read_text())
    sampling = F.run_sampling(out, manifest)
    computed = []
    monte_carlo = F._monte_carlo

    def counted(*args):
        computed.append(args[1:])
        return monte_carlo(*args)

    monkeypatch.setattr(F, "_monte_carlo", counted)
    thread = F.prefetch_target(out, manifest)
    meanwhile = F.target_counts(sampling)  # usually while the thread is still sampling
    thread.join(timeout=120)
    later = F.target_counts(sampling)
    assert computed == [(F.MONTE_CARLO_SKELETONS, F.MONTE_CARLO_SEED)]
    assert later.cached
    assert meanwhile.marginals.sort("path", "value").equals(later.marginals.sort("path", "value"))
    assert list((tmp_path / "cache").glob("target-*.parquet"))


def test_quota_target_is_the_quota_shares(tmp_path):
    quota = "person.age_band=young:0.5,middle:0.3,old:0.2"
    out = make_run(tmp_path, 200, quotas=[quota])
    report = _report(out)
    assert report["target"]["exact"] == ["person.age_band"]
    target = {r["value"]: r["target"] for r in report["anchors"]["person.age_band"]}
    assert target == {"young": 0.5, "middle": 0.3, "old": 0.2}
    # all 200 candidates released: the quota is exact at every point
    released = {r["value"]: r["released"] for r in report["anchors"]["person.age_band"]}
    sampled = {r["value"]: r["sampled"] for r in report["anchors"]["person.age_band"]}
    assert sampled == {"young": 0.5, "middle": 0.3, "old": 0.2}
    assert released["young"] >= 0.49  # the rules reject a few


# -- distances ------------------------------------------------------------------------------
def test_expected_tv_is_de_moivres_mean_absolute_deviation():
    rng = np.random.default_rng(0)
    for n, p in ((10, 0.3), (37, 0.05), (200, 0.5), (3, 0.9)):
        draws = rng.binomial(n, p, size=200_000)
        simulated = np.abs(draws / n - p).mean()
        exact = F.expected_tv_terms(np.array([n]), np.array([p]))[0]
        assert abs(simulated - exact) < 0.003, (n, p, simulated, exact)
    assert F.expected_tv_terms(np.array([0, 5, 5]), np.array([0.5, 0.0, 1.0])).tolist() == [0, 0, 0]


def test_tv_distance_of_hand_made_counts():
    counts = pl.DataFrame(
        {
            "point": ["released"] * 3,
            "path": ["a"] * 3,
            "value": ["x", "y", "z"],  # z is outside the target: counts fully
            "count": [5, 3, 2],
        }
    )
    target = pl.DataFrame({"path": ["a", "a"], "value": ["x", "y"], "share": [0.25, 0.75]})
    row = F.distances(counts, target).row(0, named=True)
    # 1/2 (|0.5 - 0.25| + |0.3 - 0.75| + |0.2 - 0|) = 0.45
    assert row["n"] == 10 and row["tv"] == pytest.approx(0.45)


def test_the_spread_and_z_do_not_depend_on_the_targets_row_order():
    """The null spread is simulated with a seed taken from the target's shares; it once
    took them in polars' group order, so z changed between runs of the same report."""
    counts = pl.DataFrame(
        {
            "point": ["released"] * 4 + ["sampled"] * 4,
            "path": ["a"] * 8,
            "value": ["w", "x", "y", "z"] * 2,
            "count": [50, 30, 15, 5, 40, 30, 20, 10],
        }
    )
    target = pl.DataFrame(
        {"path": ["a"] * 4, "value": ["w", "x", "y", "z"], "share": [0.4, 0.3, 0.2, 0.1]}
    )
    straight, flipped = (
        F.distances(counts, shares).sort("point").select("point", "sd_tv", "z").rows()
        for shares in (target, target.reverse())
    )
    assert straight == flipped
    # only the points asked for get a spread
    some = F.distances(counts, target, z_points=["released"]).sort("point")
    assert some.get_column("point").to_list() == ["released", "sampled"]
    assert some.get_column("sd_tv").to_list()[0] > 0
    assert some.get_column("z").to_list()[1] is None and some.get_column("sd_tv")[1] is None


# -- a planted skew --------------------------------------------------------------------------
def test_a_critic_that_rejects_one_group_grows_its_tv_and_is_flagged(tmp_path):
    out = make_run(tmp_path / "skewed", 600, critic=reject_students, duplicate_every=25)
    fair = make_run(tmp_path / "fair", 600, duplicate_every=25)
    report, baseline = _report(out), _report(fair)

    role = _row(report["worst_attributes"], "person.role")
    assert role == report["worst_attributes"][0]  # the worst attribute of the run
    assert role["tv_sampled"] < 0.06  # the sampler is faithful ...
    assert role["tv_accepted"] > 0.15 and role["tv_released"] > 0.15  # ... the critic is not
    assert role["tv_released"] > 3 * role["expected_tv_released"]
    fair_role = _row(baseline["worst_attributes"] + baseline["anchor_pairs"], "person.role")
    assert fair_role["tv_released"] < 0.06
    pair = _row(report["anchor_pairs"], "person.age_band x person.role")
    assert pair["tv_released"] > 0.15 > pair["tv_sampled"]
    summary = report["summary"]
    assert summary["released"]["anchors_mean_tv"] > summary["sampled"]["anchors_mean_tv"]

    bias = report["critic_bias"]
    assert "person.role=student" in bias["flagged"]
    student = next(g for g in bias["groups"] if g["value"] == "student")
    assert student["acceptance"] == 0.0 and student["flagged"]
    assert bias["overall_acceptance"] == pytest.approx(
        1 - student["reviewed"] / bias["reviewed"], abs=1e-4
    )
    # the young, of whom students are 60%, fall too (by more than 10 points)
    young = next(g for g in bias["groups"] if g["value"] == "young")
    assert young["flagged"] and young["difference"] < -0.1
    assert not baseline["critic_bias"]["flagged"]


def test_the_margin_and_the_minimum_group_size_are_parameters(tmp_path):
    out = make_run(tmp_path, 300, critic=reject_students)
    wide = _report(out, margin=0.9, cache=None)
    assert wide["critic_bias"]["flagged"] == [] and wide["critic_bias"]["margin"] == 0.9
    big = _report(out, min_group=10_000, cache=None)
    assert big["critic_bias"]["flagged"] == []


def test_three_points_count_the_candidates(tmp_path):
    out = make_run(tmp_path, 300, critic=reject_students, duplicate_every=10)
    report = _report(out)
    persona_rows = pl.read_parquet(out / "personas").height
    rejected = pl.read_parquet(out / ".personaloom" / "rejected")
    fates = Counter(rejected.get_column("critic").to_list())
    s = report["summary"]
    assert s["sampled"]["personas"] == 300
    assert s["released"]["personas"] == persona_rows
    assert s["accepted"]["personas"] == persona_rows + fates["dedup"]
    assert report["critic_bias"]["reviewed"] == 300 - fates["rules"]


def test_a_changed_taxonomy_is_reported_not_mismeasured(tmp_path):
    out = make_run(tmp_path, 40)
    mini = tmp_path / "project" / "taxonomies" / "mini.yaml"
    mini.write_text(
        mini.read_text().replace("young: 1, middle: 1, old: 1", "young: 5, middle: 1, old: 1")
    )
    report = compute_metrics(out, embeddings=False)["fidelity"]
    assert "do not re-sample as stored" in report["reason"]


def test_a_folder_without_a_run_configuration_says_why(tmp_path):
    from tests.test_metrics import make_dataset

    report = compute_metrics(make_dataset(tmp_path), embeddings=False)["fidelity"]
    assert report == {
        "reason": "no run configuration (manifest `config` or .personaloom/config.yaml)"
    }


# -- where it shows ---------------------------------------------------------------------------
def test_stats_json_and_text_hold_the_fidelity_tables(tmp_path, capsys):
    out = make_run(tmp_path, 300, critic=reject_students)
    assert main(["stats", str(out), "--json", "--no-embeddings"]) == 0
    report = json.loads(capsys.readouterr().out)["metrics"]["fidelity"]
    assert set(report["summary"]) == {"sampled", "accepted", "released"}
    assert report["worst_attributes"][0]["path"] == "person.role"
    assert [r["path"] for r in report["anchor_pairs"]] == ["person.age_band x person.role"]
    assert "person.role=student" in report["critic_bias"]["flagged"]
    assert {"value", "target", "sampled", "accepted", "released"} <= set(
        report["anchors"]["person.role"][0]
    )
    assert main(["stats", str(out), "--no-embeddings"]) == 0
    text = capsys.readouterr().out
    for expected in ("Population fidelity", "Worst attributes", "Anchor pairs", "Critic bias"):
        assert expected in text
    assert "student" in text and "flagged" in text


def test_card_shows_fidelity_tables_and_charts(tmp_path):
    from personaloom.publish.card import write_card

    out = make_run(tmp_path, 300, critic=reject_students)
    manifest = json.loads((out / ".personaloom" / "manifest.json").read_text())
    manifest["metrics"] = compute_metrics(out, embeddings=False)
    card = write_card(out, manifest).read_text()
    assert "## Population fidelity" in card
    assert "| person.role |" in card and "person.age_band x person.role" in card
    assert "| person.role | student |" in card  # the flagged group
    assert "charts/fidelity.png" in card and "charts/critic_bias.png" in card
    for name in ("fidelity.png", "critic_bias.png"):
        assert (out / "charts" / name).read_bytes()[:4] == b"\x89PNG"
    # the card is a function of the folder: written again, byte-identical
    before = {p.name: p.read_bytes() for p in (out / "charts").iterdir()}
    again = write_card(out, manifest).read_text()
    assert again == card
    assert before == {p.name: p.read_bytes() for p in (out / "charts").iterdir()}


def test_corpus_figures_carry_the_headline_numbers(tmp_path):
    out = make_run(tmp_path, 300, critic=reject_students)
    got = F.figures(_report(out))
    assert got["critic bias flagged groups"].startswith("person.age_band=young") or (
        "person.role=student" in got["critic bias flagged groups"]
    )
    assert got["fidelity mean TV (released)"] > got["fidelity mean TV (sampled)"]
    assert F.figures({"reason": "x"}) == {"fidelity": "x"}


def test_stats_can_skip_fidelity(tmp_path, capsys):
    out = make_run(tmp_path, 30)
    assert main(["stats", str(out), "--json", "--no-embeddings", "--no-fidelity"]) == 0
    assert json.loads(capsys.readouterr().out)["metrics"]["fidelity"] == {"reason": "skipped"}
