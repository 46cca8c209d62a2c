"""`--personas N` keeps exactly N on the real engine: rejected personas are replaced by the
shard's next ids, quotas stay exact over the kept ones, and a spent budget is reported.

The project copy has one rule critic, planted here, that rejects chosen persona ids, and
no other critic and no judge: which personas the critic rejects is then known in advance.
It uses the small clinic taxonomy of tests/data (two narrative sections): exact N is the
run layer's work, and a persona of the human taxonomy costs four times the engine calls."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from personaloom.cli import main

pytestmark = pytest.mark.engine

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data" / "taxonomies"
FAST = ["--taxonomy", "clinic", "--max-tokens-section", "48", "--max-tokens-narrative", "48"]
PLUGIN = """
from personaloom.critic.rule_critics import CriticContext, CriticResult, rule_critic

REJECT = {reject!r}


@rule_critic("planted_rejection", kinds=("persona",), defaults={{}})
def planted_rejection(record: dict, ctx: CriticContext) -> CriticResult:
    if REJECT is None or record.get("index") in REJECT:
        return ctx.fail(f"planted: persona {{record.get('index')}} is rejected by the test")
    return ctx.ok()
"""
CRITICS = """
rules: {}
judges: {persona: [], conversation: []}
decision: {hard_judges: {}, judge_failure: ignore, weights: {}, min_score: 0.0}
"""


def _project(root: Path, reject: set[int] | None) -> Path:
    root.mkdir(parents=True)
    shutil.copytree(REPO / "prompts", root / "prompts")
    (root / "taxonomies").mkdir()
    shutil.copy(DATA / "clinic.yaml", root / "taxonomies")
    (root / "validators" / "critics").mkdir(parents=True)
    for rules in REPO.glob("validators/rules_*.yaml"):
        shutil.copy(rules, root / "validators")
    (root / "validators" / "critics.yaml").write_text(CRITICS)
    (root / "validators" / "critics" / "planted.py").write_text(PLUGIN.format(reject=reject))
    return root


def _manifest(out: Path) -> dict:
    return json.loads((out / ".personaloom" / "manifest.json").read_text())


def test_rejected_personas_are_replaced_and_quotas_stay_exact(engine, tmp_path):
    project = _project(tmp_path / "project", reject={0, 1})
    out = tmp_path / "corpus"
    args = ["--personas", "3", "--seed", "4", "--critic-rounds", "1", "--judges", "off", *FAST]
    args += ["--quota", "patient.age_band=adult:2,senior:1", "--batch-size", "3"]
    assert main(["generate", "--out", str(out), "--project", str(project), *args]) == 0

    table = pq.read_table(next((out / "personas").glob("train-*.parquet")))
    kept = sorted(table.column("index").to_pylist())
    assert len(kept) == 3
    assert not {0, 1} & set(kept)  # the planted rejections stay rejected
    assert all(i == 2 or i >= 3 for i in kept)  # replaced by the next ids, >= N
    bands = [
        next(a["value"] for a in attrs if a["path"] == "patient.age_band")
        for attrs in table.column("attributes").to_pylist()
    ]
    assert sorted(bands) == ["adult", "adult", "senior"]  # the quota, exact over kept
    plan = json.loads((out / ".personaloom" / "replacements.json").read_text())
    assert {int(s) for s in plan["slot_of"].values()} >= {0, 1}
    counts = _manifest(out)["counts"]
    assert counts["personas_kept"] == 3 and counts["personas_requested"] == 3
    assert counts["candidates"] == 3 + counts["replacements"] >= 5
    assert counts["budget_exhausted"] is False and _manifest(out)["shortfall"] is None
    rejected = pq.read_table(out / ".personaloom" / "rejected").to_pylist()
    planted = {r["record_id"] for r in rejected if r["critic"] == "planted_rejection"}
    assert {f"p4-{i:08d}" for i in (0, 1)} <= planted


def test_a_spent_budget_completes_with_fewer_and_says_so(engine, tmp_path, capsys):
    project = _project(tmp_path / "project", reject=None)  # rejects everyone
    out = tmp_path / "corpus"
    args = ["--personas", "2", "--seed", "4", "--critic-rounds", "1", "--judges", "off", *FAST]
    args += ["--max-candidates", "3"]
    assert main(["generate", "--out", str(out), "--project", str(project), *args]) == 0
    captured = capsys.readouterr()
    assert "0 of 2 kept, budget exhausted" in captured.err
    manifest = _manifest(out)
    assert manifest["shortfall"] == "0 of 2 kept, budget exhausted"
    assert manifest["counts"]["candidates"] == 3
    assert "0 of 2 kept, budget exhausted" in (out / "README.md").read_text()
    assert main(["stats", str(out), "--no-embeddings"]) == 0
    assert "0 of 2 kept, budget exhausted" in capsys.readouterr().out
