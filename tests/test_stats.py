"""`personaloom stats DIR [--json]`: the report a user reads after a run."""

from __future__ import annotations

import json

from personaloom.cli import main
from tests.test_metrics import make_dataset


def test_stats_prints_counts_rejections_and_metrics(tmp_path, capsys):
    out = make_dataset(tmp_path)
    assert main(["stats", str(out), "--no-embeddings"]) == 0
    text = capsys.readouterr().out
    assert "human@0.1.0" in text and "complete" in text
    for expected in (
        "personas",
        "rejected_records",
        "Top rejection reasons",
        "too_short",
        "exact_duplicate",
    ):
        assert expected in text
    row = next(line for line in text.splitlines() if "distinct.narratives.distinct_1" in line)
    assert "0.7" in row and "distinct 1-grams / all 1-grams of the persona narratives" in row
    assert "semantic_uniqueness: not computed: skipped" in text


def test_stats_json_holds_the_metrics_and_the_run(tmp_path, capsys):
    out = make_dataset(tmp_path)
    assert main(["stats", str(out), "--json", "--no-embeddings"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["run"]["taxonomy"] == "human@0.1.0"
    assert report["metrics"]["counts"]["personas"] == 3
    assert report["metrics"]["rejections"]["by_stage"] == {"critic": 3, "dedup": 2, "enrich": 1}
    assert report["metrics"]["definitions"]["taxonomy_coverage.coverage"]


def test_stats_computes_semantic_uniqueness_by_default(tmp_path, capsys):
    out = make_dataset(tmp_path)
    assert main(["stats", str(out), "--json"]) == 0
    semantic = json.loads(capsys.readouterr().out)["metrics"]["semantic_uniqueness"]
    assert 0.0 <= semantic["value"] <= 1.0 and semantic["embedded"] == 3


def test_stats_on_a_missing_folder_exits_2_naming_it(tmp_path, capsys):
    missing = tmp_path / "no-such-run"
    assert main(["stats", str(missing)]) == 2
    err = capsys.readouterr().err
    assert f"{missing}: no such dataset folder" in err


def test_stats_on_a_file_exits_2(tmp_path, capsys):
    path = tmp_path / "file.parquet"
    path.write_text("x")
    assert main(["stats", str(path)]) == 2
    assert "not a folder" in capsys.readouterr().err


def test_stats_on_a_folder_that_is_no_dataset_exits_2(tmp_path, capsys):
    assert main(["stats", str(tmp_path)]) == 2
    assert "not a personaloom dataset folder" in capsys.readouterr().err


def test_a_fidelity_margin_outside_0_1_exits_2_naming_it(tmp_path, capsys):
    out = make_dataset(tmp_path)
    assert main(["stats", str(out), "--fidelity-margin", "10"]) == 2
    assert "--fidelity-margin 10.0: expected 0 < M < 1" in capsys.readouterr().err
    assert main(["stats", str(out), "--fidelity-min-group", "0"]) == 2
    assert "--fidelity-min-group 0: expected K >= 1" in capsys.readouterr().err
