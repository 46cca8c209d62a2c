"""MinHash signatures, batched (numba) and bit-identical to datasketch 2.x `scheme="affine32"`.

Shingles are word n-grams of the normalized text (`normalize.py`): the UTF-8 bytes of `ngram`
consecutive words joined by single spaces. A text with fewer than `ngram` words (but at
least one) is a single shingle, the whole normalized text; an empty normalized text has no
shingles and gets the empty signature (every value 0xFFFFFFFF, as an empty datasketch
MinHash). The shingle hash is XXH32 with seed 0 (`xxhash.xxh32_intdigest`), a 32-bit hash
that is fast both in numba and as a C-backed Python callable for datasketch's `hashfunc`.
"""

from __future__ import annotations

import functools
import unicodedata
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from personaloom.dedup import kernels
from personaloom.dedup.normalize import (
    NORMALIZATION,
    TextsLike,
    kernel_input,
    nfkc_retry,
    normalize_texts,
    string_chunks,
)

if TYPE_CHECKING:
    import datasketch

SCHEME = "affine32"
SHINGLE_HASH = "xxh32-seed0"


@dataclass(frozen=True)
class MinHashParams:
    """Everything that must match for two signatures to be comparable."""

    num_perm: int = 128
    seed: int = 1
    ngram: int = 5

    def __post_init__(self) -> None:
        if not isinstance(self.num_perm, int) or self.num_perm < 1:
            raise ValueError(f"num_perm must be a positive integer, got {self.num_perm!r}")
        if not isinstance(self.seed, int) or not 0 <= self.seed < 2**32:
            raise ValueError(f"seed must be an integer in [0, 2**32), got {self.seed!r}")
        if not isinstance(self.ngram, int) or self.ngram < 1:
            raise ValueError(f"ngram must be a positive integer, got {self.ngram!r}")

    def metadata(self) -> dict[str, object]:
        """What stored signatures record; `unicode` (the tables' Unicode version) is for
        information only: only texts with code points new in a version could differ."""
        return {
            "num_perm": self.num_perm,
            "seed": self.seed,
            "ngram": self.ngram,
            "scheme": SCHEME,
            "shingle_hash": SHINGLE_HASH,
            "normalization": NORMALIZATION,
            "unicode": unicodedata.unidata_version,
        }


@functools.lru_cache(maxsize=16)
def permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(a, b) uint32 arrays exactly as datasketch's `MinHash._init_permutations` (affine32)."""
    gen = np.random.RandomState(seed)
    a = gen.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    b = gen.randint(0, 1 << 32, num_perm, dtype=np.uint32)
    a.flags.writeable = False
    b.flags.writeable = False
    return a, b


def shingle_hash32(data: bytes) -> int:
    """The shingle hash: XXH32, seed 0, of the shingle's UTF-8 bytes."""
    import xxhash

    return xxhash.xxh32_intdigest(data)


def sketch_texts(
    texts: TextsLike, params: MinHashParams
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(exact hashes uint64, normalized byte lengths int64, signatures uint32 [n, num_perm])."""
    chunks = string_chunks(texts)
    n = sum(len(c) for c in chunks)
    exact = np.empty(n, dtype=np.uint64)
    lengths = np.empty(n, dtype=np.int64)
    sigs = np.empty((n, params.num_perm), dtype=np.uint32)
    a, b = permutations(params.num_perm, params.seed)
    start = 0
    for chunk in chunks:
        stop = start + len(chunk)
        data, offsets, tables = kernel_input(chunk)
        out = (exact[start:stop], lengths[start:stop], sigs[start:stop])
        flagged = kernels.sketch(data, offsets, tables, a, b, params.ngram, True, *out)
        if flagged.any():  # texts NFKC may change: normalized by Arrow, then sketched
            rows, fixed, fixed_offsets = nfkc_retry(chunk, flagged)
            redo = (np.empty(len(rows), np.uint64), np.empty(len(rows), np.int64))
            redo += (np.empty((len(rows), params.num_perm), np.uint32),)
            kernels.sketch(fixed, fixed_offsets, tables, a, b, params.ngram, False, *redo)
            for whole, part in zip(out, redo, strict=True):
                whole[rows] = part
        start = stop
    return exact, lengths, sigs


def minhash_signatures(
    texts: TextsLike, *, num_perm: int = 128, seed: int = 1, ngram: int = 5
) -> np.ndarray:
    """uint32 array (len(texts), num_perm): row i equals `datasketch_minhash(texts[i]).hashvalues`."""
    return sketch_texts(texts, MinHashParams(num_perm, seed, ngram))[2]


def shingles(text: str | None, *, ngram: int = 5) -> list[bytes]:
    """The shingles of one text (reference implementation, plain Python)."""
    norm = normalize_texts([text])[0]
    if not norm:
        return []
    words = norm.split(" ")
    if len(words) < ngram:
        return [norm.encode("utf-8")]
    return [" ".join(words[i : i + ngram]).encode("utf-8") for i in range(len(words) - ngram + 1)]


def datasketch_minhash(
    text: str | None, *, num_perm: int = 128, seed: int = 1, ngram: int = 5
) -> datasketch.MinHash:
    """The reference: a datasketch MinHash of the same shingles with the same hash."""
    from datasketch import MinHash

    MinHashParams(num_perm, seed, ngram)
    m = MinHash(num_perm=num_perm, seed=seed, hashfunc=shingle_hash32, scheme=SCHEME)
    m.update_batch(shingles(text, ngram=ngram))
    return m
