"""Text normalization shared by the exact hash and the shingles.

A text is normalized as:

1. Unicode NFKC (Arrow/utf8proc), so compatibility forms fold: full-width letters, ligatures,
   non-breaking spaces, superscripts.
2. Lowercase (Arrow `utf8_lower`, Unicode simple case mapping; ASCII inside the kernel).
   This is not full `str.casefold`: "ß" and "ss" stay different.
3. Punctuation (Unicode P*), separators (Z*) and control characters (Cc, so newlines and
   tabs) become word breaks; format characters (Cf: zero-width spaces and joiners, soft
   hyphens, BOM) are dropped. Symbols (S*: "$", "+", emoji) and digits are kept.
4. Words are joined by single spaces, no leading or trailing space.

So "Hello,  WORLD!" and "hello world" are exact duplicates. A text of only punctuation or
whitespace normalizes to "" (the empty class). Steps 1-2 run in Arrow only for texts that
are not pure ASCII (for ASCII they are the identity or plain ASCII lowercasing); step 3-4
run in one numba pass over the UTF-8 bytes for every text.
"""

from __future__ import annotations

import functools
import unicodedata
from collections.abc import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from personaloom.dedup import kernels

NORMALIZATION = "nfkc-lower-punct2space-v1"

_SEPARATOR_CATEGORIES = frozenset(
    {"Pc", "Pd", "Ps", "Pe", "Pi", "Pf", "Po", "Zs", "Zl", "Zp", "Cc"}
)


@functools.cache
def class_table(limit: int = 0x110000) -> tuple[np.ndarray, np.ndarray]:
    """(class per code point below `limit`, its byte fast path `kernels.ascii_map`).

    Classes are WORD, SEPARATOR, REMOVED (see the module docstring), from Python's
    `unicodedata` categories.
    """
    table = np.zeros(limit, dtype=np.uint8)
    category = unicodedata.category
    for cp in range(limit):
        cat = category(chr(cp))
        if cat in _SEPARATOR_CATEGORIES:
            table[cp] = kernels.SEPARATOR
        elif cat == "Cf":
            table[cp] = kernels.REMOVED
    return table, kernels.ascii_map(table)


TextsLike = Iterable[str | None] | pa.Array | pa.ChunkedArray


def as_string_array(texts: TextsLike) -> pa.LargeStringArray:
    """One contiguous large_string array; nulls (None) become ""."""
    if isinstance(texts, pa.ChunkedArray):
        arr = texts.combine_chunks() if texts.num_chunks != 1 else texts.chunk(0)
    elif isinstance(texts, pa.Array):
        arr = texts
    else:
        arr = pa.array(
            list(texts) if not isinstance(texts, list) else texts, type=pa.large_string()
        )
    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        if pa.types.is_null(arr.type):
            arr = arr.cast(pa.large_string())
        else:
            raise TypeError(f"texts must be strings, got Arrow type {arr.type}")
    if arr.type != pa.large_string():
        arr = arr.cast(pa.large_string())
    if arr.null_count:
        arr = pc.fill_null(arr, "")
    return arr


def _buffers(arr: pa.LargeStringArray) -> tuple[np.ndarray, np.ndarray]:
    _, offsets_buf, data_buf = arr.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=np.int64)[arr.offset : arr.offset + len(arr) + 1]
    data = (
        np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.zeros(0, np.uint8)
    )
    if len(offsets) == 0:
        offsets = np.zeros(1, dtype=np.int64)
    return data, offsets


def prepared_buffer(texts: TextsLike) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(UTF-8 bytes, int64 offsets, class table, ascii map) ready for the kernels.

    Texts that are not pure ASCII are NFKC-normalized and lowercased here (Arrow); the
    rest of the normalization is the kernels' job.
    """
    arr = as_string_array(texts)
    ascii_mask = pc.string_is_ascii(arr)
    if len(arr) and not pc.all(ascii_mask).as_py():
        non_ascii = pc.invert(ascii_mask)
        folded = pc.utf8_lower(pc.utf8_normalize(arr.filter(non_ascii), "NFKC"))
        arr = pc.replace_with_mask(arr, non_ascii, folded.cast(pa.large_string()))
        table, amap = class_table()
    else:
        table, amap = class_table(128)
    data, offsets = _buffers(arr)
    return data, offsets, table, amap


def normalize_texts(texts: TextsLike) -> list[str]:
    """The normalized form of each text (see the module docstring)."""
    data, offsets = kernels.normalize_bytes(*prepared_buffer(texts))
    raw = data.tobytes()
    return [raw[offsets[i] : offsets[i + 1]].decode("utf-8") for i in range(len(offsets) - 1)]
