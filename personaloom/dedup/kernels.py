"""numba kernels from UTF-8 text to exact hashes and MinHash signatures, one pass per text.

Normalization (defined in normalize.py) runs here on the raw bytes with per-code-point
tables. A text without non-ASCII bytes goes straight to a branch-light tokenizer. A text
with some is first rewritten into a buffer: each non-ASCII separator becomes a space, each
dropped character disappears, each case-folded character becomes its folding; ASCII runs
are copied 8 bytes at a time. The tokenizer then treats the remaining non-ASCII bytes as
word bytes. Texts that need NFKC are reported back for Arrow to normalize first. All
kernels are single-threaded.

numba's on-disk cache (`cache=True`) only watches the file of the cached function: after
editing hashes.py, delete personaloom/dedup/__pycache__/*.nbi and *.nbc.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from personaloom.dedup.hashes import PADDING, fmix32, load_u64, store_u64, xxh32_padded, xxh64

# Per code point `info` byte (built in normalize.py): the class in the low two bits...
WORD = 0
SEPARATOR = 1  # punctuation (P*), separators (Z*), controls (Cc): become one space
REMOVED = 2  # format characters (Cf: zero-width space, joiners, soft hyphen): dropped
CLASS_BITS = 3
# ...and two flags.
NEEDS_NFKC = 4  # a text containing it may change under NFKC
HAS_FOLD = 8  # str.casefold changes it (the folded UTF-8 is in the fold tables)

# Byte map value (`byte_map`) of a separator; every other value is the byte to write.
BYTE_SEPARATOR = 0

_EMPTY = np.uint32(0xFFFFFFFF)
_SPACE = np.uint8(32)
_U0 = np.uint64(0)
_U1 = np.uint64(1)
_HIGH_BITS = np.uint64(0x8080808080808080)


def byte_map(info: np.ndarray) -> np.ndarray:
    """Per byte value: the lowercased ASCII word byte, BYTE_SEPARATOR, or (for bytes >= 0x80,
    which only reach the tokenizer as parts of word characters) the byte itself."""
    bmap = np.arange(256, dtype=np.uint8)
    for c in range(128):
        cls = info[c] & CLASS_BITS
        if cls == SEPARATOR:
            bmap[c] = BYTE_SEPARATOR
        elif cls == REMOVED:  # Unicode has no ASCII format character (Cf)
            raise ValueError(f"ASCII code point {c} classed as removed")
        elif 65 <= c <= 90:
            bmap[c] = c + 32
    return bmap


@nb.njit(inline="always")
def _decode(data, i, end):
    """(code point, byte width) of the UTF-8 sequence at data[i]."""
    c = data[i]
    if c < 0x80:
        return np.int64(c), 1
    if c < 0xE0:
        cp = np.int64(c & 0x1F)
        width = 2
    elif c < 0xF0:
        cp = np.int64(c & 0x0F)
        width = 3
    else:
        cp = np.int64(c & 0x07)
        width = 4
    width = min(width, np.int64(end - i))  # truncated sequence (invalid UTF-8): keep the bytes
    for j in range(1, width):
        cp = (cp << 6) | np.int64(data[i + j] & 0x3F)
    return cp, width


@nb.njit(inline="always")
def _has_non_ascii(data, start, end):
    p = start
    while p + 8 <= end:
        if load_u64(data, p) & _HIGH_BITS:
            return True
        p += 8
    while p < end:
        if data[p] >= 0x80:
            return True
        p += 1
    return False


@nb.njit(cache=True)
def any_non_ascii(data):
    return _has_non_ascii(data, 0, data.shape[0])


@nb.njit(inline="always")
def _tokenize(src, start, end, bmap, out, starts):
    """Words of src[start:end] (bytes mapped by `bmap`) into out[0:], single-spaced.

    Branch-free: every byte is written at `pos` (a separator as a space) and `pos`
    advances unless the byte is a separator after a separator (or at the start). Unsigned
    indices, so numba emits no negative-index checks. Returns (length, number of words);
    word k starts at out[starts[k]].
    """
    pos = _U0
    nwords = _U0
    prev_sep = _U1  # leading separators never advance
    for i in range(np.uint64(start), np.uint64(end)):
        m = bmap[src[i]]
        sep = _U1 if m == BYTE_SEPARATOR else _U0
        out[pos] = _SPACE if sep else m
        starts[nwords] = pos
        nwords += prev_sep & (_U1 - sep)
        pos += _U1 - (sep & prev_sep)
        prev_sep = sep
    if prev_sep and nwords:
        pos -= _U1  # the trailing space
    return np.int64(pos), np.int64(nwords)


@nb.njit(inline="always")
def _fold_non_ascii(data, start, end, tables, buf, check_nfkc):
    """Rewrite data[start:end] into buf for `_tokenize`: non-ASCII separators -> one space,
    dropped characters removed, case folding applied; ASCII copied as is.

    Returns (length, needs NFKC): with check_nfkc, stops at the first NEEDS_NFKC code point.
    """
    info, _, fold_cps, fold_offsets, fold_bytes = tables
    ninfo = info.shape[0]
    w = 0
    i = start
    while i < end:
        if i + 8 <= end:
            block = load_u64(data, i)
            if not (block & _HIGH_BITS):
                store_u64(buf, w, block)
                w += 8
                i += 8
                continue
        c = data[i]
        if c < 0x80:
            buf[w] = c
            w += 1
            i += 1
            continue
        cp, width = _decode(data, i, end)
        flags = info[cp] if cp < ninfo else WORD
        if check_nfkc and flags & NEEDS_NFKC:
            return 0, True
        cls = flags & CLASS_BITS
        if cls == SEPARATOR:
            buf[w] = _SPACE
            w += 1
        elif cls == WORD:
            if flags & HAS_FOLD:
                k = np.searchsorted(fold_cps, cp)
                lo, hi = fold_offsets[k], fold_offsets[k + 1]
                buf[w : w + hi - lo] = fold_bytes[lo:hi]
                w += hi - lo
            else:
                buf[w : w + width] = data[i : i + width]
                w += width
        i += width
    return w, False


@nb.njit(inline="always")
def _normalize(data, start, end, tables, fold_buf, out, starts, check_nfkc):
    """Normalize one text into out[0:]: (length, words, needs NFKC first)."""
    if not _has_non_ascii(data, start, end):
        size, nwords = _tokenize(data, start, end, tables[1], out, starts)
        return size, nwords, False
    length, needs = _fold_non_ascii(data, start, end, tables, fold_buf, check_nfkc)
    if needs:
        return 0, 0, True
    size, nwords = _tokenize(fold_buf, 0, length, tables[1], out, starts)
    return size, nwords, False


@nb.njit(inline="always")
def _buffers_for(offsets, tables):
    """(fold buffer, output buffer, word starts, growth bound) big enough for every text."""
    longest = 0
    for d in range(offsets.shape[0] - 1):
        longest = max(longest, offsets[d + 1] - offsets[d])
    fold_offsets = tables[3]
    grow = 1  # a folded character (>= 2 bytes) may grow: bound the output per input byte
    for k in range(fold_offsets.shape[0] - 1):
        grow = max(grow, (fold_offsets[k + 1] - fold_offsets[k] + 1) // 2)
    fold_buf = np.empty(longest * grow + 8, dtype=np.uint8)
    out = np.zeros(longest * grow + PADDING, dtype=np.uint8)
    starts = np.empty((longest * grow) // 2 + 2, dtype=np.int64)
    return fold_buf, out, starts, grow


@nb.njit(cache=True)
def normalize_bytes(data, offsets, tables, check_nfkc):
    """(normalized bytes, int64 offsets, needs-NFKC flags); flagged texts come out empty."""
    n = offsets.shape[0] - 1
    fold_buf, scratch, starts, grow = _buffers_for(offsets, tables)
    out = np.empty((offsets[n] - offsets[0]) * grow, dtype=np.uint8)
    out_offsets = np.empty(n + 1, dtype=np.int64)
    flagged = np.zeros(n, dtype=np.bool_)
    pos = 0
    for d in range(n):
        out_offsets[d] = pos
        size, _, needs = _normalize(
            data, offsets[d], offsets[d + 1], tables, fold_buf, scratch, starts, check_nfkc
        )
        flagged[d] = needs
        out[pos : pos + size] = scratch[:size]
        pos += size
    out_offsets[n] = pos
    return out[:pos], out_offsets, flagged


@nb.njit(inline="always")
def _shingle_hash(text, starts, i, ngram, nwords, size):
    """fmix32(XXH32) of shingle i: words i..i+ngram-1, or the whole text if it is shorter."""
    stop = starts[i + ngram] - 1 if i + ngram < nwords else size
    return fmix32(xxh32_padded(text, starts[i], stop, 0))


@nb.njit(cache=True)
def sketch(data, offsets, tables, perm_a, perm_b, ngram, check_nfkc, exact, lengths, sigs):
    """Normalize, exact-hash and MinHash every text in one pass, into the output arrays:
    exact hashes uint64 [n], normalized lengths int64 [n], signatures uint32 [n, k]. Returns
    the needs-NFKC flags (with check_nfkc); flagged texts' outputs are not written.

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
    fold_buf, scratch, starts, _ = _buffers_for(offsets, tables)
    cur = np.empty(k, dtype=np.uint32)
    flagged = np.zeros(n, dtype=np.bool_)
    for d in range(n):
        size, nwords, needs = _normalize(
            data, offsets[d], offsets[d + 1], tables, fold_buf, scratch, starts, check_nfkc
        )
        if needs:
            flagged[d] = True
            continue
        exact[d] = xxh64(scratch, 0, size, 0)
        lengths[d] = size
        cur[:] = _EMPTY
        nshingles = 0 if nwords == 0 else max(1, nwords - ngram + 1)
        i = 0
        while i + 1 < nshingles:  # two shingles per step: more overlap, half the cur traffic
            h1 = _shingle_hash(scratch, starts, i, ngram, nwords, size)
            h2 = _shingle_hash(scratch, starts, i + 1, ngram, nwords, size)
            for j in range(k):
                cur[j] = min(cur[j], min(np.uint32(a[j] * h1 + b[j]), np.uint32(a[j] * h2 + b[j])))
            i += 2
        if i < nshingles:
            h1 = _shingle_hash(scratch, starts, i, ngram, nwords, size)
            for j in range(k):
                cur[j] = min(cur[j], np.uint32(a[j] * h1 + b[j]))
        sigs[d, :] = cur
    return flagged


@nb.njit(cache=True)
def compact_rows(sigs, rows):
    """sigs[g] = sigs[rows[g]] in place; rows ascending (so rows[g] >= g)."""
    for g in range(rows.shape[0]):
        if rows[g] != g:
            sigs[g, :] = sigs[rows[g], :]
