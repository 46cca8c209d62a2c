"""MinHash LSH: band/row choice and clustering of verified candidate pairs.

Band/row choice (`lsh_params`): among all (bands b, rows r) with b * r <= num_perm, the
candidate probability of a pair of Jaccard s is P(s) = 1 - (1 - s^r)^b. We take the (b, r)
with the least false-candidate mass (the integral of P over [0, threshold]) among those
that make a pair at exactly the threshold a candidate with probability >= 0.99. Recall is
decided there; precision is restored by verification: a candidate pair is linked only if
its signatures agree on >= threshold * num_perm positions (the MinHash Jaccard estimate).
For threshold 0.8 and 128 permutations this gives 16 bands x 6 rows (datasketch's default
weights pick 9 x 13, a 40% chance at J = 0.8).

Buckets are found with a hash table per band (no sort). Linked pairs form connected
components (union-find). Within one bucket, each member is verified against one
representative per component already present (at most `MAX_REPS`), so huge buckets cost
linear, not quadratic, time.

A component is not removed wholesale: chains (A~B, B~C, A and C far apart) would remove
texts unlike the one kept. Inside each component the best text is kept and every other one,
best first, is removed only if its signature matches a kept one (named in its reason), else
it is kept too. So every "near_duplicate_of:<id>" is a verified match with that kept text.
"""

from __future__ import annotations

import functools
import math
from typing import Protocol

import numba as nb
import numpy as np

from personaloom.dedup.hashes import avalanche64, round64


class BandIndexed(Protocol):
    """What link_candidates needs of a previous release's signatures (a SignatureSet)."""

    signatures: np.ndarray

    def __len__(self) -> int: ...

    def band_index(self, bands: int, rows_per_band: int) -> tuple[np.ndarray, np.ndarray]: ...


MIN_CANDIDATE_PROBABILITY = 0.99
MAX_REPS = 32
MAX_KEEPERS = 256


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


# ------------------------------------------------------------------------- kernels


@nb.njit(inline="always")
def _band_key(sigs, row, band, rows_per_band):
    """A 64-bit key of one band of a signature (xxh64 rounds over its values)."""
    h = np.uint64(band)
    for j in range(band * rows_per_band, (band + 1) * rows_per_band):
        h = round64(h, np.uint64(sigs[row, j]))
    return avalanche64(h)


@nb.njit(cache=True)
def band_keys(sigs, rows, band, rows_per_band):
    """64-bit key of one band (rows_per_band consecutive values) of sigs[rows[i]]."""
    out = np.empty(rows.shape[0], dtype=np.uint64)
    for i in range(rows.shape[0]):
        out[i] = _band_key(sigs, rows[i], band, rows_per_band)
    return out


@nb.njit(inline="always")
def _find(parent, x):
    while parent[x] != x:
        parent[x] = parent[parent[x]]
        x = parent[x]
    return x


@nb.njit(inline="always")
def _union(parent, x, y):
    """Link the roots of x and y; the smaller index becomes the root."""
    rx = _find(parent, x)
    ry = _find(parent, y)
    if rx < ry:
        parent[ry] = rx
    elif ry < rx:
        parent[rx] = ry


@nb.njit(cache=True)
def roots(parent):
    out = np.empty(parent.shape[0], dtype=np.int64)
    for i in range(parent.shape[0]):
        out[i] = _find(parent, i)
    return out


@nb.njit(inline="always")
def _agreement(sigs_a, i, sigs_b, j):
    same = 0
    for c in range(sigs_a.shape[1]):
        same += sigs_a[i, c] == sigs_b[j, c]
    return same


@nb.njit(cache=True)
def _link(sigs, rows, bands, rows_per_band, need, max_reps, parent, prev, prev_hit):
    """All bands: union verified bucket-mates among entries (entry i = sigs[rows[i]], node i).

    Per band, entries go into a hash table by band key in entry order; a new member of a
    bucket is verified against the bucket's representatives (one per component met so far,
    at most max_reps) and becomes one if it joined none. With a previous release,
    `prev` = (signatures, per-band sorted keys, per-band rows): an entry whose band-mate
    there verifies gets prev_hit[rows[i]] set. Returns the number of verifications.
    """
    prev_sigs, prev_keys, prev_rows = prev
    n = rows.shape[0]
    size = 16
    while size < 2 * n:
        size *= 2
    mask = np.uint64(size - 1)
    slot_key = np.zeros(size, dtype=np.uint64)
    slot_head = np.empty(size, dtype=np.int64)
    slot_reps = np.zeros(size, dtype=np.int64)
    next_rep = np.empty(n, dtype=np.int64)
    checks = 0
    for band in range(bands):
        slot_head[:] = -1
        keys = prev_keys[band]
        for i in range(n):
            key = _band_key(sigs, rows[i], band, rows_per_band)
            if keys.shape[0] and not prev_hit[rows[i]]:
                p = np.searchsorted(keys, key)
                stop = min(keys.shape[0], p + max_reps)
                while p < stop and keys[p] == key:
                    checks += 1
                    if _agreement(sigs, rows[i], prev_sigs, prev_rows[band, p]) >= need:
                        prev_hit[rows[i]] = True
                        break
                    p += 1
            h = key & mask
            while slot_head[h] != -1 and slot_key[h] != key:
                h = (h + np.uint64(1)) & mask
            next_rep[i] = -1
            if slot_head[h] == -1:
                slot_key[h] = key
                slot_head[h] = i
                slot_reps[h] = 1
                continue
            joined = False
            last = -1
            r = slot_head[h]
            while r != -1:
                if _find(parent, i) == _find(parent, r):
                    joined = True
                else:
                    checks += 1
                    if _agreement(sigs, rows[i], sigs, rows[r]) >= need:
                        _union(parent, i, r)
                        joined = True
                last = r
                r = next_rep[r]
            if not joined and slot_reps[h] < max_reps:
                next_rep[last] = i
                slot_reps[h] += 1
    return checks


@nb.njit(cache=True)
def _choose_keepers(order, component, sigs, prev_hit, need, max_keepers, keeper):
    """Greedy keep-best within each component; fills keeper[g] and returns verifications.

    `order` lists the groups by component, best first within one. A group flagged in
    prev_hit gets -1 (in a previous release). Otherwise it becomes a near duplicate of the
    first kept group of its component whose signature it matches (keeper[g] = that group),
    or it is kept (keeper[g] = g). Only the first `max_keepers` kept groups of a component are
    compared against, which bounds the work on pathological chains (beyond that a group is
    kept: the error is a missed duplicate, never a wrong removal).
    """
    kept = np.empty(max_keepers, dtype=np.int64)
    checks = 0
    n = order.shape[0]
    start = 0
    while start < n:
        stop = start + 1
        while stop < n and component[order[stop]] == component[order[start]]:
            stop += 1
        nkept = 0
        for p in range(start, stop):
            g = order[p]
            if prev_hit[g]:
                keeper[g] = -1
                continue
            keeper[g] = g
            for q in range(nkept):
                checks += 1
                if _agreement(sigs, g, sigs, kept[q]) >= need:
                    keeper[g] = kept[q]
                    break
            if keeper[g] == g and nkept < max_keepers:
                kept[nkept] = g
                nkept += 1
        start = stop
    return checks


# ------------------------------------------------------------------------- drivers


def link_candidates(
    signatures: np.ndarray,
    rows: np.ndarray,
    *,
    threshold: float,
    bands: tuple[int, int],
    previous: BandIndexed | None = None,
    prev_hit: np.ndarray | None = None,
) -> tuple[np.ndarray, int]:
    """Components of verified candidate pairs among signatures[rows].

    Returns (root entry of each entry, verifications). With `previous`, prev_hit[rows[i]]
    is set when a band-mate among the previous release's signatures verifies.
    """
    b, r = bands
    need = agreement_needed(threshold, signatures.shape[1])
    rows = np.ascontiguousarray(rows, dtype=np.int64)
    parent = np.arange(len(rows), dtype=np.int64)
    if previous is not None and len(previous):
        prev = (previous.signatures, *previous.band_index(b, r))
    else:
        empty = np.zeros((b, 0), dtype=np.uint64)
        prev = (np.zeros((0, signatures.shape[1]), np.uint32), empty, empty.astype(np.int64))
    if prev_hit is None:
        prev_hit = np.zeros(signatures.shape[0], dtype=bool)
    checks = _link(signatures, rows, b, r, need, MAX_REPS, parent, prev, prev_hit)
    return roots(parent), int(checks)


def choose_keepers(
    signatures: np.ndarray,
    component: np.ndarray,
    priority: np.ndarray,
    prev_hit: np.ndarray,
    *,
    threshold: float,
) -> tuple[np.ndarray, int]:
    """Per group: itself if kept, the kept group it duplicates, or -1 (previous release).

    Within each component, groups are visited best first (lowest `priority`); each is
    compared with the component's kept groups and removed as a near duplicate of the first
    one its signature matches, else kept. Returns (keeper, verifications).
    """
    need = agreement_needed(threshold, signatures.shape[1])
    order = np.lexsort((priority, component))
    keeper = np.empty(len(component), dtype=np.int64)
    checks = _choose_keepers(order, component, signatures, prev_hit, need, MAX_KEEPERS, keeper)
    return keeper, int(checks)
