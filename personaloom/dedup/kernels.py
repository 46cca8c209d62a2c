"""numba kernels behind `personaloom.dedup`: normalization, xxHash, MinHash, LSH buckets.

All kernels are single-threaded (one core each; scale out by sharding). Integer arithmetic
is done in uint64 with explicit 32-bit masks where 32-bit wraparound is meant, because numba
promotes narrower integers before arithmetic.
"""

from __future__ import annotations

import sys

import numba as nb
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

_M32 = np.uint64(0xFFFFFFFF)
_U32 = np.uint32

# xxHash32 primes
_P32_1 = np.uint32(2654435761)
_P32_2 = np.uint32(2246822519)
_P32_3 = np.uint32(3266489917)
_P32_4 = np.uint32(668265263)
_P32_5 = np.uint32(374761393)

# xxHash64 primes
_P64_1 = np.uint64(11400714785074694791)
_P64_2 = np.uint64(14029467366897019727)
_P64_3 = np.uint64(1609587929392839161)
_P64_4 = np.uint64(9650029242287828579)
_P64_5 = np.uint64(2870177450012600261)

# MurmurHash3 fmix32 constants (datasketch's affine32 pre-mix)
_FMIX_M1 = np.uint32(0x85EBCA6B)
_FMIX_M2 = np.uint32(0xC2B2AE35)

# Character classes of the normalization table.
WORD = 0
SEPARATOR = 1  # punctuation (P*), separators (Z*), controls (Cc): become one space
REMOVED = 2  # format characters (Cf: zero-width space, joiners, soft hyphen): dropped

# `ascii_map` values that are not an output byte (no ASCII word character is 0x00 or 0xFF).
ASCII_SEPARATOR = 0
SLOW_PATH = 255

_EMPTY = np.uint32(0xFFFFFFFF)
_SPACE = np.uint8(32)

# Every uint32 operation below is wrapped in np.uint32(...): numba widens integer
# arithmetic, and the explicit truncation both restores the modulo-2^32 semantics and lets
# LLVM keep the arithmetic 32 bits wide.


@nb.njit(inline="always")
def _rotl32(x, r):
    return _U32((x << _U32(r)) | (x >> _U32(32 - r)))


@nb.njit(inline="always")
def _rotl64(x, r):
    return (x << np.uint64(r)) | (x >> np.uint64(64 - r))


def _unaligned_load(bits: int):
    @intrinsic
    def load(typingctx, arr, idx):
        """Load a little-endian uint{bits} at arr.data + idx, unaligned, no bounds check."""
        ret = types.uint32 if bits == 32 else types.uint64

        def codegen(context, builder, signature, args):
            ary = context.make_array(signature.args[0])(context, builder, args[0])
            ptr = builder.gep(ary.data, [args[1]])
            return builder.load(builder.bitcast(ptr, ir.IntType(bits).as_pointer()), align=1)

        return ret(arr, idx), codegen

    return load


_load_u32 = _unaligned_load(32)
_load_u64 = _unaligned_load(64)


@nb.njit(inline="always")
def _read32_bytes(buf, p):
    return (
        _U32(buf[p])
        | (_U32(buf[p + 1]) << _U32(8))
        | (_U32(buf[p + 2]) << _U32(16))
        | (_U32(buf[p + 3]) << _U32(24))
    )


@nb.njit(inline="always")
def _read64_bytes(buf, p):
    return np.uint64(_read32_bytes(buf, p)) | (
        np.uint64(_read32_bytes(buf, p + 4)) << np.uint64(32)
    )


# xxHash reads little-endian words; unaligned loads are that only on little-endian hosts.
_read32 = _load_u32 if sys.byteorder == "little" else _read32_bytes
_read64 = _load_u64 if sys.byteorder == "little" else _read64_bytes


@nb.njit(inline="always")
def _round32(acc, lane):
    acc = _U32(acc + _U32(lane * _P32_2))
    return _U32(_rotl32(acc, 13) * _P32_1)


@nb.njit(inline="always")
def xxh32(buf, start, end, seed):
    """XXH32 of buf[start:end] (uint8 array), identical to `xxhash.xxh32_intdigest`."""
    seed = _U32(seed)
    p = np.uint64(start)
    stop = np.uint64(end)
    if end - start >= 16:
        v1 = _U32(_U32(seed + _P32_1) + _P32_2)
        v2 = _U32(seed + _P32_2)
        v3 = seed
        v4 = _U32(seed - _P32_1)
        while p + np.uint64(16) <= stop:
            v1 = _round32(v1, _read32(buf, p))
            v2 = _round32(v2, _read32(buf, p + np.uint64(4)))
            v3 = _round32(v3, _read32(buf, p + np.uint64(8)))
            v4 = _round32(v4, _read32(buf, p + np.uint64(12)))
            p += np.uint64(16)
        h = _U32(_U32(_rotl32(v1, 1) + _rotl32(v2, 7)) + _U32(_rotl32(v3, 12) + _rotl32(v4, 18)))
    else:
        h = _U32(seed + _P32_5)
    h = _U32(h + _U32(end - start))
    while p + np.uint64(4) <= stop:
        h = _U32(h + _U32(_read32(buf, p) * _P32_3))
        h = _U32(_rotl32(h, 17) * _P32_4)
        p += np.uint64(4)
    while p < stop:
        h = _U32(h + _U32(_U32(buf[p]) * _P32_5))
        h = _U32(_rotl32(h, 11) * _P32_1)
        p += np.uint64(1)
    h ^= h >> _U32(15)
    h = _U32(h * _P32_2)
    h ^= h >> _U32(13)
    h = _U32(h * _P32_3)
    h ^= h >> _U32(16)
    return h


@nb.njit(inline="always")
def fmix32(h):
    """MurmurHash3's 32-bit finalizer, datasketch's affine32 pre-mix."""
    h ^= h >> _U32(16)
    h = _U32(h * _FMIX_M1)
    h ^= h >> _U32(13)
    h = _U32(h * _FMIX_M2)
    h ^= h >> _U32(16)
    return h


@nb.njit(inline="always")
def _round64(acc, lane):
    acc = acc + lane * _P64_2
    return _rotl64(acc, 31) * _P64_1


@nb.njit(inline="always")
def _merge64(acc, val):
    acc ^= _round64(np.uint64(0), val)
    return acc * _P64_1 + _P64_4


@nb.njit(inline="always")
def xxh64(buf, start, end, seed):
    """XXH64 of buf[start:end] (uint8 array), identical to `xxhash.xxh64_intdigest`."""
    seed = np.uint64(seed)
    p = start
    length = end - start
    if length >= 32:
        v1 = seed + _P64_1 + _P64_2
        v2 = seed + _P64_2
        v3 = seed
        v4 = seed - _P64_1
        limit = end - 32
        while p <= limit:
            v1 = _round64(v1, _read64(buf, p))
            v2 = _round64(v2, _read64(buf, p + 8))
            v3 = _round64(v3, _read64(buf, p + 16))
            v4 = _round64(v4, _read64(buf, p + 24))
            p += 32
        h = _rotl64(v1, 1) + _rotl64(v2, 7) + _rotl64(v3, 12) + _rotl64(v4, 18)
        h = _merge64(h, v1)
        h = _merge64(h, v2)
        h = _merge64(h, v3)
        h = _merge64(h, v4)
    else:
        h = seed + _P64_5
    h += np.uint64(length)
    while p + 8 <= end:
        h ^= _round64(np.uint64(0), _read64(buf, p))
        h = _rotl64(h, 27) * _P64_1 + _P64_4
        p += 8
    if p + 4 <= end:
        h ^= _read32(buf, p) * _P64_1
        h = _rotl64(h, 23) * _P64_2 + _P64_3
        p += 4
    while p < end:
        h ^= np.uint64(buf[p]) * _P64_5
        h = _rotl64(h, 11) * _P64_1
        p += 1
    h ^= h >> np.uint64(33)
    h *= _P64_2
    h ^= h >> np.uint64(29)
    h *= _P64_3
    h ^= h >> np.uint64(32)
    return h


@nb.njit(inline="always")
def _normalize_doc(data, i, end, table, amap, out, pos, starts):
    """Normalize data[i:end] into out[pos:]; word k starts at out[starts[k]].

    Words are separated by single spaces. Returns (end position in out, number of words).
    `table[codepoint]` is the class (WORD, SEPARATOR, REMOVED); code points beyond the table
    are WORD (the caller passes a full table whenever a text is not pure ASCII). `amap` is
    the byte fast path derived from it (`ascii_map`). ASCII letters are lowercased here;
    NFKC and non-ASCII lowercasing happen before (in Arrow).
    """
    ntable = table.shape[0]
    nwords = 0
    in_word = False
    while i < end:
        m = amap[data[i]]
        if m == ASCII_SEPARATOR:
            in_word = False
            i += 1
            continue
        if m != SLOW_PATH:  # an ASCII word character, lowercased: copy the run
            if not in_word:
                if nwords > 0:
                    out[pos] = _SPACE
                    pos += 1
                starts[nwords] = pos
                nwords += 1
                in_word = True
            out[pos] = m
            pos += 1
            i += 1
            while i < end:
                m = amap[data[i]]
                if m == ASCII_SEPARATOR or m == SLOW_PATH:
                    break
                out[pos] = m
                pos += 1
                i += 1
            continue
        c = data[i]
        if c < 0x80:
            cp = np.int64(c)
            width = 1
        elif c < 0xE0:
            cp = np.int64(c & 0x1F)
            width = 2
        elif c < 0xF0:
            cp = np.int64(c & 0x0F)
            width = 3
        else:
            cp = np.int64(c & 0x07)
            width = 4
        if i + width > end:  # truncated sequence (invalid UTF-8): keep the bytes
            width = end - i
        for j in range(1, width):
            cp = (cp << 6) | np.int64(data[i + j] & 0x3F)
        cls = table[cp] if cp < ntable else WORD
        if cls == WORD:
            if not in_word:
                if nwords > 0:
                    out[pos] = _SPACE
                    pos += 1
                starts[nwords] = pos
                nwords += 1
                in_word = True
            for j in range(width):
                out[pos] = data[i + j]
                pos += 1
        elif cls == SEPARATOR:
            in_word = False
        i += width
    return pos, nwords


def ascii_map(table: np.ndarray) -> np.ndarray:
    """Per byte value: the lowercased byte of an ASCII word character, ASCII_SEPARATOR, or
    SLOW_PATH (non-ASCII bytes and anything else the table must decide)."""
    amap = np.full(256, SLOW_PATH, dtype=np.uint8)
    for c in range(128):
        if table[c] == WORD:
            amap[c] = c + 32 if 65 <= c <= 90 else c
        elif table[c] == SEPARATOR:
            amap[c] = ASCII_SEPARATOR
    return amap


@nb.njit(inline="always")
def _longest(offsets):
    longest = 0
    for d in range(offsets.shape[0] - 1):
        longest = max(longest, offsets[d + 1] - offsets[d])
    return longest


@nb.njit(cache=True)
def normalize_bytes(data, offsets, table, amap):
    """Normalized texts as (bytes, int64 offsets)."""
    n = offsets.shape[0] - 1
    out = np.empty(offsets[n] - offsets[0], dtype=np.uint8)
    out_offsets = np.empty(n + 1, dtype=np.int64)
    starts = np.empty(_longest(offsets) // 2 + 2, dtype=np.int64)
    pos = 0
    for d in range(n):
        out_offsets[d] = pos
        pos, _ = _normalize_doc(data, offsets[d], offsets[d + 1], table, amap, out, pos, starts)
    out_offsets[n] = pos
    return out[:pos], out_offsets


@nb.njit(cache=True)
def sketch(data, offsets, table, amap, perm_a, perm_b, ngram):
    """Normalize, exact-hash and MinHash every text in one pass.

    Returns (exact hashes uint64 [n], normalized lengths int64 [n], signatures uint32 [n, k]).
    The exact hash is XXH64 (seed 0) of the normalized UTF-8 bytes. Shingles: the byte span
    of `ngram` consecutive words (a contiguous slice, words being single-space separated);
    a text with fewer words is one shingle; an empty text has none and keeps the empty
    signature (all 0xFFFFFFFF, as an empty datasketch MinHash). Each shingle is hashed with
    XXH32 (seed 0), pre-mixed with fmix32, then permuted a * h + b mod 2^32 and min-reduced,
    which is datasketch 2.x's affine32 scheme with `hashfunc=xxh32`.
    """
    n = offsets.shape[0] - 1
    k = perm_a.shape[0]
    a = perm_a.astype(np.uint32)
    b = perm_b.astype(np.uint32)
    exact = np.empty(n, dtype=np.uint64)
    lengths = np.empty(n, dtype=np.int64)
    sigs = np.empty((n, k), dtype=np.uint32)
    longest = _longest(offsets)
    scratch = np.empty(longest + 1, dtype=np.uint8)
    starts = np.empty(longest // 2 + 2, dtype=np.int64)
    cur = np.empty(k, dtype=np.uint32)
    for d in range(n):
        size, nwords = _normalize_doc(
            data, offsets[d], offsets[d + 1], table, amap, scratch, 0, starts
        )
        exact[d] = xxh64(scratch, 0, size, 0)
        lengths[d] = size
        cur[:] = _EMPTY
        nshingles = 0 if nwords == 0 else max(1, nwords - ngram + 1)
        for i in range(nshingles):
            stop = starts[i + ngram] - 1 if i + ngram < nwords else size
            hv = fmix32(xxh32(scratch, starts[i], stop, 0))
            for j in range(k):
                cur[j] = min(cur[j], _U32(a[j] * hv + b[j]))
        sigs[d, :] = cur
    return exact, lengths, sigs


@nb.njit(cache=True)
def band_keys(sigs, rows, band, rows_per_band):
    """64-bit key of one band (rows_per_band consecutive values) of sigs[rows[i]]."""
    n = rows.shape[0]
    out = np.empty(n, dtype=np.uint64)
    lo = band * rows_per_band
    for i in range(n):
        row = rows[i]
        h = np.uint64(band) * _P64_5 + _P64_1
        for j in range(lo, lo + rows_per_band):
            h = _round64(h, np.uint64(sigs[row, j]))
        h ^= h >> np.uint64(33)
        h *= _P64_2
        h ^= h >> np.uint64(29)
        h *= _P64_3
        h ^= h >> np.uint64(32)
        out[i] = h
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
def union_pairs(parent, xs, ys):
    for i in range(xs.shape[0]):
        _union(parent, xs[i], ys[i])


@nb.njit(inline="always")
def _agreement(sigs_a, i, sigs_b, j):
    same = 0
    for c in range(sigs_a.shape[1]):
        same += sigs_a[i, c] == sigs_b[j, c]
    return same


@nb.njit(cache=True)
def link_buckets(sigs, rows, nodes, order, keys, parent, need, max_reps):
    """Union the verified candidate pairs of one LSH band.

    Entry i is signature sigs[rows[i]] of union-find node nodes[i]. `order` sorts `keys`
    stably, so a bucket's members come in entry order. Each member is verified against one
    representative of each cluster already met in its bucket (at most `max_reps` of them),
    not against every member: a bucket of m near-identical texts costs O(m) verifications,
    not O(m^2). A pair is linked when at least `need` signature values agree. Returns the
    number of verifications.
    """
    n = order.shape[0]
    reps = np.empty(max_reps, dtype=np.int64)
    checks = 0
    start = 0
    while start < n:
        stop = start + 1
        key = keys[order[start]]
        while stop < n and keys[order[stop]] == key:
            stop += 1
        if stop - start > 1:
            nrep = 0
            for p in range(start, stop):
                i = order[p]
                joined = False
                for q in range(nrep):
                    j = reps[q]
                    if _find(parent, nodes[i]) == _find(parent, nodes[j]):
                        joined = True
                        continue
                    checks += 1
                    if _agreement(sigs, rows[i], sigs, rows[j]) >= need:
                        _union(parent, nodes[i], nodes[j])
                        joined = True
                if not joined and nrep < max_reps:
                    reps[nrep] = i
                    nrep += 1
        start = stop
    return checks


@nb.njit(cache=True)
def link_previous(
    sigs, rows, nodes, lo, hi, prev_sigs, prev_order, parent, prev_node, need, max_reps
):
    """Link entries to `prev_node` when a band-mate from the previous release verifies.

    lo[i]:hi[i] is where entry i's band key sits among the previous release's sorted keys;
    prev_order maps those positions to rows of prev_sigs.
    """
    checks = 0
    for i in range(nodes.shape[0]):
        if hi[i] <= lo[i] or _find(parent, nodes[i]) == _find(parent, prev_node):
            continue
        for p in range(lo[i], min(hi[i], lo[i] + max_reps)):
            checks += 1
            if _agreement(sigs, rows[i], prev_sigs, prev_order[p]) >= need:
                _union(parent, nodes[i], prev_node)
                break
    return checks


@nb.njit(cache=True)
def roots(parent):
    out = np.empty(parent.shape[0], dtype=np.int64)
    for i in range(parent.shape[0]):
        out[i] = _find(parent, i)
    return out
