"""Skeleton sampling: which attributes a persona gets, and their values.

Persona `i` of seed `s` reads its randomness from a counter-based hash of `(s, i, slot)`
(splitmix64): every random decision has its own fixed slot, so a persona does not depend
on the batch it was sampled in, on the worker or on where a run restarted. Sampling is
vectorised over a batch of personas (numpy), which is what makes a million deep skeletons
cheap; `sample_skeleton` is a batch of one.

Per persona (see docs/taxonomy.md, "Sampling"):
1. Selection. The focus is the subcategories holding the anchors plus
   `focus_subcategories` drawn at random (weighted by `category_weights`). Every other
   sampled leaf is *near* (in a focus subcategory), *mid* (in a root category the focus
   touches) or *far* (in an untouched root category). `attributes_per_persona` is filled
   near:mid:far by `mix` (largest remainder; a class that runs out passes its share on),
   uniformly at random within a class. Anchors and quota attributes are always in, and
   every chosen leaf pulls in the attributes its `given`/`scale`/`when` read.
   Generated leaves are chosen the same way (`generated_per_persona`).
2. Values, in sampling order (anchors, then file order): a leaf whose `when` is false is
   dropped; `given` picks the row of its table; `scale` multiplies numbers.
3. Rules: a violated rule resamples its target attribute and everything that depends on
   it, with fresh random slots, up to `max_rule_retries` times; then the skeleton is
   marked rejected with the rule's name.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from personaloom.taxonomy import identity
from personaloom.taxonomy.model import Leaf, Taxonomy
from personaloom.taxonomy.plan import SamplingPlan, compile_taxonomy
from personaloom.taxonomy.settings import PRESETS, Mix, SamplingSettings

if TYPE_CHECKING:
    from personaloom.taxonomy.quotas import QuotaPlan
    from personaloom.taxonomy.rules import RuleSet

__all__ = [
    "PRESETS",
    "Mix",
    "SamplingSettings",
    "Skeleton",
    "SkeletonBatch",
    "sample_batch",
    "sample_skeleton",
    "sample_skeletons",
]

# ----------------------------------------------------------------------------- randomness

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_S30, _S27, _S31, _S11 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(11)
_MASK64 = (1 << 64) - 1

STREAM_SELECT = 1 << 40
STREAM_GENERATED = 2 << 40
STREAM_FOCUS = 3 << 40
STREAM_VALUE = 4 << 40  # + attempt << 20 + leaf index


def _mix(z: np.ndarray) -> np.ndarray:
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


def _mix_int(z: int) -> int:
    z &= _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def persona_keys(seed: int, indices: np.ndarray) -> np.ndarray:
    """One 64-bit key per persona, a function of (seed, index) only."""
    base = np.uint64(_mix_int(_mix_int(seed) ^ 0x5DEECE66D))
    with np.errstate(over="ignore"):
        return _mix(indices.astype(np.uint64) * _GOLDEN + base)


def uniforms(keys: np.ndarray, slot: int) -> np.ndarray:
    """U[0, 1) for each persona key at one slot (53 random bits)."""
    s = np.uint64(_mix_int(slot * 0x9E3779B97F4A7C15 + 0xD1B54A32D192ED03))
    return (_mix(keys ^ s) >> _S11).astype(np.float64) * (1.0 / 9007199254740992.0)


def uniforms_2d(keys: np.ndarray, slots: np.ndarray) -> np.ndarray:
    """U[0, 1) of shape (personas, slots)."""
    s = np.array(
        [_mix_int(int(x) * 0x9E3779B97F4A7C15 + 0xD1B54A32D192ED03) for x in slots], dtype=np.uint64
    )
    return (_mix(keys[:, None] ^ s[None, :]) >> _S11).astype(np.float64) * (
        1.0 / 9007199254740992.0
    )


# ----------------------------------------------------------------------------- normal quantile


def _largest_remainder(total: int, shares: Sequence[float]) -> list[int]:
    s = sum(shares)
    exact = [total * x / s for x in shares]
    base = [math.floor(e) for e in exact]
    rest = total - sum(base)
    for i in sorted(range(len(shares)), key=lambda i: (base[i] - exact[i], i))[:rest]:
        base[i] += 1
    return base


def _select(
    plan: SamplingPlan,
    keys: np.ndarray,
    pool: np.ndarray,
    total: int,
    focus: np.ndarray,
    touched: np.ndarray,
    mix: Mix,
    weights: np.ndarray,
    stream: int,
    exclude: np.ndarray | None,
) -> np.ndarray:
    """Choose `total` columns of `pool` per persona, near:mid:far by `mix`. -> (B, len(pool)) bool."""
    B, m = len(keys), len(pool)
    if m == 0 or total <= 0:
        return np.zeros((B, m), dtype=bool)
    # class per candidate: 0 near, 1 mid, 2 far, 3 excluded (already in)
    cls = np.full((B, m), 2, dtype=np.int8)
    cls[touched[:, plan.root_of[pool]]] = 1
    cls[focus[:, plan.parent_of[pool]]] = 0
    if exclude is not None:
        cls[exclude] = 3
    # Efraimidis-Spirakis weighted sampling without replacement: the largest u^(1/w) win
    u = uniforms_2d(keys, stream + pool)
    w = weights[plan.root_of[pool]]
    heavy = w != 1.0
    if heavy.any():
        u[:, heavy] **= 1.0 / w[heavy]
    key = cls + 0.999 * (1.0 - u)  # class first, then priority
    size = np.stack([(cls == c).sum(axis=1) for c in range(3)], axis=1)
    want = np.array(_largest_remainder(total, [mix.near, mix.mid, mix.far]))
    take = np.minimum(want[None, :], size)
    left = total - take.sum(axis=1)
    for c in range(3):  # a class that runs out passes its share on: near, then mid, then far
        extra = np.minimum(left, size[:, c] - take[:, c])
        take[:, c] += extra
        left -= extra
    ordered = np.argsort(key, axis=1)
    sorted_cls = np.take_along_axis(cls, ordered, axis=1).astype(np.intp)
    # after sorting, class c occupies positions start[c] .. start[c] + size[c] - 1;
    # the chosen ones are the first take[c] of them
    start = np.concatenate([np.zeros((B, 1), dtype=np.intp), np.cumsum(size, axis=1)], axis=1)
    limit = start + np.concatenate([take, np.zeros((B, 1), dtype=take.dtype)], axis=1)
    ok = np.arange(m)[None, :] < np.take_along_axis(limit, sorted_cls, axis=1)
    chosen = np.zeros((B, m), dtype=bool)
    np.put_along_axis(chosen, ordered, ok, axis=1)
    return chosen


# ----------------------------------------------------------------------------- batches


@dataclass(frozen=True)
class Skeleton:
    """One persona's sampled attributes, before the model enriches it.

    `attributes`: (path, display value) in sampling order, anchors first. A display value
    is the category text, or a number followed by its unit ("34 years", "52300 USD/year").
    `values`: path -> raw value (str for categories, float for numbers).
    `generated`: generated leaves for the model to fill, in taxonomy (category) order.
    `rejected`: None, or the name of the rule that retries could not satisfy.
    `name`: the value of the first identity attribute (the persona's name), or "".
    """

    index: int
    seed: int
    taxonomy: str
    attributes: list[tuple[str, str]]
    generated: list[Leaf]
    rejected: str | None
    values: dict[str, str | float]
    name: str = ""

    def value(self, path: str) -> str | float | None:
        return self.values.get(path)

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "seed": self.seed,
            "taxonomy": self.taxonomy,
            "attributes": [{"path": p, "value": v} for p, v in self.attributes],
            "generated": [
                {"path": leaf.path, "description": leaf.description} for leaf in self.generated
            ],
            "rejected": self.rejected,
            "name": self.name,
        }


class SkeletonBatch:
    """Skeletons of a batch as matrices: V (values, NaN = absent), generated mask, rejections."""

    def __init__(
        self,
        plan: SamplingPlan,
        seed: int,
        indices: np.ndarray,
        V: np.ndarray,
        gen_chosen: np.ndarray,
        rejected: list[str | None],
    ) -> None:
        self.plan = plan
        self.seed = seed
        self.indices = indices
        self.V = V
        self.gen_chosen = gen_chosen  # (B, len(plan.generated))
        self.rejected = rejected

    def __len__(self) -> int:
        return len(self.indices)

    def _entries(self) -> tuple[np.ndarray, np.ndarray, pa.Array]:
        """Row-major (row, column, value) of every present attribute, in sampling order."""
        plan = self.plan
        order = plan.order
        present = ~np.isnan(self.V[:, order])
        r, j = np.nonzero(present)
        cols = order[j]
        x = self.V[r, cols]
        is_num = plan.is_numeric[cols]
        is_name = plan.is_identity[cols]
        idx = np.empty(len(r), dtype=np.int64)
        cat = ~is_num & ~is_name
        idx[cat] = plan.cat_offset[cols[cat]] + x[cat].astype(np.int64)
        parts = [plan.dictionary]
        next_id = len(plan.dictionary)
        num = np.flatnonzero(is_num)
        if len(num):
            by_col = num[np.argsort(cols[num], kind="stable")]
            bounds = np.flatnonzero(np.diff(cols[by_col])) + 1
            for group in np.split(by_col, bounds):
                leaf = plan.tax.leaves[int(cols[group[0]])]
                parts.append(format_numbers(x[group], leaf.decimals, leaf.unit))
                idx[group] = np.arange(next_id, next_id + len(group))
                next_id += len(group)
        names = np.flatnonzero(is_name)
        if len(names):
            parts.append(pa.array(self._names(r[names], cols[names]), pa.string()))
            idx[names] = np.arange(next_id, next_id + len(names))
            next_id += len(names)
        if not len(idx):
            return r, cols, pa.array([], pa.string())
        values = pa.concat_arrays(parts).take(pa.array(idx))
        return r, cols, values

    def _names(self, rows: np.ndarray, cols: np.ndarray) -> list[str]:
        """The display text of identity attributes (`identity.draw_name`)."""
        tax = self.plan.tax
        out = []
        for row, col in zip(rows.tolist(), cols.tolist(), strict=True):
            spec = tax.leaves[col].identity
            country = self._text(row, spec.country)
            gender = self._text(row, spec.gender) if spec.gender else None
            name = identity.draw_name(
                tax.locales,
                self.seed,
                int(self.indices[row]),
                country or "",
                identity.gender_class(gender, spec.genders),
            )
            out.append(name.text if name is not None else "")
        return out

    def _text(self, row: int, path: str) -> str | None:
        col = self.plan.col_of[path]
        code = self.V[row, col]
        return None if np.isnan(code) else str(self.plan.values[col][int(code)])

    def skeletons(self) -> Iterator[Skeleton]:
        r, cols, values = self._entries()
        texts = values.to_pylist()
        leaves = self.plan.tax.leaves
        paths = self.plan.paths[cols].tolist()
        # raw values: the text for categories, the number for numeric attributes
        numeric = self.plan.is_numeric[cols]
        raws: list[Any] = list(texts)
        if numeric.any():
            where = np.flatnonzero(numeric)
            for k, x in zip(where.tolist(), self.V[r[where], cols[where]].tolist(), strict=True):
                raws[k] = x
        bounds = np.searchsorted(r, np.arange(len(self) + 1)).tolist()
        gen = self.plan.generated
        ref = self.plan.tax.ref
        name_paths = set(self.plan.paths[self.plan.is_identity].tolist())
        for i in range(len(self)):
            lo, hi = bounds[i], bounds[i + 1]
            name = ""
            if name_paths:
                name = next(
                    (t for p, t in zip(paths[lo:hi], texts[lo:hi], strict=True) if p in name_paths),
                    "",
                )
            yield Skeleton(
                index=int(self.indices[i]),
                seed=self.seed,
                taxonomy=ref,
                attributes=list(zip(paths[lo:hi], texts[lo:hi], strict=True)),
                generated=[leaves[c] for c in gen[self.gen_chosen[i]]],
                rejected=self.rejected[i],
                values=dict(zip(paths[lo:hi], raws[lo:hi], strict=True)),
                name=name,
            )

    def to_arrow(self) -> pa.Table:
        """index, seed, taxonomy, attributes list<struct<path, value>>, generated list<str>, rejected."""
        r, cols, values = self._entries()
        B = len(self)
        offsets = pa.array(np.searchsorted(r, np.arange(B + 1)).astype(np.int32))
        paths = pa.DictionaryArray.from_arrays(
            pa.array(cols.astype(np.int32)), pa.array([leaf.path for leaf in self.plan.tax.leaves])
        )
        attrs = pa.ListArray.from_arrays(
            offsets, pa.StructArray.from_arrays([paths, values], ["path", "value"])
        )
        gr, gc = np.nonzero(self.gen_chosen)
        goffsets = pa.array(np.searchsorted(gr, np.arange(B + 1)).astype(np.int32))
        gen_paths = pa.DictionaryArray.from_arrays(
            pa.array(self.plan.generated[gc].astype(np.int32)),
            pa.array([leaf.path for leaf in self.plan.tax.leaves]),
        )
        generated = pa.ListArray.from_arrays(goffsets, gen_paths)
        return pa.table(
            {
                "index": pa.array(self.indices.astype(np.int64)),
                "seed": pa.array(np.full(B, self.seed, dtype=np.int64)),
                "taxonomy": pa.array([self.plan.tax.ref] * B).dictionary_encode(),
                "attributes": attrs,
                "generated": generated,
                "rejected": pa.array(self.rejected, type=pa.string()),
            }
        )


def format_numbers(x: np.ndarray, decimals: int, unit: str | None) -> pa.Array:
    """Numbers as display strings: fixed decimals, then ' unit' (vectorised)."""
    if decimals == 0:
        out = pa.array(np.rint(x).astype(np.int64)).cast(pa.string())
    else:
        scale = 10**decimals
        scaled = np.rint(np.abs(x) * scale).astype(np.int64)
        whole = pa.array(scaled // scale).cast(pa.string())
        frac = pc.utf8_lpad(pa.array(scaled % scale).cast(pa.string()), decimals, "0")
        sign = pa.array(np.where((x < 0) & (scaled > 0), "-", ""))
        signed = pc.binary_join_element_wise(sign, whole, "")
        out = pc.binary_join_element_wise(signed, frac, ".")
    if unit:
        out = pc.binary_join_element_wise(out, pa.scalar(unit), " ")
    return out


def _settings_for(tax: Taxonomy, settings: SamplingSettings | str | None) -> SamplingSettings:
    if settings is None:
        return tax.settings("quick")
    if isinstance(settings, str):
        return tax.settings(settings)
    return settings


def sample_batch(
    tax: Taxonomy,
    seed: int,
    indices: Sequence[int] | np.ndarray,
    settings: SamplingSettings | str | None = None,
    rules: RuleSet | None = None,
    quota_plan: QuotaPlan | None = None,
) -> SkeletonBatch:
    """Sample the skeletons of `indices` (any order, any subset) for `seed`."""
    if seed < 0 or seed >= 2**64:
        raise ValueError(f"seed must be in [0, 2**64), got {seed}")
    settings = _settings_for(tax, settings)
    plan = compile_taxonomy(tax)
    idx = np.asarray(indices, dtype=np.int64)
    if idx.ndim != 1 or (idx < 0).any():
        raise ValueError("indices must be non-negative integers")
    B = len(idx)
    keys = persona_keys(seed, idx)

    # forced quota values (always sampled: like anchors, they are in every persona)
    forced: dict[int, np.ndarray] = {}
    if quota_plan is not None:
        for path, codes in quota_plan.forced_codes(tax, idx).items():
            forced[plan.col_of[path]] = codes

    # 1. selection
    weights = np.ones(plan.n_roots)
    for name, w in settings.category_weights.items():
        if name in plan.tax.categories:
            weights[plan.tax.categories.index(name)] = max(w, 1e-9)
    focus = np.zeros((B, plan.n_parents), dtype=bool)
    focus[:, plan.parent_of[plan.anchors]] = True
    n_themes = min(settings.focus_subcategories, plan.n_parents)
    if n_themes > 0:
        u = uniforms_2d(keys, STREAM_FOCUS + np.arange(plan.n_parents))
        pw = weights[plan.parent_root]
        prio = u ** (1.0 / pw)
        prio[focus] = 2.0  # anchors' subcategories are in already; do not count them
        already = focus.sum(axis=1)
        top = np.argsort(-prio, axis=1, kind="stable")
        rankpos = np.arange(plan.n_parents)[None, :]
        pick = rankpos < (already + n_themes)[:, None]
        np.put_along_axis(focus, top, pick | np.take_along_axis(focus, top, axis=1), axis=1)
    touched = np.zeros((B, plan.n_roots), dtype=bool)
    fr, fp = np.nonzero(focus)
    touched[fr, plan.parent_root[fp]] = True

    chosen = np.zeros((B, plan.n), dtype=bool)
    chosen[:, plan.anchors] = True
    for c in forced:
        chosen[:, c] = True
    exclude = chosen[:, plan.candidates]
    budget = settings.attributes_per_persona - len(plan.anchors)
    extra_forced = [c for c in forced if c not in set(plan.anchors.tolist())]
    budget -= len(extra_forced)
    pick = _select(
        plan,
        keys,
        plan.candidates,
        budget,
        focus,
        touched,
        settings.mix,
        weights,
        STREAM_SELECT,
        exclude if extra_forced else None,
    )
    chosen[:, plan.candidates] |= pick
    gen_chosen = _select(
        plan,
        keys,
        plan.generated,
        settings.generated_per_persona,
        focus,
        touched,
        settings.mix,
        weights,
        STREAM_GENERATED,
        None,
    )
    # dependencies of chosen leaves come along (sampled ones, and those generated leaves read)
    for c, ds in plan.deps.items():
        if plan.position[c] >= 0:
            chosen[:, ds] |= chosen[:, c : c + 1]
    gen_pos = {int(c): j for j, c in enumerate(plan.generated)}
    for c, ds in plan.deps.items():
        if c in gen_pos:
            chosen[:, ds] |= gen_chosen[:, gen_pos[c] : gen_pos[c] + 1]

    # 2. values
    V = np.full((B, plan.n), np.nan, order="F")
    all_rows = np.arange(B)
    for c in plan.order:
        _sample_leaf(plan, int(c), V, chosen, keys, all_rows, 0, forced)

    # 3. rules
    rejected: list[str | None] = [None] * B
    if rules is not None and len(rules):
        bound = rules.bind(tax)
        viol = bound.first_violation(V, all_rows)
        active = np.flatnonzero(viol >= 0)
        attempt = 0
        while len(active) and attempt < settings.max_rule_retries:
            attempt += 1
            first = viol[active]
            for r in np.unique(first):
                rows = active[first == r]
                target = bound.targets[int(r)]
                for c in plan.downstream[target]:
                    _sample_leaf(plan, c, V, chosen, keys, rows, attempt, forced)
            viol_active = bound.first_violation(V, active)
            active = active[viol_active >= 0]
            viol[active] = viol_active[viol_active >= 0]
        for i in active:
            rejected[i] = bound.names[int(viol[i])]
    # generated leaves whose condition is false are dropped
    for j, c in enumerate(plan.generated):
        fn = plan.whens.get(int(c))
        if fn is not None:
            rows = np.flatnonzero(gen_chosen[:, j])
            if len(rows):
                gen_chosen[rows, j] = fn(V, rows)
    return SkeletonBatch(plan, seed, idx, V, gen_chosen, rejected)


def _sample_leaf(
    plan: SamplingPlan,
    c: int,
    V: np.ndarray,
    chosen: np.ndarray,
    keys: np.ndarray,
    rows: np.ndarray,
    attempt: int,
    forced: dict[int, np.ndarray],
) -> None:
    sel = rows[chosen[rows, c]]
    V[rows, c] = np.nan
    if c in forced:
        f = forced[c][sel]
        ok = ~np.isnan(f)
        V[sel[ok], c] = f[ok]
        sel = sel[~ok]
    if not len(sel):
        return
    for g in plan.given_cols[c]:  # no conditioning context, no value
        sel = sel[~np.isnan(V[sel, g])]
    fn = plan.whens.get(c)
    if fn is not None and len(sel):
        sel = sel[fn(V, sel)]
    if not len(sel):
        return
    u = uniforms(keys[sel], STREAM_VALUE + (attempt << 20) + c)
    V[sel, c] = plan.samplers[c].draw(V, sel, u)


def sample_skeleton(
    tax: Taxonomy,
    seed: int,
    index: int,
    settings: SamplingSettings | str | None = None,
    rules: RuleSet | None = None,
    quota_plan: QuotaPlan | None = None,
) -> Skeleton:
    """The skeleton of persona `index` of a run with `seed` (same as inside any batch)."""
    batch = sample_batch(tax, seed, [index], settings, rules, quota_plan)
    return next(batch.skeletons())


def sample_skeletons(
    tax: Taxonomy,
    seed: int,
    indices: Iterable[int],
    settings: SamplingSettings | str | None = None,
    rules: RuleSet | None = None,
    quota_plan: QuotaPlan | None = None,
    batch_size: int = 1024,
) -> Iterator[Skeleton]:
    """Skeletons of `indices`, in the order given, sampled `batch_size` at a time."""
    for batch in iter_batches(tax, seed, indices, settings, rules, quota_plan, batch_size):
        yield from batch.skeletons()


def iter_batches(
    tax: Taxonomy,
    seed: int,
    indices: Iterable[int],
    settings: SamplingSettings | str | None = None,
    rules: RuleSet | None = None,
    quota_plan: QuotaPlan | None = None,
    batch_size: int = 4096,
) -> Iterator[SkeletonBatch]:
    """Like sample_skeletons, but yields columnar batches (for Parquet, benchmarks)."""
    buf: list[int] = []
    for i in indices:
        buf.append(int(i))
        if len(buf) >= batch_size:
            yield sample_batch(tax, seed, buf, settings, rules, quota_plan)
            buf = []
    if buf:
        yield sample_batch(tax, seed, buf, settings, rules, quota_plan)
