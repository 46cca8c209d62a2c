"""Dedup: exact (normalized-text hash), then near-duplicate (MinHash LSH), keep one per cluster.

- Normalization (`normalize.py`): NFKC, lowercase, punctuation/separators/controls -> one
  space, format characters dropped, single spaces. Equal normalized texts are exact
  duplicates (XXH64 of the normalized bytes).
- Signatures (`minhash.py`): word `ngram`-shingles (default 5; shorter texts are one
  shingle, empty texts have none), XXH32 shingle hash, MinHash bit-identical to
  `datasketch.MinHash(num_perm, seed, hashfunc=shingle_hash32, scheme="affine32")`, computed
  in one numba pass per batch (`kernels.py`).
- LSH (`lsh.py`): recall-leaning bands x rows, candidates verified by signature agreement,
  union-find clusters; each cluster keeps its best row (highest score, lowest id, first row).
- Earlier releases (`signatures.py`): their stored signatures, checked for matching
  parameters; a cluster reaching one of them keeps nothing.
- Corpus dedup (`corpus.py`): personas by narrative, taking their conversations and
  probes with them.

May import: the shared floor only (never the engine, a stage or the run layer).
"""

from personaloom.dedup.lsh import agreement_needed, lsh_params
from personaloom.dedup.minhash import (
    SCHEME,
    SHINGLE_HASH,
    MinHashParams,
    datasketch_minhash,
    minhash_signatures,
    permutations,
    shingle_hash32,
    shingles,
)
from personaloom.dedup.normalize import NORMALIZATION, normalize_texts
from personaloom.dedup.signatures import SignatureSet, load_signatures
from personaloom.dedup.stage import (
    REASON_COLUMN,
    DedupCounts,
    DedupResult,
    dedup_column,
    dedup_table,
    dedup_texts,
    removed_table,
)

__all__ = [
    "NORMALIZATION",
    "REASON_COLUMN",
    "SCHEME",
    "SHINGLE_HASH",
    "DedupCounts",
    "DedupResult",
    "MinHashParams",
    "SignatureSet",
    "agreement_needed",
    "datasketch_minhash",
    "dedup_column",
    "dedup_table",
    "dedup_texts",
    "load_signatures",
    "lsh_params",
    "minhash_signatures",
    "normalize_texts",
    "permutations",
    "removed_table",
    "shingle_hash32",
    "shingles",
]
