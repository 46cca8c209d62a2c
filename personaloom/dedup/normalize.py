"""Text normalization shared by the exact hash and the shingles.

A text is normalized as:

1. Unicode NFKC, so compatibility forms fold: full-width letters, ligatures, non-breaking
   spaces, superscripts. (Run by Arrow, only on texts holding a code point that NFKC may
   change; every other text is already NFKC.)
2. Case folding: `str.casefold` per code point ("Straße" -> "strasse", "Σ"/"ς" -> "σ").
   The result is not re-normalized.
3. Punctuation (Unicode P*), separators (Z*) and control characters (Cc, so newlines and
   tabs) become word breaks; format characters (Cf: zero-width spaces and joiners, soft
   hyphens, BOM) are dropped. Symbols (S*: "$", "+", emoji), marks and digits are kept.
4. Words are joined by single spaces, no leading or trailing space.

So "Hello,  WORLD!" and "hello world" are exact duplicates. A text of only punctuation or
whitespace normalizes to "" (the empty class). Steps 2-4 run in one numba pass over the
UTF-8 bytes (`kernels.py`) with tables built from Python's `unicodedata`.
"""

from __future__ import annotations

import functools
import unicodedata
from collections.abc import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from personaloom.dedup import kernels

NORMALIZATION = "nfkc-casefold-punct2space-v1"

_SEPARATOR_CATEGORIES = frozenset(
    {"Pc", "Pd", "Ps", "Pe", "Pi", "Pf", "Po", "Zs", "Zl", "Zp", "Cc"}
)
_SKIPPED_CATEGORIES = frozenset({"Cn", "Co", "Cs"})  # unassigned, private use, surrogates
# Hangul vowel and trailing jamo compose with a preceding jamo under NFKC (algorithmically,
# so `unicodedata.decomposition` does not list them).
_HANGUL_COMPOSING = (range(0x1161, 0x1176), range(0x11A8, 0x11C3))

Tables = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


@functools.cache
def unicode_tables(limit: int = 0x110000) -> Tables:
    """(info, byte map, fold code points, fold offsets, fold UTF-8 bytes) for the kernels.

    `info[cp]` is the class (WORD, SEPARATOR, REMOVED) plus the NEEDS_NFKC and HAS_FOLD
    flags, for code points below `limit` (128 suffices for pure-ASCII batches). NEEDS_NFKC
    marks code points NFKC changes, combining marks, and code points that compose with a
    preceding one (second half of a canonical pair, Hangul jamo): a text without any is
    already NFKC. Built once per process (about a second for the full range).
    """
    info = np.zeros(limit, dtype=np.uint8)
    folds: dict[int, bytes] = {}
    category = unicodedata.category
    for cp in range(limit):
        ch = chr(cp)
        cat = category(ch)
        if cat in _SKIPPED_CATEGORIES:
            continue
        if cat in _SEPARATOR_CATEGORIES:
            info[cp] = kernels.SEPARATOR
        elif cat == "Cf":
            info[cp] = kernels.REMOVED
        if cp < 128:
            continue
        folded = ch.casefold()
        if folded != ch:
            info[cp] |= kernels.HAS_FOLD
            folds[cp] = folded.encode("utf-8")
        if unicodedata.combining(ch) or not unicodedata.is_normalized("NFKC", ch):
            info[cp] |= kernels.NEEDS_NFKC
        decomposition = unicodedata.decomposition(ch).split()
        if len(decomposition) == 2 and not decomposition[0].startswith("<"):
            second = int(decomposition[1], 16)
            if second < limit:
                info[second] |= kernels.NEEDS_NFKC
    for block in _HANGUL_COMPOSING:
        for cp in block:
            if cp < limit:
                info[cp] |= kernels.NEEDS_NFKC
    fold_cps = np.array(sorted(folds), dtype=np.int64)
    fold_offsets = np.zeros(len(fold_cps) + 1, dtype=np.int64)
    fold_offsets[1:] = np.cumsum([len(folds[cp]) for cp in fold_cps.tolist()])
    fold_bytes = np.frombuffer(b"".join(folds[cp] for cp in fold_cps.tolist()) or b"\0", np.uint8)
    return info, kernels.byte_map(info), fold_cps, fold_offsets, fold_bytes


TextsLike = Iterable[str | None] | pa.Array | pa.ChunkedArray


def string_chunks(texts: TextsLike) -> list[pa.Array]:
    """The texts as Arrow string/large_string arrays (chunks kept, not copied); None -> ""."""
    if isinstance(texts, pa.ChunkedArray):
        chunks = list(texts.chunks)
    elif isinstance(texts, pa.Array):
        chunks = [texts]
    else:
        values = texts if isinstance(texts, list) else list(texts)
        chunks = [pa.array(values, type=pa.large_string())]
    out = []
    for arr in chunks:
        if pa.types.is_null(arr.type):
            arr = arr.cast(pa.large_string())
        elif not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
            raise TypeError(f"texts must be strings, got Arrow type {arr.type}")
        out.append(pc.fill_null(arr, "") if arr.null_count else arr)
    return out


def string_buffers(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    _, offsets_buf, data_buf = arr.buffers()
    width = np.int64 if pa.types.is_large_string(arr.type) else np.int32
    if offsets_buf is None:
        return np.zeros(0, np.uint8), np.zeros(1, np.int64)
    offsets = np.frombuffer(offsets_buf, dtype=width)[arr.offset : arr.offset + len(arr) + 1]
    data = (
        np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.zeros(0, np.uint8)
    )
    return data, offsets.astype(np.int64, copy=False)


def kernel_input(arr: pa.Array) -> tuple[np.ndarray, np.ndarray, Tables]:
    """(UTF-8 bytes, int64 offsets, tables) of one chunk: the full tables only if needed."""
    data, offsets = string_buffers(arr)
    full = bool(kernels.any_non_ascii(data[offsets[0] : offsets[-1]]))
    return data, offsets, unicode_tables() if full else unicode_tables(128)


def nfkc_retry(arr: pa.Array, flagged: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows, bytes, offsets) of the texts the kernels flagged, NFKC-normalized by Arrow."""
    rows = np.flatnonzero(flagged)
    fixed = pc.utf8_normalize(arr.take(pa.array(rows, type=pa.int64())), "NFKC")
    return rows, *string_buffers(fixed)


def _decode_all(data: np.ndarray, offsets: np.ndarray) -> list[str]:
    raw = data.tobytes()
    return [raw[offsets[i] : offsets[i + 1]].decode("utf-8") for i in range(len(offsets) - 1)]


def normalize_texts(texts: TextsLike) -> list[str]:
    """The normalized form of each text (see the module docstring)."""
    out: list[str] = []
    for chunk in string_chunks(texts):
        data, offsets, tables = kernel_input(chunk)
        *normalized, flagged = kernels.normalize_bytes(data, offsets, tables, True)
        chunk_out = _decode_all(*normalized)
        if flagged.any():
            rows, fixed, fixed_offsets = nfkc_retry(chunk, flagged)
            *renormalized, _ = kernels.normalize_bytes(fixed, fixed_offsets, tables, False)
            for row, text in zip(rows.tolist(), _decode_all(*renormalized), strict=True):
                chunk_out[row] = text
        out += chunk_out
    return out
