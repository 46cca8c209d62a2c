"""Quotas: exact target shares for chosen categorical attributes over a run of N personas.

`--quota demographics.age_band=uniform` or `--quota demographics.gender=female:0.5,male:0.5`
(shares are proportions and are normalised; unlisted values get 0). Counts per value come
from the largest-remainder method, so for a run of N personas (ids 0..N-1) the marginals
are exact. Which persona gets which value is a permutation drawn from (seed, N, attribute)
alone, so every worker of a sharded run computes the same assignment. A quota value
overrides the attribute's `when` and conditional table; rules still apply (a skeleton whose
forced value breaks a rule is rejected, never silently changed).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from personaloom.errors import UserError

if TYPE_CHECKING:
    from personaloom.taxonomy.model import Taxonomy


def largest_remainder(n: int, shares: Sequence[float]) -> list[int]:
    """Integer counts summing to n, proportional to shares (ties: earlier value first)."""
    total = float(sum(shares))
    exact = [n * s / total for s in shares]
    counts = [math.floor(e) for e in exact]
    rest = n - sum(counts)
    order = sorted(range(len(shares)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in order[:rest]:
        counts[i] += 1
    return counts


@dataclass(frozen=True)
class Quota:
    path: str
    values: tuple[str, ...]
    shares: tuple[float, ...]
    counts: tuple[int, ...]
    spec: str


@dataclass
class QuotaPlan:
    """Target counts per attribute value for ids 0..n-1, and who gets which value."""

    n: int
    seed: int
    quotas: list[Quota]
    _codes: dict[str, np.ndarray] = field(default_factory=dict, repr=False)  # path -> (n,) codes

    @property
    def counts(self) -> dict[str, dict[str, int]]:
        return {q.path: dict(zip(q.values, q.counts, strict=True)) for q in self.quotas}

    # A replacement id (>= n) -> the id in 0..n-1 whose quota values it takes (exact counts
    # with replacements: personaloom/run/replacements.py).
    aliases: dict[int, int] = field(default_factory=dict)

    def with_aliases(self, aliases: dict[int, int]) -> QuotaPlan:
        return QuotaPlan(self.n, self.seed, self.quotas, self._codes, dict(aliases))

    def _resolve(self, indices: np.ndarray) -> np.ndarray:
        if not self.aliases:
            return indices
        return np.array([self.aliases.get(int(i), int(i)) for i in indices], dtype=np.int64)

    def value_for(self, path: str, index: int) -> str | None:
        q = next(q for q in self.quotas if q.path == path)
        index = self.aliases.get(index, index)
        if not 0 <= index < self.n:
            return None
        return q.values[int(self._codes[path][index])]

    def forced_codes(self, tax: Taxonomy, indices: np.ndarray) -> dict[str, np.ndarray]:
        """path -> value code per index (NaN outside 0..n-1 unless aliased into it) in the
        leaf's value order."""
        out = {}
        indices = self._resolve(np.asarray(indices))
        inside = (indices >= 0) & (indices < self.n)
        for q in self.quotas:
            leaf = tax.leaf(q.path)
            remap = np.array([leaf.values.index(v) for v in q.values], dtype=np.float64)
            codes = np.full(len(indices), np.nan)
            codes[inside] = remap[self._codes[q.path][indices[inside]]]
            out[q.path] = codes
        return out


def parse_quota(tax: Taxonomy, spec: str) -> tuple[str, tuple[str, ...], tuple[float, ...]]:
    if "=" not in spec:
        raise UserError(f"--quota {spec}: expected PATH=uniform or PATH=value:share,value:share")
    path, _, body = spec.partition("=")
    path, body = path.strip(), body.strip()
    if path not in tax:
        raise UserError(f"--quota {spec}: unknown attribute {path!r} in {tax.ref}")
    leaf = tax.leaf(path)
    if leaf.kind != "categorical":
        raise UserError(
            f"--quota {spec}: {path} is {leaf.kind}; quotas apply to categorical attributes"
        )
    if body == "uniform":
        return path, leaf.values, tuple(1.0 for _ in leaf.values)
    if body == "natural" and leaf.weights is not None:
        return path, leaf.values, leaf.weights
    shares: dict[str, float] = {}
    for part in body.split(","):
        value, sep, share = part.rpartition(":")
        value = value.strip()
        if not sep or not value:
            raise UserError(f"--quota {spec}: {part!r} is not value:share")
        if value not in leaf.values:
            raise UserError(
                f"--quota {spec}: {value!r} is not a value of {path} ({', '.join(leaf.values[:10])}...)"
            )
        try:
            x = float(share)
        except ValueError:
            raise UserError(
                f"--quota {spec}: share {share!r} of {value!r} is not a number"
            ) from None
        if not math.isfinite(x) or x < 0:
            raise UserError(f"--quota {spec}: share of {value!r} must be >= 0")
        if value in shares:
            raise UserError(f"--quota {spec}: {value!r} listed twice")
        shares[value] = x
    if sum(shares.values()) <= 0:
        raise UserError(f"--quota {spec}: shares sum to 0")
    return path, tuple(shares), tuple(shares.values())


def plan_quotas(tax: Taxonomy, specs: Iterable[str], n: int, seed: int) -> QuotaPlan:
    """Allocate exact counts (largest remainder) and assign them to ids 0..n-1."""
    if n < 0:
        raise UserError(f"--personas {n}: must be >= 0")
    quotas: list[Quota] = []
    codes: dict[str, np.ndarray] = {}
    for spec in specs:
        path, values, shares = parse_quota(tax, spec)
        if path in codes:
            raise UserError(f"--quota {spec}: {path} has two quotas")
        counts = largest_remainder(n, shares)
        base = np.repeat(np.arange(len(values)), counts)
        rng = np.random.default_rng([seed, n, zlib.crc32(path.encode()), 0x9007A])
        codes[path] = rng.permutation(base)
        quotas.append(Quota(path, tuple(values), tuple(shares), tuple(counts), spec))
    return QuotaPlan(n=n, seed=seed, quotas=quotas, _codes=codes)
