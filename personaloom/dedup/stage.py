"""The dedup stage: exact, then near-duplicate, then against earlier releases; keep one per cluster."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from personaloom.dedup import kernels
from personaloom.dedup.lsh import cluster, lsh_params
from personaloom.dedup.minhash import MinHashParams, sketch_texts
from personaloom.dedup.normalize import TextsLike
from personaloom.dedup.signatures import SignatureSet
from personaloom.errors import UserError

REASON_EXACT = "exact_duplicate_of:"
REASON_NEAR = "near_duplicate_of:"
REASON_PREVIOUS = "in_previous_release"
REASON_COLUMN = "dedup_reason"


@dataclass(frozen=True)
class DedupCounts:
    input: int
    exact_duplicates: int
    near_duplicates: int
    in_previous_release: int
    kept: int

    def as_dict(self) -> dict[str, int]:
        return {
            "input": self.input,
            "exact_duplicates": self.exact_duplicates,
            "near_duplicates": self.near_duplicates,
            "in_previous_release": self.in_previous_release,
            "kept": self.kept,
        }


@dataclass(frozen=True)
class DedupResult:
    """Per-row outcome of `dedup_texts`.

    keep: bool [n]. cluster: int64 [n], the row index of the cluster's best row (the one
    kept unless the cluster is in a previous release). reasons: None for kept rows, else
    "exact_duplicate_of:<id>", "near_duplicate_of:<id>" or "in_previous_release".
    """

    keep: np.ndarray
    cluster: np.ndarray
    reasons: list[str | None]
    counts: DedupCounts
    ids: list[str]
    exact_hashes: np.ndarray
    group_signatures: np.ndarray
    group_of_row: np.ndarray
    params: MinHashParams
    threshold: float
    bands: tuple[int, int]
    verifications: int

    @property
    def signatures(self) -> np.ndarray:
        """uint32 [n, num_perm] signature of every row."""
        return self.group_signatures[self.group_of_row]

    def kept_signatures(self) -> SignatureSet:
        """Signatures of the kept rows, to store with a release (`SignatureSet.save`)."""
        rows = np.flatnonzero(self.keep)
        return SignatureSet(
            ids=[self.ids[i] for i in rows],
            exact_hashes=self.exact_hashes[rows],
            signatures=self.group_signatures[self.group_of_row[rows]],
            params=self.params,
        )


def _scores_array(scores: Any, n: int) -> np.ndarray:
    if isinstance(scores, pa.ChunkedArray | pa.Array):
        scores = scores.cast(pa.float64()).to_numpy(zero_copy_only=False)
    else:
        scores = np.asarray(
            [np.nan if s is None else s for s in scores] if isinstance(scores, list) else scores,
            dtype=np.float64,
        )
    if scores.shape != (n,):
        raise ValueError(f"scores must have one value per text ({n}), got shape {scores.shape}")
    return scores


def _priority(n: int, ids: Sequence[Any] | None, scores: Any) -> np.ndarray:
    """Rows ordered best first: highest score (missing/NaN last), then lowest id, then row."""
    keys: list[np.ndarray] = [np.arange(n)]
    if ids is not None:
        _, id_rank = np.unique(np.asarray(ids), return_inverse=True)
        keys.append(id_rank.reshape(-1))
    if scores is not None:
        s = _scores_array(scores, n)
        keys.append(np.where(np.isnan(s), np.inf, -s))
    return np.lexsort(keys)


def dedup_texts(
    texts: TextsLike,
    ids: Sequence[Any] | None = None,
    scores: Sequence[float | None] | np.ndarray | pa.Array | None = None,
    *,
    threshold: float = 0.8,
    num_perm: int = 128,
    seed: int = 1,
    ngram: int = 5,
    previous: SignatureSet | None = None,
    bands: tuple[int, int] | None = None,
) -> DedupResult:
    """Exact then near-duplicate dedup of one batch of texts (and against `previous`).

    Exact duplicates share a normalized text (XXH64 of it). Near duplicates are linked when
    LSH makes them candidates and their MinHash signatures agree on >= threshold of the
    positions; clusters are connected components. Each cluster keeps its best row: highest
    score (None/NaN lowest), then lowest id, then first row. A cluster that reaches a text of
    `previous` keeps nothing. None texts count as empty; all empty texts (after
    normalization) are exact duplicates of each other.
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    if num_perm < 2:
        raise ValueError(f"num_perm must be >= 2, got {num_perm}")
    params = MinHashParams(num_perm, seed, ngram)
    if previous is not None:
        previous.require(params)
    if bands is None:
        bands = lsh_params(threshold, num_perm)
    elif bands[0] < 1 or bands[1] < 1 or bands[0] * bands[1] > num_perm:
        raise ValueError(f"bands {bands} must be positive with bands * rows <= num_perm")

    exact, lengths, sigs = sketch_texts(texts, params)
    n = len(exact)
    if ids is not None and len(ids) != n:
        raise ValueError(f"ids must have one value per text ({n}), got {len(ids)}")
    id_strings = [str(i) for i in ids] if ids is not None else [str(i) for i in range(n)]

    # Exact groups: group g's representative is its first row.
    _, first, group_of_row = np.unique(exact, return_index=True, return_inverse=True)
    group_of_row = group_of_row.reshape(-1)
    n_groups = len(first)
    prev_node = n_groups
    parent = np.arange(n_groups + 1, dtype=np.int64)
    group_sigs = sigs[first]

    if previous is not None and len(previous):
        hits = np.flatnonzero(np.isin(exact[first], previous.exact_hashes))
        kernels.union_pairs(parent, hits, np.full(len(hits), prev_node, dtype=np.int64))

    # Near duplicates among non-empty groups (the empty text is its own exact class).
    lsh_groups = np.flatnonzero(lengths[first] > 0)
    lsh_parent = np.arange(len(lsh_groups) + 1, dtype=np.int64)
    checks = cluster(
        group_sigs,
        lsh_groups,
        lsh_parent,
        threshold=threshold,
        bands=bands,
        previous=(len(lsh_groups), previous) if previous is not None and len(previous) else None,
    )
    lsh_root = kernels.roots(lsh_parent)
    nodes = np.append(lsh_groups, prev_node)
    linked = np.flatnonzero(lsh_root != np.arange(len(lsh_root)))
    kernels.union_pairs(parent, nodes[linked], nodes[lsh_root[linked]])

    root_of_group = kernels.roots(parent)
    row_root = root_of_group[group_of_row]
    in_previous = (
        row_root == root_of_group[prev_node] if previous is not None else np.zeros(n, dtype=bool)
    )

    order = _priority(n, ids, scores)
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    best_rank = np.full(n_groups + 1, n, dtype=np.int64)
    np.minimum.at(best_rank, row_root, rank)
    best_row = order[best_rank[row_root]] if n else np.zeros(0, dtype=np.int64)
    keep = (best_row == np.arange(n)) & ~in_previous

    reasons: list[str | None] = [None] * n
    exact_count = near_count = prev_count = 0
    for row in np.flatnonzero(~keep).tolist():
        if in_previous[row]:
            reasons[row] = REASON_PREVIOUS
            prev_count += 1
        elif group_of_row[row] == group_of_row[best_row[row]]:
            reasons[row] = REASON_EXACT + id_strings[best_row[row]]
            exact_count += 1
        else:
            reasons[row] = REASON_NEAR + id_strings[best_row[row]]
            near_count += 1
    counts = DedupCounts(n, exact_count, near_count, prev_count, int(keep.sum()))
    return DedupResult(
        keep=keep,
        cluster=best_row.astype(np.int64),
        reasons=reasons,
        counts=counts,
        ids=id_strings,
        exact_hashes=exact,
        group_signatures=group_sigs,
        group_of_row=group_of_row,
        params=params,
        threshold=threshold,
        bands=bands,
        verifications=int(checks),
    )


def _column(table: pa.Table, name: str, option: str) -> pa.ChunkedArray:
    if name not in table.column_names:
        raise UserError(
            f"{option} {name}: no such column; available: {', '.join(table.column_names)}"
        )
    return table.column(name)


def dedup_table(
    table: pa.Table,
    column: str,
    *,
    score_column: str | None = None,
    id_column: str | None = None,
    threshold: float = 0.8,
    num_perm: int = 128,
    seed: int = 1,
    ngram: int = 5,
    previous: SignatureSet | None = None,
) -> tuple[pa.Table, pa.Table, DedupResult]:
    """Dedup `table` on its text `column`: (kept rows, removed rows + `dedup_reason`, result).

    All columns are kept intact. Ids in reasons come from `id_column` (else row numbers);
    `score_column` picks the row a cluster keeps.
    """
    texts = _column(table, column, "--column")
    if not (pa.types.is_string(texts.type) or pa.types.is_large_string(texts.type)):
        if not pa.types.is_null(texts.type):
            raise UserError(f"--column {column}: must hold strings, it holds {texts.type}")
    scores = None
    if score_column is not None:
        scores = _column(table, score_column, "--score-column")
        if not (pa.types.is_integer(scores.type) or pa.types.is_floating(scores.type)):
            raise UserError(f"--score-column {score_column}: must be numeric, it is {scores.type}")
    ids = _column(table, id_column, "--id-column").to_pylist() if id_column else None
    result = dedup_texts(
        texts,
        ids,
        scores,
        threshold=threshold,
        num_perm=num_perm,
        seed=seed,
        ngram=ngram,
        previous=previous,
    )
    mask = pa.array(result.keep)
    kept = table.filter(mask)
    removed_rows = np.flatnonzero(~result.keep)
    removed = table.take(pa.array(removed_rows, type=pa.int64()))
    reasons = pa.array([result.reasons[i] for i in removed_rows], type=pa.string())
    if REASON_COLUMN in removed.column_names:
        removed = removed.drop_columns([REASON_COLUMN])
    removed = removed.append_column(REASON_COLUMN, reasons)
    return kept, removed, result
