"""MinHash LSH: band/row choice and clustering of verified candidate pairs.

Band/row choice (`lsh_params`): among all (bands b, rows r) with b * r <= num_perm, the
candidate probability of a pair of Jaccard s is P(s) = 1 - (1 - s^r)^b. We take the (b, r)
with the least false-candidate mass (the integral of P over [0, threshold]) among those
that make a pair at exactly the threshold a candidate with probability >= 0.99. Recall is
decided there; precision is restored by verification: a candidate pair is linked only if
its signatures agree on >= threshold * num_perm positions (the MinHash Jaccard estimate).
For threshold 0.8 and 128 permutations this gives 16 bands x 6 rows (datasketch's default
weights pick 9 x 13, a 40% chance at J = 0.8).

Clusters are connected components (union-find) of linked pairs. Within one bucket, each
member is verified against one representative per cluster already present (at most
`MAX_REPS`), so huge buckets cost linear, not quadratic, time.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from personaloom.dedup import kernels

MIN_CANDIDATE_PROBABILITY = 0.99
MAX_REPS = 32


@functools.lru_cache(maxsize=64)
def lsh_params(
    threshold: float, num_perm: int, min_probability: float = MIN_CANDIDATE_PROBABILITY
) -> tuple[int, int]:
    """(bands, rows per band) for `threshold` (see the module docstring)."""
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    if num_perm < 2:
        raise ValueError(f"num_perm must be >= 2, got {num_perm}")
    pairs = np.array([(b, r) for b in range(1, num_perm + 1) for r in range(1, num_perm // b + 1)])
    bands, rows = pairs[:, 0:1].astype(float), pairs[:, 1:2].astype(float)
    grid = np.linspace(0.0, threshold, 257)[None, :]
    curve = 1.0 - (1.0 - grid**rows) ** bands
    area = ((curve[:, 1:] + curve[:, :-1]) * 0.5 * np.diff(grid)).sum(axis=1)
    at_threshold = 1.0 - (1.0 - threshold ** rows[:, 0]) ** bands[:, 0]
    ok = at_threshold >= min_probability
    if ok.any():
        # least false-candidate area, then fewest bands
        index = np.lexsort((pairs[:, 0], np.where(ok, area, np.inf)))[0]
    else:
        index = np.lexsort((pairs[:, 0], -at_threshold))[0]
    return int(pairs[index, 0]), int(pairs[index, 1])


def agreement_needed(threshold: float, num_perm: int) -> int:
    """Smallest number of agreeing signature values whose fraction is >= threshold."""
    return max(1, math.ceil(threshold * num_perm - 1e-9))


def cluster(
    signatures: np.ndarray,
    rows: np.ndarray,
    parent: np.ndarray,
    *,
    threshold: float,
    bands: tuple[int, int],
    previous: tuple[np.ndarray, object] | None = None,
) -> int:
    """Link near-duplicates among signatures[rows] into `parent` (union-find, in place).

    Entry i of `rows` is union-find node i. With `previous` = (prev_node, SignatureSet),
    entries whose band-mate in that set verifies are linked to prev_node. Returns the
    number of signature verifications made.
    """
    b, r = bands
    need = agreement_needed(threshold, signatures.shape[1])
    nodes = np.arange(len(rows), dtype=np.int64)
    checks = 0
    if len(rows) == 0:
        return 0
    for band in range(b):
        keys = kernels.band_keys(signatures, rows, band, r)
        order = np.argsort(keys, kind="stable")
        checks += kernels.link_buckets(signatures, rows, nodes, order, keys, parent, need, MAX_REPS)
        if previous is not None:
            prev_node, prev_set = previous
            prev_keys, prev_rows = prev_set.band_index(band, r)
            if len(prev_keys):
                lo = np.searchsorted(prev_keys, keys, side="left")
                hi = np.searchsorted(prev_keys, keys, side="right")
                checks += kernels.link_previous(
                    signatures,
                    rows,
                    nodes,
                    lo,
                    hi,
                    prev_set.signatures,
                    prev_rows,
                    parent,
                    prev_node,
                    need,
                    MAX_REPS,
                )
    return checks
