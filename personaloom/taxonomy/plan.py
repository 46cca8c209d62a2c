"""A taxonomy compiled for vectorised sampling: per-leaf samplers, sampling order,
dependency closures and value dictionaries, built once per `Taxonomy` and cached.

Both the sampler (`sampling`) and the rule checks (`rules`) work on this plan; it imports
neither of them.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from personaloom.taxonomy import expressions as ex
from personaloom.taxonomy.model import Leaf, NumericSpec, Taxonomy

_A = (
    -3.969683028665376e01,
    2.209460984245205e02,
    -2.759285104469687e02,
    1.383577518672690e02,
    -3.066479806614716e01,
    2.506628277459239e00,
)
_B = (
    -5.447609879822406e01,
    1.615858368580409e02,
    -1.556989798598866e02,
    6.680131188771972e01,
    -1.328068155288572e01,
)
_C = (
    -7.784894002430293e-03,
    -3.223964580411365e-01,
    -2.400758277161838e00,
    -2.549732539343734e00,
    4.374664141464968e00,
    2.938163982698783e00,
)
_D = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e00, 3.754408661907416e00)


def _ndtri(p: np.ndarray) -> np.ndarray:
    """Inverse standard normal CDF (Acklam's rational approximation, rel. error < 1.2e-9)."""
    p = np.clip(p, 1e-300, 1 - 1e-16)
    out = np.empty_like(p)
    lo = p < 0.02425
    hi = p > 1 - 0.02425
    mid = ~(lo | hi)
    q = p[mid] - 0.5
    r = q * q
    out[mid] = (
        (((((_A[0] * r + _A[1]) * r + _A[2]) * r + _A[3]) * r + _A[4]) * r + _A[5])
        * q
        / (((((_B[0] * r + _B[1]) * r + _B[2]) * r + _B[3]) * r + _B[4]) * r + 1)
    )
    for mask, sign, pp in ((lo, 1.0, p[lo]), (hi, -1.0, 1 - p[hi])):
        if mask.any():
            q = np.sqrt(-2 * np.log(pp))
            out[mask] = (
                sign
                * (((((_C[0] * q + _C[1]) * q + _C[2]) * q + _C[3]) * q + _C[4]) * q + _C[5])
                / ((((_D[0] * q + _D[1]) * q + _D[2]) * q + _D[3]) * q + 1)
            )
    return out


def _phi(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


# ----------------------------------------------------------------------------- compiled taxonomy


class _Rows:
    """Conditional table lookup: the given attributes' codes -> a row of the leaf's table.

    Every combination of given values (plus "absent" for each) is resolved once, at compile
    time, with `Leaf.row`; identical rows are shared.
    """

    def __init__(self, leaf: Leaf, col_of: dict[str, int], tax: Taxonomy) -> None:
        givens = [tax.leaf(g) for g in leaf.given]
        self.cols = [col_of[g.path] for g in givens]
        self.sizes = [len(g.values) for g in givens]
        self.mults: list[int] = []
        m = 1
        for size in reversed(self.sizes):
            self.mults.insert(0, m)
            m *= size + 1
        unique: dict[int, int] = {}
        self.rows: list[Any] = []
        lookup = []
        options = [[*g.values, None] for g in givens]
        for combo in itertools.product(*options):
            row = leaf.row(combo)
            j = unique.setdefault(id(row), len(self.rows))
            if j == len(self.rows):
                self.rows.append(row)
            lookup.append(j)
        self.lookup = np.array(lookup, dtype=np.intp)

    def index(self, V: np.ndarray, rows: np.ndarray) -> np.ndarray:
        combo = np.zeros(len(rows), dtype=np.intp)
        for col, size, mult in zip(self.cols, self.sizes, self.mults, strict=True):
            g = V[rows, col]
            combo += np.where(np.isnan(g), size, g).astype(np.intp) * mult
        return self.lookup[combo]


class _Categorical:
    def __init__(self, leaf: Leaf, col_of: dict[str, int], tax: Taxonomy) -> None:
        self.n = len(leaf.values)
        self.table: _Rows | None = None
        if leaf.given:
            self.table = _Rows(leaf, col_of, tax)
            self.cum = np.stack([_cumulative(r) for r in self.table.rows])
        else:
            assert leaf.weights is not None
            self.cum1 = _cumulative(leaf.weights)

    def draw(self, V: np.ndarray, rows: np.ndarray, u: np.ndarray) -> np.ndarray:
        if self.table is None:
            codes = np.searchsorted(self.cum1, u, side="right")
        else:
            codes = (self.cum[self.table.index(V, rows)] <= u[:, None]).sum(axis=1)
        return np.minimum(codes, self.n - 1).astype(np.float64)


def _cumulative(weights: Sequence[float]) -> np.ndarray:
    w = np.asarray(weights, dtype=np.float64)
    c = np.cumsum(w) / w.sum()
    c[w.nonzero()[0][-1] :] = 1.0
    return c


class _Numeric:
    # parameter rows: low, high, dist (0 uniform, 1 normal, 2 lognormal), loc, scale, Fa, Fb
    def __init__(self, leaf: Leaf, col_of: dict[str, int], tax: Taxonomy) -> None:
        self.integer = leaf.integer
        self.step = leaf.step
        self.table: _Rows | None = None
        specs: list[NumericSpec]
        if leaf.given:
            self.table = _Rows(leaf, col_of, tax)
            specs = self.table.rows
        else:
            assert leaf.numeric is not None
            specs = [leaf.numeric]
        self.params = np.array([self._row(s) for s in specs], dtype=np.float64)
        self.any_curved = bool((self.params[:, 2] > 0).any())
        self.scales = []
        for s in leaf.scale:
            given = tax.leaf(s.given)
            factors = np.array([s.factors.get(v, s.default) for v in given.values] + [s.default])
            self.scales.append((col_of[s.given], factors))

    def _row(self, s: NumericSpec) -> list[float]:
        low, high = s.low, s.high
        if self.integer:
            low, high = math.ceil(low), math.floor(high) + 1.0  # floor() of [low, high + 1)
        shift = 0.5 if self.integer else 0.0
        if s.distribution == "uniform":
            return [low, high, 0, 0, 1, 0, 1]
        if s.distribution == "normal":
            loc, scale = (s.mean or 0.0) + shift, s.sd or 1.0
            a, b = (low - loc) / scale, (high - loc) / scale
            return [low, high, 1, loc, scale, _phi(a), _phi(b)]
        loc, scale = math.log(s.median or 1.0), s.sigma or 1.0
        a = (math.log(max(low, 1e-12)) - loc) / scale
        b = (math.log(high) - loc) / scale
        return [low, high, 2, loc, scale, _phi(a), _phi(b)]

    def draw(self, V: np.ndarray, rows: np.ndarray, u: np.ndarray) -> np.ndarray:
        if self.table is None:
            low, high, dist, loc, scale, fa, fb = self.params[0]
            if dist == 0:
                x = low + u * (high - low)
            else:
                y = loc + scale * _ndtri(fa + u * (fb - fa))
                x = np.exp(y) if dist == 2 else y
        else:
            P = self.params[self.table.index(V, rows)]
            low, high = P[:, 0], P[:, 1]
            x = low + u * (high - low)
            if self.any_curved:
                curved = P[:, 2] > 0
                if curved.any():
                    Pc, uc = P[curved], u[curved]
                    y = Pc[:, 3] + Pc[:, 4] * _ndtri(Pc[:, 5] + uc * (Pc[:, 6] - Pc[:, 5]))
                    x[curved] = np.where(Pc[:, 2] == 2, np.exp(y), y)
        x = np.clip(x, low, high)
        if self.integer:
            x = np.minimum(np.floor(x), high - 1)
        for col, factors in self.scales:
            g = V[rows, col]
            g = np.where(np.isnan(g), len(factors) - 1, g).astype(np.intp)
            x = x * factors[g]
        if self.step:
            x = np.round(x / self.step) * self.step
        elif self.integer and self.scales:
            x = np.round(x)
        return x


class _Identity:
    """An identity leaf's column only marks the name as present (0.0), or absent (NaN)
    when the locale map covers not the persona's country: the name itself is drawn from
    (seed, index, country, gender) when the skeleton is displayed (`sampling`)."""

    def __init__(self, leaf: Leaf, col_of: dict[str, int], tax: Taxonomy) -> None:
        assert leaf.identity is not None
        country = tax.leaf(leaf.identity.country)
        self.col = col_of[country.path]
        locales = tax.locales
        self.covered = np.array(
            [locales is not None and locales.locales_for(v) is not None for v in country.values]
            + [False]
        )

    def draw(self, V: np.ndarray, rows: np.ndarray, u: np.ndarray) -> np.ndarray:
        codes = V[rows, self.col]
        codes = np.where(np.isnan(codes), len(self.covered) - 1, codes).astype(np.intp)
        return np.where(self.covered[codes], 0.0, np.nan)


@dataclass
class SamplingPlan:
    """A taxonomy compiled for vectorised sampling (built once per Taxonomy, cached)."""

    tax: Taxonomy
    n: int
    col_of: dict[str, int]
    order: np.ndarray  # sampled leaf columns, in sampling order
    position: np.ndarray  # column -> position in sampling order (-1 for generated)
    anchors: np.ndarray
    candidates: np.ndarray  # sampled non-anchor columns
    generated: np.ndarray  # generated columns, file order
    parent_of: np.ndarray  # column -> subcategory id
    root_of: np.ndarray  # column -> root id
    parent_root: np.ndarray  # subcategory id -> root id
    n_parents: int
    n_roots: int
    deps: dict[int, np.ndarray]  # column -> transitive dependency columns
    downstream: dict[int, list[int]]  # column -> itself and its transitive dependents, in order
    samplers: dict[int, Any]
    whens: dict[int, ex.Compiled]
    values: dict[int, np.ndarray]  # categorical column -> object array of value strings
    paths: np.ndarray  # column -> path (object array)
    given_cols: dict[int, list[int]]  # column -> columns of its `given` attributes
    dictionary: pa.Array  # every categorical value of every leaf, concatenated
    cat_offset: np.ndarray  # column -> offset of its values in `dictionary`
    is_numeric: np.ndarray  # column -> bool
    is_identity: np.ndarray  # column -> bool


_PLANS: dict[int, tuple[Taxonomy, SamplingPlan]] = {}


def compile_taxonomy(tax: Taxonomy) -> SamplingPlan:
    cached = _PLANS.get(id(tax))
    if cached is not None and cached[0] is tax:
        return cached[1]
    leaves = tax.leaves
    col_of = {leaf.path: leaf.index for leaf in leaves}
    n = len(leaves)
    order = np.array([col_of[leaf.path] for leaf in tax.sampling_order], dtype=np.intp)
    position = np.full(n, -1, dtype=np.intp)
    position[order] = np.arange(len(order))
    anchors = np.array([col_of[a] for a in tax.anchors], dtype=np.intp)
    anchor_set = set(anchors.tolist())
    candidates = np.array([c for c in order if c not in anchor_set], dtype=np.intp)
    generated = np.array([leaf.index for leaf in leaves if leaf.kind == "generated"], dtype=np.intp)
    parents: dict[str, int] = {}
    roots = {r: i for i, r in enumerate(tax.categories)}
    parent_of = np.array(
        [parents.setdefault(leaf.parent, len(parents)) for leaf in leaves], dtype=np.intp
    )
    root_of = np.array([roots[leaf.root] for leaf in leaves], dtype=np.intp)
    parent_root = np.zeros(len(parents), dtype=np.intp)
    parent_root[parent_of] = root_of

    direct = {leaf.index: [col_of[p] for p in leaf.depends_on] for leaf in leaves}
    deps: dict[int, np.ndarray] = {}
    for c in range(n):
        seen: set[int] = set()
        stack = list(direct[c])
        while stack:
            d = stack.pop()
            if d not in seen:
                seen.add(d)
                stack.extend(direct[d])
        if seen:
            deps[c] = np.array(sorted(seen), dtype=np.intp)
    downstream: dict[int, list[int]] = {int(c): [int(c)] for c in order}
    for c, ds in deps.items():
        if position[c] < 0:
            continue
        for d in ds:
            downstream[int(d)].append(c)
    for c in downstream:
        downstream[c].sort(key=lambda x: position[x])

    def resolve(path: str) -> ex.AttrInfo:
        leaf = tax.leaf(path)
        return ex.AttrInfo(col_of[path], leaf.kind, leaf.values)

    samplers: dict[int, Any] = {}
    whens: dict[int, ex.Compiled] = {}
    values: dict[int, np.ndarray] = {}
    for leaf in leaves:
        c = leaf.index
        if leaf.kind == "categorical":
            samplers[c] = _Categorical(leaf, col_of, tax)
            values[c] = np.array(leaf.values, dtype=object)
        elif leaf.kind == "numeric":
            samplers[c] = _Numeric(leaf, col_of, tax)
        elif leaf.kind == "identity":
            samplers[c] = _Identity(leaf, col_of, tax)
        if leaf.when:
            text = " and ".join(f"({w})" for w in leaf.when)
            whens[c] = ex.compile_batch(ex.parse(text), resolve)[0]
    plan = SamplingPlan(
        tax=tax,
        n=n,
        col_of=col_of,
        order=order,
        position=position,
        anchors=anchors,
        candidates=candidates,
        generated=generated,
        parent_of=parent_of,
        root_of=root_of,
        parent_root=parent_root,
        n_parents=len(parents),
        n_roots=len(roots),
        deps=deps,
        downstream=downstream,
        samplers=samplers,
        whens=whens,
        values=values,
        paths=np.array([leaf.path for leaf in leaves], dtype=object),
        # a name needs its country (no country, no name), like a table its `given`
        given_cols={
            leaf.index: [col_of[g] for g in leaf.given]
            + ([col_of[leaf.identity.country]] if leaf.identity else [])
            for leaf in leaves
        },
        dictionary=pa.array([v for leaf in leaves for v in leaf.values], type=pa.string()),
        cat_offset=np.cumsum([0] + [len(leaf.values) for leaf in leaves[:-1]]).astype(np.int64),
        is_numeric=np.array([leaf.kind == "numeric" for leaf in leaves]),
        is_identity=np.array([leaf.kind == "identity" for leaf in leaves]),
    )
    _PLANS[id(tax)] = (tax, plan)
    return plan


# ----------------------------------------------------------------------------- selection
