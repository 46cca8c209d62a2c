"""Population fidelity of a real run whose critic rejects one group (real engine).

The project copy has the small clinic taxonomy of tests/data and one rule critic, planted
here, that rejects every senior patient, and no other critic and no judge. With exact N and
a quota on the condition the run replaces the rejected seniors with the next ids until N
are kept: the quota stays exact over the kept personas, while the age band drifts from its
target. The fidelity report must show both: the rejected group flagged and its TV grown,
the quota'd attribute at its quota shares.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from personaloom.cli import main
from personaloom.publish import fidelity as F
from personaloom.publish.metrics import _read_config, _read_rejected

pytestmark = pytest.mark.engine

REPO = Path(__file__).resolve().parents[1]
PLUGIN = """
from personaloom.critic.rule_critics import CriticContext, CriticResult, rule_critic


@rule_critic("reject_seniors", kinds=("persona",), defaults={})
def reject_seniors(record: dict, ctx: CriticContext) -> CriticResult:
    for attribute in record.get("attributes") or []:
        if attribute["path"] == "patient.age_band" and attribute["value"] == "senior":
            return ctx.fail("planted: the test's critic rejects every senior")
    return ctx.ok()
"""
CRITICS = """
rules: {}
judges: {persona: [], conversation: []}
decision: {hard_judges: {}, judge_failure: ignore, weights: {}, min_score: 0.0}
"""
N = 4
QUOTA = "patient.condition=asthma:0.5,back pain:0.5"
BAND, GROUP = "patient.age_band", "senior"
DATA = REPO / "tests" / "data" / "taxonomies"


def _project(root: Path) -> Path:
    root.mkdir(parents=True)
    shutil.copytree(REPO / "prompts", root / "prompts")
    (root / "taxonomies").mkdir()
    shutil.copy(DATA / "clinic.yaml", root / "taxonomies")
    (root / "validators" / "critics").mkdir(parents=True)
    for rules in REPO.glob("validators/rules_*.yaml"):
        shutil.copy(rules, root / "validators")
    (root / "validators" / "critics.yaml").write_text(CRITICS)
    (root / "validators" / "critics" / "reject_seniors.py").write_text(PLUGIN)
    return root


def _values(table, path: str) -> list[str]:
    return [
        next(a["value"] for a in attrs if a["path"] == path)
        for attrs in table.column("attributes").to_pylist()
    ]


def test_a_critic_that_rejects_seniors_is_flagged_and_quotas_stay_exact(
    engine, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv(F.CACHE_ENV, str(tmp_path / "cache"))
    project = _project(tmp_path / "project")
    out = tmp_path / "corpus"
    args = ["--personas", str(N), "--seed", "5", "--critic-rounds", "1", "--judges", "off"]
    args += ["--taxonomy", "clinic"]
    args += ["--quota", QUOTA, "--batch-size", "4", "--max-candidates", "24"]
    args += ["--max-tokens-section", "48", "--max-tokens-narrative", "48"]
    args += ["--fidelity-min-group", "1"]  # groups a small run can reach
    assert main(["generate", "--out", str(out), "--project", str(project), *args]) == 0

    table = pq.read_table(next((out / "personas").glob("train-*.parquet")))
    assert table.num_rows == N  # exact N ...
    assert GROUP not in _values(table, BAND)
    conditions = Counter(_values(table, "patient.condition"))
    assert conditions == {"asthma": N // 2, "back pain": N // 2}  # ... and the quota exact

    manifest = json.loads((out / ".personaloom" / "manifest.json").read_text())
    report = manifest["metrics"]["fidelity"]
    assert "summary" in report, report
    assert report["summary"]["sampled"]["personas"] == manifest["counts"]["candidates"]
    assert report["summary"]["released"]["personas"] == N
    band = {r["value"]: r for r in report["anchors"][BAND]}
    assert band[GROUP]["released"] == 0.0 and band[GROUP]["target"] > 0.3
    assert band[GROUP]["sampled"] > 0  # the sampler drew seniors; the critic took them out
    condition = {r["value"]: r for r in report["anchors"]["patient.condition"]}
    assert {v: r["target"] for v, r in condition.items() if r["target"]} == {
        "asthma": 0.5,
        "back pain": 0.5,
    }
    assert condition["asthma"]["released"] == condition["back pain"]["released"] == 0.5
    senior = next(
        g for g in report["critic_bias"]["groups"] if g["attribute"] == BAND and g["value"] == GROUP
    )
    assert senior["acceptance"] == 0.0 and senior["reviewed"] >= 1
    assert report["critic_bias"]["min_group"] == 1  # the run's own setting
    assert f"{BAND}={GROUP}" in report["critic_bias"]["flagged"]

    # the same report with a minimum group size a small run can reach: the group is flagged
    # and the age band's TV grows from the sampled candidates to the released personas
    sampling = F.run_sampling(out, manifest)
    assert isinstance(sampling, F.RunSampling), sampling
    small = F.fidelity_report(
        sampling,
        _read_config(out, "personas", ("persona_id", "attributes")),
        _read_rejected(out / ".personaloom" / "rejected"),
        min_group=1,
    )
    assert f"{BAND}={GROUP}" in small["critic_bias"]["flagged"]
    band_tv = _band_tv(small)
    assert band_tv["released"] > band_tv["sampled"]

    card = (out / "README.md").read_text()
    assert "### Population fidelity" in card and "charts/critic_bias.png" in card
    capsys.readouterr()  # generate's own summary
    assert main(["stats", str(out), "--json", "--no-embeddings"]) == 0
    stats = json.loads(capsys.readouterr().out)["metrics"]["fidelity"]
    assert stats["critic_bias"]["groups"] == report["critic_bias"]["groups"]
    assert stats["critic_bias"]["flagged"] == report["critic_bias"]["flagged"]
    # stats may look again with another minimum group size: no group is that large here
    assert main(["stats", str(out), "--json", "--no-embeddings", "--fidelity-min-group", "99"]) == 0
    again = json.loads(capsys.readouterr().out)["metrics"]["fidelity"]["critic_bias"]
    assert again["min_group"] == 99 and again["flagged"] == []


def _band_tv(report: dict) -> dict[str, float]:
    """The age band's TV to its target at each point, from the anchor shares."""
    rows = report["anchors"][BAND]
    return {
        point: 0.5 * sum(abs((r[point] or 0.0) - (r["target"] or 0.0)) for r in rows)
        for point in F.POINTS
    }
