"""Stored signatures of a released version, to dedup a new version against it.

File format: Parquet with columns `id` (string), `exact_hash` (uint64, XXH64 of the
normalized text) and `signature` (fixed_size_list<uint32>[num_perm]); the schema metadata key
`personaloom.dedup` holds JSON with num_perm, seed, ngram, scheme, shingle hash and
normalization version. Loading refuses a file whose parameters differ from the run's.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from personaloom.atomic import write_table_atomic
from personaloom.dedup import lsh
from personaloom.dedup.minhash import MinHashParams
from personaloom.errors import UserError

METADATA_KEY = b"personaloom.dedup"
FORMAT = "personaloom-dedup-signatures/1"


@dataclass
class SignatureSet:
    """Signatures of released texts: ids, exact hashes, signatures [n, num_perm] uint32."""

    ids: list[str]
    exact_hashes: np.ndarray
    signatures: np.ndarray
    params: MinHashParams
    source: str = "<memory>"
    _bands: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = field(
        default_factory=dict, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        self.exact_hashes = np.ascontiguousarray(self.exact_hashes, dtype=np.uint64)
        self.signatures = np.ascontiguousarray(self.signatures, dtype=np.uint32)
        n = len(self.ids)
        if self.exact_hashes.shape != (n,) or self.signatures.shape != (n, self.params.num_perm):
            raise ValueError(
                f"{self.source}: {n} ids, exact hashes of shape {self.exact_hashes.shape} and "
                f"signatures of shape {self.signatures.shape} (num_perm={self.params.num_perm})"
            )

    def __len__(self) -> int:
        return len(self.ids)

    def require(self, params: MinHashParams) -> None:
        """Raise UserError unless these signatures were made with `params`."""
        if self.params != params:
            mine, theirs = self.params, params
            diffs = ", ".join(
                f"{name}={getattr(mine, name)} (this run: {getattr(theirs, name)})"
                for name in ("num_perm", "seed", "ngram")
                if getattr(mine, name) != getattr(theirs, name)
            )
            raise UserError(
                f"{self.source}: signatures were made with {diffs}; "
                "re-run with the same --num-perm/--seed/--ngram or recompute the signatures"
            )

    def band_index(self, bands: int, rows_per_band: int) -> tuple[np.ndarray, np.ndarray]:
        """Per band, the sorted band keys of the non-empty signatures and their rows:
        two [bands, m] arrays, cached."""
        cached = self._bands.get((bands, rows_per_band))
        if cached is None:
            rows = np.flatnonzero((self.signatures != np.uint32(0xFFFFFFFF)).any(axis=1))
            keys = np.empty((bands, len(rows)), dtype=np.uint64)
            order = np.empty((bands, len(rows)), dtype=np.int64)
            for band in range(bands):
                band_key = lsh.band_keys(self.signatures, rows, band, rows_per_band)
                by_key = np.argsort(band_key, kind="stable")
                keys[band], order[band] = band_key[by_key], rows[by_key]
            cached = (keys, order)
            self._bands[(bands, rows_per_band)] = cached
        return cached

    def save(self, path: str | Path) -> None:
        """Write atomically as Parquet with the parameters in the schema metadata."""
        k = self.params.num_perm
        meta = {"format": FORMAT, **self.params.metadata()}
        table = pa.table(
            {
                "id": pa.array(self.ids, type=pa.string()),
                "exact_hash": pa.array(self.exact_hashes, type=pa.uint64()),
                "signature": pa.FixedSizeListArray.from_arrays(
                    pa.array(self.signatures.reshape(-1), type=pa.uint32()), k
                ),
            }
        ).replace_schema_metadata({METADATA_KEY: json.dumps(meta).encode()})
        write_table_atomic(table, Path(path))

    @classmethod
    def load(cls, path: str | Path) -> SignatureSet:
        path = Path(path)
        if not path.is_file():
            raise UserError(f"{path}: no such signatures file")
        try:
            table = pq.read_table(path)
        except (pa.ArrowException, OSError) as exc:
            raise UserError(f"{path}: not a Parquet signatures file ({exc})") from exc
        raw = (table.schema.metadata or {}).get(METADATA_KEY)
        if raw is None:
            raise UserError(f"{path}: no personaloom.dedup metadata (not a signatures file)")
        try:
            meta = json.loads(raw)
            if meta.get("format") != FORMAT:
                raise UserError(f"{path}: unknown signatures format {meta.get('format')!r}")
            params = MinHashParams(int(meta["num_perm"]), int(meta["seed"]), int(meta["ngram"]))
            expected = params.metadata()
            for key in ("scheme", "shingle_hash", "normalization"):
                if meta.get(key) != expected[key]:
                    raise UserError(
                        f"{path}: signatures use {key}={meta.get(key)!r}, this version computes "
                        f"{expected[key]!r}; recompute them"
                    )
            sig_col = table.column("signature").combine_chunks()
            values = sig_col.flatten().to_numpy(zero_copy_only=False)
            return cls(
                ids=[str(i) for i in table.column("id").to_pylist()],
                exact_hashes=table.column("exact_hash").to_numpy(),
                signatures=values.astype(np.uint32).reshape(-1, params.num_perm),
                params=params,
                source=str(path),
            )
        except (KeyError, ValueError, TypeError, AttributeError, pa.ArrowException) as exc:
            raise UserError(f"{path}: malformed signatures file ({exc})") from exc

    @classmethod
    def concat(cls, sets: Sequence[SignatureSet]) -> SignatureSet:
        """One set from several (e.g. every earlier release); parameters must match."""
        if not sets:
            raise ValueError("no signature sets to concatenate")
        for other in sets[1:]:
            other.require(sets[0].params)
        if len(sets) == 1:
            return sets[0]
        return cls(
            ids=[i for s in sets for i in s.ids],
            exact_hashes=np.concatenate([s.exact_hashes for s in sets]),
            signatures=np.concatenate([s.signatures for s in sets]),
            params=sets[0].params,
            source=" + ".join(s.source for s in sets),
        )


def load_signatures(*paths: str | Path) -> SignatureSet:
    """Load one or more signature files (parameters must agree) into one set."""
    return SignatureSet.concat([SignatureSet.load(p) for p in paths])
