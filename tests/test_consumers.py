"""Consumer round trip: release to a local repo, serve it like the Hub, read it back.

Two releases (v1.0.0, then v1.1.0 with other personas) go into a git repository under
`mirrors/datasets/acme/personas`; olah (real, offline mode, on 127.0.0.1) serves it
through the Hub API, and `datasets.load_dataset("acme/personas", CONFIG,
revision=TAG)` in a fresh process with `HF_ENDPOINT` pointing at olah must return exactly
the released rows of that tag. polars, pandas and DuckDB read the released shards from
the repository's files and must agree with each other and with what was released.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest

from personaloom.cli import main
from tests.support import olah
from tests.support.dataset import make_dataset

REPO_ID = "acme/personas"

CONSUMER = """
import json, sys
import datasets
out = {}
for spec in sys.argv[2:]:
    revision, config = spec.split(":")
    ds = datasets.load_dataset(sys.argv[1], config, split="train", revision=revision)
    out[spec] = ds.to_list()
print(json.dumps(out, default=str))
"""


MAP_COLUMNS = ("sections", "scores")


def normal(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """JSON-normalised rows: maps (which `datasets` loads as [key, value] pairs) as lists."""
    return json.loads(json.dumps(rows, default=str))


def assert_same_rows(loaded: list[dict[str, Any]], released: pa.Table) -> None:
    """Every column equal; map columns key for key, floats within one rounding step.

    `datasets` has no Arrow map type: the card declares map columns as `json`, and its
    JSON reader (pandas' ujson) parses e.g. 0.072 as 0.07200000000000001.
    """
    expected = normal(released.to_pylist())
    assert len(loaded) == len(expected)
    for got, want in zip(loaded, expected, strict=True):
        plain = [c for c in want if c not in MAP_COLUMNS]
        assert {c: got[c] for c in plain} == {c: want[c] for c in plain}
        for column in (c for c in MAP_COLUMNS if c in want):
            got_map, want_map = dict(got[column] or []), dict(want[column] or [])
            assert got_map.keys() == want_map.keys()
            for key, value in want_map.items():
                if isinstance(value, float):
                    assert math.isclose(got_map[key], value, rel_tol=1e-15), (column, key)
                else:
                    assert got_map[key] == value, (column, key)


@pytest.fixture(scope="module")
def released(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("consumers")
    mirrors = root / "mirrors"
    repo = mirrors / "datasets" / REPO_ID
    v1 = make_dataset(root / "v1", personas=10, seed=7)
    v2 = make_dataset(root / "v2", personas=6, seed=11, sessions=0, persona_shards=1)
    assert main(["release", str(root / "v1"), "--to", str(repo), "--tag", "v1.0.0"]) == 0
    assert main(["release", str(root / "v2"), "--to", str(repo), "--tag", "v1.1.0"]) == 0
    return {"root": root, "mirrors": mirrors, "repo": repo, "v1": v1, "v2": v2}


@pytest.mark.server
def test_datasets_loads_each_release_tag_through_a_hub_api(released, tmp_path: Path) -> None:
    specs = ["v1.0.0:personas", "v1.0.0:conversations", "v1.0.0:probes", "v1.1.0:personas"]
    with olah.serve(released["mirrors"], tmp_path, REPO_ID) as url:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
        env.update(
            HF_ENDPOINT=url,
            HF_HOME=str(tmp_path / "hf-home"),
            HF_HUB_OFFLINE="0",
            HF_HUB_DISABLE_XET="1",
            HF_HUB_DISABLE_TELEMETRY="1",
            HF_HUB_DISABLE_PROGRESS_BARS="1",
        )
        done = subprocess.run(
            [sys.executable, "-c", CONSUMER, REPO_ID, *specs],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = json.loads(done.stdout)
    for config in ("personas", "conversations", "probes"):
        assert_same_rows(loaded[f"v1.0.0:{config}"], released["v1"][config])
    assert loaded["v1.0.0:probes"] == normal(released["v1"]["probes"].to_pylist())  # no maps: exact
    assert_same_rows(loaded["v1.1.0:personas"], released["v2"]["personas"])
    assert len(loaded["v1.1.0:personas"]) != len(loaded["v1.0.0:personas"])


def test_polars_pandas_and_duckdb_agree_on_the_released_shards(released) -> None:
    repo: Path = released["repo"]  # its work tree holds main, i.e. v1.1.0
    expected: pa.Table = released["v2"]["personas"]
    pattern = str(repo / "personas" / "*.parquet")

    with_polars = pl.read_parquet(pattern).sort("index")
    with_pandas = pd.concat(
        [pd.read_parquet(p) for p in sorted((repo / "personas").glob("*.parquet"))]
    ).sort_values("index")
    with_duckdb = duckdb.sql(
        "SELECT persona_id, narrative, len(attributes) AS n "
        f"FROM read_parquet('{pattern}') ORDER BY persona_id"
    ).fetchall()

    ids = expected.column("persona_id").to_pylist()
    narratives = expected.column("narrative").to_pylist()
    assert with_polars["persona_id"].to_list() == ids
    assert with_pandas["persona_id"].tolist() == ids
    assert [row[0] for row in with_duckdb] == ids  # ids sort like indexes
    assert with_polars["narrative"].to_list() == narratives == with_pandas["narrative"].tolist()
    assert [row[1] for row in with_duckdb] == narratives
    attributes = [len(a) for a in expected.column("attributes").to_pylist()]
    assert with_polars["attributes"].list.len().to_list() == attributes
    assert [len(a) for a in with_pandas["attributes"]] == attributes
    assert [row[2] for row in with_duckdb] == attributes


def test_readers_agree_on_conversations_of_an_older_release(released, tmp_path: Path) -> None:
    repo: Path = released["repo"]
    checkout = tmp_path / "v1"
    subprocess.run(
        ["git", "-C", str(repo), "worktree", "add", "-q", "--detach", str(checkout), "v1.0.0"],
        check=True,
    )
    try:
        pattern = str(checkout / "conversations" / "*.parquet")
        expected = released["v1"]["conversations"]
        turns = [len(t) for t in expected.column("turns").to_pylist()]
        assert pl.read_parquet(pattern)["turns"].list.len().to_list() == turns
        frames = [
            pd.read_parquet(p) for p in sorted((checkout / "conversations").glob("*.parquet"))
        ]
        assert [len(t) for t in pd.concat(frames)["turns"]] == turns
        per_persona = duckdb.sql(
            f"SELECT persona_id, count(*) FROM read_parquet('{pattern}') GROUP BY 1 ORDER BY 1"
        ).fetchall()
        counts: dict[str, int] = {}
        for pid in expected.column("persona_id").to_pylist():
            counts[pid] = counts.get(pid, 0) + 1
        assert per_persona == sorted(counts.items())
    finally:
        subprocess.run(
            ["git", "-C", str(repo), "worktree", "remove", "--force", str(checkout)], check=True
        )
