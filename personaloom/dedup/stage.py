"""The dedup stage: exact, then near-duplicate, then against earlier releases; keep one per cluster."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from personaloom.dedup import kernels
from personaloom.dedup.lsh import choose_keepers, link_candidates, lsh_params
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

    keep: bool [n]. cluster: int64 [n], the row kept for this row (itself if kept; for rows
    in a previous release, the best row of their exact group). reasons: None for kept rows,
    else "exact_duplicate_of:<id>", "near_duplicate_of:<id>" (the kept row) or
    "in_previous_release".
    """

    keep: np.ndarray
    cluster: np.ndarray
    reasons: list[str | None]
    counts: DedupCounts
    row_ids: np.ndarray | None
    exact_hashes: np.ndarray
    group_signatures: np.ndarray
    group_of_row: np.ndarray
    params: MinHashParams
    threshold: float
    bands: tuple[int, int]
    verifications: int

    def id_of(self, row: int) -> str:
        """The id of `row` as used in reasons: its id value, else its row number."""
        return str(self.row_ids[row]) if self.row_ids is not None else str(row)

    @property
    def signatures(self) -> np.ndarray:
        """uint32 [n, num_perm] signature of every row."""
        return self.group_signatures[self.group_of_row]

    def kept_signatures(self) -> SignatureSet:
        """Signatures of the kept rows, to store with a release (`SignatureSet.save`)."""
        rows = np.flatnonzero(self.keep)
        return SignatureSet(
            ids=[self.id_of(i) for i in rows.tolist()],
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


def _priority(n: int, ids: np.ndarray | None, scores: Any) -> np.ndarray:
    """Rows ordered best first: highest score (missing/NaN last), then lowest id, then row."""
    keys: list[np.ndarray] = [np.arange(n)]
    if ids is not None:
        _, id_rank = np.unique(ids, return_inverse=True)
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

    Exact duplicates share a normalized text (XXH64 of it); each group keeps its best row:
    highest score (None/NaN lowest), then lowest id, then first row. Near duplicates: LSH
    candidates whose MinHash signatures agree on >= threshold of the positions are linked
    into components; in each, the best text is kept and the others, best first, are removed
    if they match a kept one (see `lsh.py`). Texts matching `previous` (exactly, or a
    verified LSH candidate) are removed. None texts count as empty; all empty texts (after
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
    row_ids = None if ids is None else np.asarray(ids)
    if row_ids is not None and row_ids.shape != (n,):
        raise ValueError(f"ids must have one value per text ({n}), got shape {row_ids.shape}")

    order = _priority(n, row_ids, scores)
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)

    # Exact groups, numbered in order of their first row; group g's signature is sigs[g].
    _, first, inverse = np.unique(exact, return_index=True, return_inverse=True)
    by_first = np.argsort(first)
    first = first[by_first]
    renumber = np.empty(len(first), dtype=np.int64)
    renumber[by_first] = np.arange(len(first))
    group_of_row = renumber[inverse.reshape(-1)]
    n_groups = len(first)
    kernels.compact_rows(sigs, first)  # no second [n, num_perm] array
    group_sigs = sigs[:n_groups]
    group_rank = np.full(n_groups, n, dtype=np.int64)
    np.minimum.at(group_rank, group_of_row, rank)
    group_best = order[group_rank] if n else np.zeros(0, dtype=np.int64)

    prev_hit = np.zeros(n_groups, dtype=bool)
    if previous is not None and len(previous):
        prev_hit |= np.isin(exact[first], previous.exact_hashes)

    # Near duplicates among non-empty groups (the empty text is its own exact class).
    lsh_groups = np.flatnonzero(lengths[first] > 0)
    lsh_root, checks = link_candidates(
        group_sigs,
        lsh_groups,
        threshold=threshold,
        bands=bands,
        previous=previous,
        prev_hit=prev_hit,
    )
    component = np.arange(n_groups, dtype=np.int64)
    component[lsh_groups] = lsh_groups[lsh_root]
    keeper, keep_checks = choose_keepers(
        group_sigs, component, group_rank, prev_hit, threshold=threshold
    )

    g = group_of_row
    kg = keeper[g]
    in_previous = kg < 0
    cluster_row = np.where(in_previous, group_best[g], group_best[np.maximum(kg, 0)])
    keep = ~in_previous & (kg == g) & (group_best[g] == np.arange(n))

    reasons: list[str | None] = [None] * n
    exact_count = near_count = prev_count = 0
    for row in np.flatnonzero(~keep).tolist():
        if in_previous[row]:
            reasons[row] = REASON_PREVIOUS
            prev_count += 1
            continue
        kept_id = str(row_ids[cluster_row[row]]) if row_ids is not None else str(cluster_row[row])
        if kg[row] == g[row]:
            reasons[row] = REASON_EXACT + kept_id
            exact_count += 1
        else:
            reasons[row] = REASON_NEAR + kept_id
            near_count += 1
    counts = DedupCounts(n, exact_count, near_count, prev_count, int(keep.sum()))
    return DedupResult(
        keep=keep,
        cluster=cluster_row.astype(np.int64),
        reasons=reasons,
        counts=counts,
        row_ids=row_ids,
        exact_hashes=exact,
        group_signatures=group_sigs,
        group_of_row=group_of_row,
        params=params,
        threshold=threshold,
        bands=bands,
        verifications=int(checks) + keep_checks,
    )


def _column(table: pa.Table, name: str, option: str) -> pa.ChunkedArray:
    if name not in table.column_names:
        raise UserError(
            f"{option} {name}: no such column; available: {', '.join(table.column_names)}"
        )
    return table.column(name)


def dedup_column(
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
) -> DedupResult:
    """`dedup_texts` on a table's text `column` (UserError naming the option if unusable).

    Ids in reasons come from `id_column` (else row numbers); `score_column` picks the row a
    cluster keeps.
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
    ids = None
    if id_column is not None:
        id_values = _column(table, id_column, "--id-column")
        if id_values.null_count:
            raise UserError(f"--id-column {id_column}: {id_values.null_count} rows have no id")
        ids = id_values.to_numpy(zero_copy_only=False)
    return dedup_texts(
        texts,
        ids,
        scores,
        threshold=threshold,
        num_perm=num_perm,
        seed=seed,
        ngram=ngram,
        previous=previous,
    )


def removed_table(table: pa.Table, result: DedupResult) -> pa.Table:
    """The removed rows of `table`, all columns, plus `dedup_reason`."""
    rows = np.flatnonzero(~result.keep)
    removed = table.take(pa.array(rows, type=pa.int64()))
    if REASON_COLUMN in removed.column_names:
        removed = removed.drop_columns([REASON_COLUMN])
    reasons = pa.array([result.reasons[i] for i in rows.tolist()], type=pa.string())
    return removed.append_column(REASON_COLUMN, reasons)


def dedup_table(
    table: pa.Table,
    column: str,
    **options: Any,
) -> tuple[pa.Table, pa.Table, DedupResult]:
    """Dedup `table` on its text `column`: (kept rows, removed rows + `dedup_reason`, result).

    All columns are kept intact; `options` are those of `dedup_column`.
    """
    result = dedup_column(table, column, **options)
    return table.filter(pa.array(result.keep)), removed_table(table, result), result
