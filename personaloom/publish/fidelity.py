"""Population fidelity: how far a corpus's personas are from the population its taxonomy
describes, and whether the critic turned some groups down more than others.

**Target.** For every categorical attribute the taxonomy samples, the target distribution
is the share of each value among the skeletons that have the attribute, as the taxonomy's
weights, conditional tables, `when` conditions, attribute selection, rules and quotas
imply. It is estimated by Monte Carlo over `MONTE_CARLO_SKELETONS` (100,000) skeletons of
the run's taxonomy, preset, rules and quotas (seed `MONTE_CARLO_SEED`, ids 0..M-1, the
quotas planned over those M ids), every skeleton counted, those a rule rejects included
(the run samples them too). A quota'd attribute's target is its quota shares, exactly.
The Monte Carlo counts are cached per content (taxonomy, rule files, sampler source,
preset, quotas, size, seed) under `PERSONALOOM_FIDELITY_CACHE` or the user cache folder
(`~/.cache/personaloom/fidelity`), so a taxonomy pays for it once. A generating run
computes it in a background thread when it starts (`prefetch_target`), so finalize reads
it from the cache (or waits for that thread) instead of sampling it then.

**Three points.** Every persona id the run considered is a candidate (kept or rejected at
any stage). Its skeleton is re-sampled from (taxonomy, seed, id), as the run sampled it
(sampling is keyed on (seed, id) only; a replacement id takes its slot's quota values from
`DIR/.personaloom/replacements.json`), except for the released personas, whose sampled
attributes are read from the shards. A few released personas are re-sampled too and must
match their shards, or nothing is reported (the taxonomy, rules or sampler changed since
the run). The points:

- `sampled`: every candidate;
- `accepted`: candidates that passed every check before dedup (sampling rules,
  generation, critic): the released personas plus those dedup removed;
- `released`: the personas in the shards.

**Distances.** The total variation distance TV = 1/2 sum |q_v - p_v| = 1 - sum min(q_v, p_v)
between a point's value shares q and the target p, per attribute and for the joint of each
pair of categorical anchors (value `a | b`, over personas that have both). Beside it, the
TV expected from sampling alone: n draws from the target (n = personas with the attribute
at that point) give E[TV] = 1/2 sum E|X_v/n - p_v| with X_v ~ Binomial(n, p_v), exact by de
Moivre's formula for the binomial mean absolute deviation, and its spread (standard
deviation over `NULL_DRAWS` (200) simulated multinomial samples, seeded; at least 50 for
joints of more than 1,000 cells). The ten worst
attributes are those with the largest z = (TV - expected) / spread on the released
personas: a deviation beyond what chance gives for that many personas, so that rare
attributes, whose TV is large by chance alone, do not crowd out a real skew.

**Critic bias.** Acceptance per value of each categorical anchor: candidates the critic
reviewed (released, removed as duplicates, or rejected by the critic; not those a rule or
a generation failure stopped before it) and the share of them it accepted. A group with at
least `MIN_GROUP_SIZE` reviewed candidates whose acceptance differs from the overall rate
by more than `BIAS_MARGIN` (10 points) is flagged.

The tables are computed with polars (skeleton counts with numpy `bincount`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import threading
import time
import zlib
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import yaml

from personaloom import __version__
from personaloom.atomic import write_table_atomic
from personaloom.errors import UserError
from personaloom.project import Project

MONTE_CARLO_SKELETONS = 100_000  # skeletons behind the target (at least 100k)
MONTE_CARLO_SEED = 0xF1DE1  # the target's own seed: independent of any run's seed
BIAS_MARGIN = 0.10  # flag a group whose acceptance differs by more than this (10 points)
MIN_GROUP_SIZE = 20  # ... and that has at least this many reviewed candidates
WORST_ATTRIBUTES = 10
NULL_DRAWS = 200  # simulated samples for the spread of TV under sampling alone ...
NULL_DRAW_CELLS = 200_000  # ... fewer for joints of many cells (draws x cells at most this)
NULL_DRAWS_MIN = 50  # ... but never fewer than this
CHECK_SKELETONS = 16  # released personas re-sampled to check the skeletons reproduce
SAMPLE_BATCH = 4096
CACHE_ENV = "PERSONALOOM_FIDELITY_CACHE"
CACHE_FORMAT = 1
RULE_FILES = "rules*.y*ml"  # as the run reads validators/ (personaloom.run.pipeline)
PAIR_SEPARATOR = " x "
VALUE_SEPARATOR = " | "
POINTS = ("sampled", "accepted", "released")
# Fates of a candidate, from its last outcome (see `_fates`).
RELEASED, DUPLICATE, CRITIC, RULES, OTHER = "released", "duplicate", "critic", "rules", "other"
POINT_FATES = {
    "sampled": (RELEASED, DUPLICATE, CRITIC, RULES, OTHER),
    "accepted": (RELEASED, DUPLICATE),
    "released": (RELEASED,),
}
REVIEWED = (RELEASED, DUPLICATE, CRITIC)


# -- the run's sampling ----------------------------------------------------------------------
@dataclass
class RunSampling:
    """What the run sampled skeletons from, rebuilt from its folder."""

    taxonomy: Any  # personaloom.taxonomy.model.Taxonomy
    taxonomy_path: Path
    rule_files: list[Path]
    rules: Any  # RuleSet
    seed: int
    preset: str
    personas: int
    quotas: list[str]
    aliases: dict[int, int] = field(default_factory=dict)

    @property
    def categorical(self) -> list[str]:
        return [leaf.path for leaf in self.taxonomy.leaves if leaf.kind == "categorical"]

    @property
    def anchors(self) -> list[str]:
        """The categorical anchors, in the taxonomy's order."""
        return [a for a in self.taxonomy.anchors if self.taxonomy.leaf(a).kind == "categorical"]

    def quota_plan(self, n: int, seed: int, aliases: dict[int, int] | None = None) -> Any:
        if not self.quotas:
            return None
        from personaloom.taxonomy.quotas import plan_quotas

        plan = plan_quotas(self.taxonomy, self.quotas, n=n, seed=seed)
        if aliases:
            plan = plan.with_aliases(aliases)
        return plan

    def batches(self, ids: Sequence[int]) -> Any:
        """The run's skeletons of `ids` as columnar batches (`SkeletonBatch`)."""
        from personaloom.taxonomy.sampling import iter_batches

        plan = self.quota_plan(self.personas, self.seed, self.aliases)
        return iter_batches(
            self.taxonomy, self.seed, ids, self.preset, self.rules, plan, SAMPLE_BATCH
        )


def run_sampling(out: Path, manifest: dict[str, Any]) -> RunSampling | str:
    """The run's sampling settings (config, taxonomy, rules, replacement aliases), or why
    they cannot be had."""
    state = Path(out) / ".personaloom"
    config = manifest.get("config")
    if not isinstance(config, dict):
        path = state / "config.yaml"
        if not path.exists():
            return "no run configuration (manifest `config` or .personaloom/config.yaml)"
        try:
            config = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            return f"{path}: unreadable: {exc}"
        if not isinstance(config, dict):
            return f"{path}: not a run configuration"
    try:
        seed = int(config.get("seed", 0))
        personas = int(config.get("personas", 0))
    except (TypeError, ValueError):
        return "run configuration: seed or personas is not a number"
    preset = str(config.get("preset") or "quick")
    quotas = [str(q) for q in config.get("quotas") or []]
    from personaloom.taxonomy.loader import load_taxonomy
    from personaloom.taxonomy.rules import RuleSet, load_rules

    try:
        project = Project.locate(manifest.get("project"))
        taxonomy_path = project.taxonomy_path(str(config.get("taxonomy") or "human"))
        tax = load_taxonomy(taxonomy_path)
        files = sorted(project.validators.glob(RULE_FILES)) if project.validators.is_dir() else []
        rules = load_rules(files, taxonomy=tax) if files else RuleSet.empty()
    except (UserError, OSError) as exc:
        return f"cannot load the run's taxonomy or rules: {exc}"
    ref = manifest.get("taxonomy")
    if ref and ref != tax.ref:
        return f"the taxonomy found ({taxonomy_path}) is {tax.ref}, the run used {ref}"
    return RunSampling(
        tax, taxonomy_path, files, rules, seed, preset, personas, quotas, _aliases(state, manifest)
    )


def _aliases(state: Path, manifest: dict[str, Any]) -> dict[int, int]:
    """Replacement id -> the slot whose quota values it takes (exact-N runs): the run's
    `replacements.json`, and for a merged corpus its parts' (each part replaces its own
    shard's ids, so the maps do not overlap)."""
    folders = [state]
    for part in (manifest.get("merge") or {}).get("parts") or []:
        if isinstance(part, dict) and part.get("path"):
            folders.append(Path(part["path"]) / ".personaloom")
    out: dict[int, int] = {}
    for folder in folders:
        path = folder / "replacements.json"
        try:
            data = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
            out.update({int(i): int(s) for i, s in (data.get("slot_of") or {}).items()})
        except (OSError, ValueError, AttributeError):
            continue  # a replacement that re-samples differently fails the check below
    return out


# -- counting skeletons ----------------------------------------------------------------------
class SkeletonCounts:
    """Value counts of categorical attributes over skeleton batches, and anchor columns."""

    def __init__(self, sampling: RunSampling) -> None:
        from personaloom.taxonomy.plan import compile_taxonomy

        plan = compile_taxonomy(sampling.taxonomy)
        self.cols = np.array(sorted(plan.values), dtype=np.int64)
        self.offset = plan.cat_offset[self.cols]
        self.size = len(plan.dictionary)
        paths: list[str] = [""] * self.size
        for c in self.cols.tolist():
            start = int(plan.cat_offset[c])
            for k in range(len(plan.values[c])):
                paths[start + k] = str(plan.paths[c])
        self.entry_path = paths
        self.entry_value = plan.dictionary.to_pylist()
        self.anchor_paths = sampling.anchors
        self.anchor_cols = [plan.col_of[a] for a in self.anchor_paths]
        self.anchor_values = [plan.values[c] for c in self.anchor_cols]

    def counts(self, V: np.ndarray) -> np.ndarray:
        sub = V[:, self.cols]
        present = ~np.isnan(sub)
        idx = (sub + self.offset[None, :])[present].astype(np.int64)
        return np.bincount(idx, minlength=self.size)

    def frame(self, counts: np.ndarray) -> pl.DataFrame:
        """path, value, count (non-zero counts)."""
        nz = np.flatnonzero(counts)
        return pl.DataFrame(
            {
                "path": [self.entry_path[i] for i in nz],
                "value": [self.entry_value[i] for i in nz],
                "count": counts[nz].astype(np.int64),
            },
            schema={"path": pl.String, "value": pl.String, "count": pl.Int64},
        )

    def anchors(self, V: np.ndarray) -> dict[str, list[str | None]]:
        out = {}
        for path, c, values in zip(
            self.anchor_paths, self.anchor_cols, self.anchor_values, strict=True
        ):
            x = V[:, c]
            ok = ~np.isnan(x)
            col = np.full(len(x), None, dtype=object)
            col[ok] = values[x[ok].astype(np.int64)]
            out[path] = col.tolist()
        return out


# -- the target ------------------------------------------------------------------------------
@dataclass
class Target:
    marginals: pl.DataFrame  # path, value, count (the Monte Carlo counts)
    pairs: pl.DataFrame  # path ("a x b"), value ("va | vb"), count
    skeletons: int
    seed: int
    cached: bool = False

    def shares(self, sampling: RunSampling) -> pl.DataFrame:
        """path, value, share: the target distribution (quota'd attributes: the quota shares)."""
        both = pl.concat([self.marginals, self.pairs])
        shares = both.with_columns(
            share=pl.col("count") / pl.col("count").sum().over("path")
        ).select("path", "value", "share")
        quota = _quota_shares(sampling)
        if quota.height:
            shares = pl.concat(
                [
                    shares.filter(
                        ~pl.col("path").is_in(quota.get_column("path").unique().to_list())
                    ),
                    quota,
                ]
            )
        return shares


def _quota_shares(sampling: RunSampling) -> pl.DataFrame:
    from personaloom.taxonomy.quotas import parse_quota

    rows: list[tuple[str, str, float]] = []
    for spec in sampling.quotas:
        path, values, shares = parse_quota(sampling.taxonomy, spec)
        total = float(sum(shares))
        rows += [(path, v, s / total) for v, s in zip(values, shares, strict=True) if s > 0]
    return pl.DataFrame(
        rows, schema={"path": pl.String, "value": pl.String, "share": pl.Float64}, orient="row"
    )


# cache key -> the computation of that target under way in this process
_inflight: dict[str, Future[Target]] = {}
_inflight_lock = threading.Lock()


def cache_folder() -> Path:
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_cache_dir("personaloom")) / "fidelity"


def _cache_key(sampling: RunSampling, size: int, seed: int) -> str:
    h = hashlib.sha256()
    h.update(f"{CACHE_FORMAT}|{__version__}|{sampling.preset}|{size}|{seed}|".encode())
    h.update(json.dumps(sampling.quotas).encode())
    h.update(sampling.taxonomy_path.read_bytes())
    for path in sampling.rule_files:
        h.update(path.name.encode())
        h.update(path.read_bytes())
    # the sampler's own source: a change to it changes the skeletons
    taxonomy_package = Path(__file__).resolve().parent.parent / "taxonomy"
    for path in sorted(taxonomy_package.glob("*.py")):
        h.update(path.read_bytes())
    return h.hexdigest()[:24]


def target_counts(
    sampling: RunSampling,
    *,
    size: int = MONTE_CARLO_SKELETONS,
    seed: int = MONTE_CARLO_SEED,
    cache: Path | bool | None = None,
) -> Target:
    """Monte Carlo counts of every categorical attribute and anchor pair over `size`
    skeletons (ids 0..size-1 of `seed`, quotas planned over them). `cache`: a folder, None
    for `cache_folder()`, False for none. A computation of the same target already under
    way in this process (`prefetch_target`) is waited for, not repeated."""
    folder = cache_folder() if cache is None else (cache or None)
    key = _cache_key(sampling, size, seed)
    path = Path(folder) / f"target-{key}.parquet" if folder is not None else None
    if path is not None and path.exists():
        try:
            table = pl.read_parquet(path)
            return Target(
                table.filter(pl.col("kind") == "marginal").drop("kind"),
                table.filter(pl.col("kind") == "pair").drop("kind"),
                size,
                seed,
                cached=True,
            )
        except Exception:  # a broken cache file is recomputed
            path.unlink(missing_ok=True)
    with _inflight_lock:
        running = _inflight.get(key)
        if running is None:
            mine: Future[Target] = Future()
            _inflight[key] = mine
    if running is not None:
        try:
            return running.result()
        except Exception:
            pass  # the prefetch failed: compute it here (and see its error, if it recurs)
        return target_counts(sampling, size=size, seed=seed, cache=cache)
    try:
        target = _monte_carlo(sampling, size, seed)
        mine.set_result(target)
    except BaseException as exc:
        mine.set_exception(exc)
        raise
    finally:
        with _inflight_lock:
            _inflight.pop(key, None)
    if path is not None:
        try:
            table = pl.concat(
                [
                    target.marginals.with_columns(kind=pl.lit("marginal")),
                    target.pairs.with_columns(kind=pl.lit("pair")),
                ]
            )
            write_table_atomic(table.to_arrow(), path)
        except OSError:
            pass  # a read-only cache folder only costs time
    return target


def _monte_carlo(sampling: RunSampling, size: int, seed: int) -> Target:
    from personaloom.taxonomy.sampling import iter_batches

    counter = SkeletonCounts(sampling)
    plan = sampling.quota_plan(size, seed)
    total = np.zeros(counter.size, dtype=np.int64)
    anchors: dict[str, list[str | None]] = {a: [] for a in counter.anchor_paths}
    for batch in iter_batches(
        sampling.taxonomy, seed, range(size), sampling.preset, sampling.rules, plan, SAMPLE_BATCH
    ):
        total += counter.counts(batch.V)
        for a, values in counter.anchors(batch.V).items():
            anchors[a] += values
    marginals = counter.frame(total)
    pairs = pair_counts(_anchor_frame(anchors, counter.anchor_paths), counter.anchor_paths)
    return Target(marginals, pairs, size, seed)


def prefetch_target(out: Path, manifest: dict[str, Any]) -> threading.Thread | None:
    """Compute the run's Monte Carlo target (into the cache) in a background thread, so
    that finalize finds it ready. A run calls this when it starts generating: the target
    then costs a few seconds of CPU beside hours of generation instead of a share of
    finalize. Errors are left for finalize's own call to meet and report."""

    def compute() -> None:
        sampling = run_sampling(out, manifest)
        if isinstance(sampling, RunSampling):
            with contextlib.suppress(Exception):
                target_counts(sampling)

    thread = threading.Thread(target=compute, name="fidelity-target", daemon=True)
    thread.start()
    return thread


def _anchor_frame(columns: dict[str, list[str | None]], anchors: Sequence[str]) -> pl.DataFrame:
    return pl.DataFrame({a: columns[a] for a in anchors}, schema={a: pl.String for a in anchors})


def pair_counts(
    frame: pl.DataFrame, anchors: Sequence[str], by: Sequence[str] = ()
) -> pl.DataFrame:
    """path ("a x b"), value ("va | vb"), count over rows that have both anchors (and the
    `by` columns first: counts per group of them). The pairs are counted in one parallel
    polars query."""
    lazy = frame.lazy()
    parts = [
        lazy.filter(pl.col(a).is_not_null() & pl.col(b).is_not_null())
        .group_by(*by, a, b)
        .len("count")
        .select(
            *by,
            pl.lit(f"{a}{PAIR_SEPARATOR}{b}").alias("path"),
            pl.concat_str(pl.col(a), pl.col(b), separator=VALUE_SEPARATOR).alias("value"),
            pl.col("count").cast(pl.Int64),
        )
        for a, b in _pairs(anchors)
    ]
    schema = {**{c: frame.schema[c] for c in by}, "path": pl.String, "value": pl.String}
    empty = pl.DataFrame(schema={**schema, "count": pl.Int64})
    return pl.concat([empty, *pl.collect_all(parts)])


# -- the run's candidates --------------------------------------------------------------------
def _fates(released_ids: pl.Series, rejected: pl.DataFrame, seed: int) -> pl.DataFrame:
    """index, fate of every candidate: released; else removed as a duplicate (a dedup row);
    else rejected by the critic (a critic-stage row); else by the sampler's rules (stage
    `sample`); else `other` (generation failures, timelines)."""
    prefix = f"p{seed:x}-"
    persona_rows = rejected.filter(
        (pl.col("kind") == "persona") & pl.col("record_id").str.starts_with(prefix)
    ).with_columns(index=pl.col("record_id").str.slice(len(prefix)).cast(pl.Int64, strict=False))
    outcome = (
        persona_rows.filter(pl.col("index").is_not_null())
        .group_by("index")
        .agg(
            dup=(pl.col("critic") == "dedup").any(),
            critic=pl.col("stage").str.starts_with("critic").any(),
            rules=(pl.col("stage") == "sample").any(),
        )
    )
    released = pl.DataFrame({"index": released_ids.cast(pl.Int64)}).unique()
    rejected_only = outcome.join(released, on="index", how="anti").select(
        "index",
        fate=pl.when(pl.col("dup"))
        .then(pl.lit(DUPLICATE))
        .when(pl.col("critic"))
        .then(pl.lit(CRITIC))
        .when(pl.col("rules"))
        .then(pl.lit(RULES))
        .otherwise(pl.lit(OTHER)),
    )
    return pl.concat([released.with_columns(fate=pl.lit(RELEASED)), rejected_only]).sort("index")


def _released_frames(
    personas: pl.DataFrame, sampling: RunSampling
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(path, value, count of the released personas' sampled categorical attributes;
    index + one column per categorical anchor)."""
    categorical = sampling.categorical
    anchors = sampling.anchors
    flat = (
        personas.select(pl.col("attributes").explode())
        .unnest("attributes")
        .filter((pl.col("source") == "sampled") & pl.col("path").is_in(categorical))
    )
    counts = (
        flat.group_by("path", "value").len("count").with_columns(pl.col("count").cast(pl.Int64))
    )
    ids = personas.select(index=_index_of(sampling.seed))
    element = pl.element().struct
    per_persona = (
        personas.select(
            index=_index_of(sampling.seed),
            attributes=pl.col("attributes").list.filter(
                (element.field("source") == "sampled") & element.field("path").is_in(anchors)
            ),
        )
        .explode("attributes")
        .drop_nulls("attributes")
        .unnest("attributes")
        .unique(["index", "path"], keep="first")
    )
    wide = ids.join(
        per_persona.pivot(on="path", index="index", values="value")
        if per_persona.height
        else pl.DataFrame(schema={"index": pl.Int64}),
        on="index",
        how="left",
    )
    for a in anchors:
        if a not in wide.columns:
            wide = wide.with_columns(pl.lit(None, pl.String).alias(a))
    return counts, wide.select("index", *anchors)


def _index_of(seed: int) -> pl.Expr:
    prefix = f"p{seed:x}-"
    return pl.col("persona_id").str.strip_prefix(prefix).cast(pl.Int64, strict=False)


def _check_reproduced(
    sampling: RunSampling, personas: pl.DataFrame, counter: SkeletonCounts, n: int
) -> str | None:
    """None when re-sampled released personas equal their shards, else the first mismatch."""
    ids = personas.select(
        index=_index_of(sampling.seed), attributes=pl.col("attributes")
    ).drop_nulls("index")
    if not ids.height:
        return None
    # replacements (ids >= personas) first: their quota values come from the aliases
    late = ids.filter(pl.col("index") >= sampling.personas)
    late = late.sample(min(n // 2, late.height), seed=0)
    early = ids.join(late.select("index"), on="index", how="anti")
    early = early.sample(min(n - late.height, early.height), seed=0)
    picks = pl.concat([early, late]).sort("index")
    categorical = set(sampling.categorical)
    stored = {
        i: sorted(
            (a["path"], a["value"])
            for a in attrs or []
            if a["source"] == "sampled" and a["path"] in categorical
        )
        for i, attrs in picks.iter_rows()
    }
    for batch in sampling.batches(list(stored)):
        for sk in batch.skeletons():
            mine = sorted((p, v) for p, v in sk.attributes if p in categorical)
            if mine != stored[sk.index]:
                diff = sorted(set(mine) ^ set(stored[sk.index]))[:3]
                return (
                    f"persona {sk.index}: its sampled attributes do not re-sample as stored "
                    f"({diff}); the taxonomy, rules or sampler changed since the run"
                )
    return None


# -- distances -------------------------------------------------------------------------------
def expected_tv_terms(n: np.ndarray, p: np.ndarray) -> np.ndarray:
    """E|X/n - p| for X ~ Binomial(n, p) (de Moivre: 2 m C(n, m) p^m (1-p)^(n-m+1) / n with
    m = floor(np) + 1), elementwise; 0 where n is 0 or p is 0 or 1."""
    n = np.asarray(n, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    out = np.zeros(np.broadcast(n, p).shape)
    ok = (n > 0) & (p > 0) & (p < 1)
    nn, pp = np.broadcast_to(n, out.shape)[ok], np.broadcast_to(p, out.shape)[ok]
    m = np.floor(nn * pp) + 1
    lgamma = np.frompyfunc(math.lgamma, 1, 1)
    log_binom = (
        lgamma(nn + 1).astype(float)
        - lgamma(m + 1).astype(float)
        - lgamma(nn - m + 1).astype(float)
    )
    log = np.log(2 * m) + log_binom + m * np.log(pp) + (nn - m + 1) * np.log1p(-pp) - np.log(nn)
    out[ok] = np.where(m <= nn, np.exp(log), 0.0)
    return out


def distances(
    counts: pl.DataFrame, target: pl.DataFrame, z_points: Sequence[str] | None = None
) -> pl.DataFrame:
    """Per point and path: n, tv, expected_tv, sd_tv, z.

    `counts`: point, path, value, count; `target`: path, value, share. `z_points`: the
    points whose spread (sd_tv, z) is simulated, None for all; the others get nulls (the
    simulation is most of this function's time, and the report ranks by z_released only)."""
    observed = counts.filter(pl.col("count") > 0).with_columns(
        n=pl.col("count").sum().over("point", "path")
    )
    overlap = (
        observed.join(target, on=["path", "value"], how="inner")
        .group_by("point", "path")
        .agg(overlap=pl.min_horizontal(pl.col("count") / pl.col("n"), "share").sum())
    )
    n = observed.group_by("point", "path").agg(pl.col("n").first())
    terms = n.join(target, on="path", how="inner")
    terms = terms.with_columns(
        term=pl.Series(
            expected_tv_terms(
                terms.get_column("n").to_numpy(), terms.get_column("share").to_numpy()
            )
        )
    )
    expected = terms.group_by("point", "path").agg(expected_tv=0.5 * pl.col("term").sum())
    shares = {
        path: np.asarray(values, dtype=np.float64)
        # sorted by value: the simulation is seeded by the shares' bytes, so their order
        # must not depend on polars' threads (it did: z varied between runs)
        for path, values in target.sort("path", "value").group_by("path").agg("share").iter_rows()
    }
    spread = n.filter(pl.col("point").is_in(z_points) if z_points is not None else True)
    spread = spread.select(
        "point",
        "path",
        sd_tv=pl.Series(
            [
                null_sd(int(k), shares.get(path))
                for path, k in spread.select("path", "n").iter_rows()
            ],
            dtype=pl.Float64,
        ),
    )
    return (
        n.join(overlap, on=["point", "path"], how="left")
        .join(expected, on=["point", "path"], how="left")
        .join(spread, on=["point", "path"], how="left")
        .select(
            "point",
            "path",
            "n",
            tv=(1.0 - pl.col("overlap").fill_null(0.0)).clip(0.0, 1.0),
            expected_tv=pl.col("expected_tv").fill_null(0.0),
            sd_tv="sd_tv",
        )
        .with_columns(
            z=pl.when(pl.col("sd_tv") > 0).then(
                (pl.col("tv") - pl.col("expected_tv")) / pl.col("sd_tv")
            )
        )
    )


def null_sd(n: int, shares: np.ndarray | None, draws: int = NULL_DRAWS) -> float | None:
    """Standard deviation of the TV of n draws from `shares` (simulated, seeded by n and
    the shares)."""
    if shares is None or n <= 0 or len(shares) < 2:
        return None
    p = shares / shares.sum()
    draws = max(NULL_DRAWS_MIN, min(draws, NULL_DRAW_CELLS // len(p)))  # big joints: fewer
    rng = np.random.default_rng([n, len(p), zlib.crc32(p.tobytes())])
    tv = 0.5 * np.abs(rng.multinomial(n, p, size=draws) / n - p[None, :]).sum(axis=1)
    return float(tv.std(ddof=1))


def _wide(table: pl.DataFrame, key: str) -> pl.DataFrame:
    """One row per `key`: n, tv, expected_tv of each point as `tv_sampled`, ..."""
    out = table.select(key).unique().sort(key)  # a fixed order: sums are reproducible
    for point in POINTS:
        mine = table.filter(pl.col("point") == point).select(
            key,
            pl.col("n").alias(f"n_{point}"),
            pl.col("tv").alias(f"tv_{point}"),
            pl.col("expected_tv").alias(f"expected_tv_{point}"),
        )
        out = out.join(mine, on=key, how="left")
        z = table.filter(pl.col("point") == point).select(key, pl.col("z").alias(f"z_{point}"))
        out = out.join(z, on=key, how="left")
    return out


def critic_bias(
    candidates: pl.DataFrame, anchors: Sequence[str], *, margin: float, min_group: int
) -> tuple[float | None, int, pl.DataFrame]:
    """(overall acceptance, reviewed, per anchor value: attribute, value, reviewed, accepted,
    acceptance, difference, flagged). `candidates`: fate + one column per anchor."""
    reviewed = candidates.filter(pl.col("fate").is_in(REVIEWED))
    accepted = pl.col("fate").is_in([RELEASED, DUPLICATE])
    total = reviewed.height
    overall = reviewed.select(accepted.mean()).item() if total else None
    groups = [
        reviewed.filter(pl.col(a).is_not_null())
        .group_by(pl.col(a).alias("value"))
        .agg(reviewed=pl.len(), accepted=accepted.sum())
        .select(pl.lit(a).alias("attribute"), "value", "reviewed", "accepted")
        for a in anchors
    ]
    schema = {
        "attribute": pl.String,
        "value": pl.String,
        "reviewed": pl.UInt32,
        "accepted": pl.UInt32,
    }
    table = pl.concat([pl.DataFrame(schema=schema), *[g.cast(schema) for g in groups]])
    table = table.with_columns(acceptance=pl.col("accepted") / pl.col("reviewed")).with_columns(
        difference=pl.col("acceptance") - (overall if overall is not None else 0.0)
    )
    table = table.with_columns(
        flagged=(pl.col("reviewed") >= min_group) & (pl.col("difference").abs() > margin + 1e-12)
    )
    order = {a: i for i, a in enumerate(anchors)}
    table = (
        table.with_columns(_o=pl.col("attribute").replace_strict(order, return_dtype=pl.Int64))
        .sort(["_o", "reviewed", "value"], descending=[False, True, False])
        .drop("_o")
    )
    return overall, total, table


# -- the report ------------------------------------------------------------------------------
def population_fidelity(
    out: Path,
    manifest: dict[str, Any],
    personas: pl.DataFrame,
    rejected: pl.DataFrame,
    **options: Any,
) -> dict[str, Any]:
    """The fidelity report of a dataset folder (module docstring), or {"reason": ...}.

    `personas`: persona_id, attributes of the released personas; `rejected`: the rejected
    table's record_id, kind, stage, critic (as `metrics._read_rejected` gives them);
    `options`: `fidelity_report`'s (monte_carlo, margin, min_group, worst, cache, ...)."""
    sampling = run_sampling(out, manifest)
    if isinstance(sampling, str):
        return {"reason": sampling}
    return fidelity_report(sampling, personas, rejected, **options)


def fidelity_report(
    sampling: RunSampling,
    personas: pl.DataFrame,
    rejected: pl.DataFrame,
    *,
    monte_carlo: int = MONTE_CARLO_SKELETONS,
    monte_carlo_seed: int = MONTE_CARLO_SEED,
    margin: float = BIAS_MARGIN,
    min_group: int = MIN_GROUP_SIZE,
    worst: int = WORST_ATTRIBUTES,
    cache: Path | bool | None = None,
    timings: dict[str, float] | None = None,
) -> dict[str, Any]:
    clock = time.perf_counter()
    anchors = sampling.anchors
    counter = SkeletonCounts(sampling)
    problem = _check_reproduced(sampling, personas, counter, CHECK_SKELETONS)
    if problem:
        return {"reason": problem}
    released_counts, released_wide = _released_frames(personas, sampling)
    fates = _fates(released_wide.get_column("index").drop_nulls(), rejected, sampling.seed)
    tick = _timer(timings, "read", clock)

    # re-sample the candidates that are not released
    counts = [released_counts.with_columns(fate=pl.lit(RELEASED))]
    wides = [released_wide.join(fates, on="index", how="left")]
    for fate in (DUPLICATE, CRITIC, RULES, OTHER):
        ids = fates.filter(pl.col("fate") == fate).get_column("index").to_list()
        if not ids:
            continue
        total = np.zeros(counter.size, dtype=np.int64)
        columns: dict[str, list[str | None]] = {a: [] for a in anchors}
        for batch in sampling.batches(ids):
            total += counter.counts(batch.V)
            for a, values in counter.anchors(batch.V).items():
                columns[a] += values
        counts.append(counter.frame(total).with_columns(fate=pl.lit(fate)))
        wides.append(
            _anchor_frame(columns, anchors).with_columns(
                index=pl.Series(ids, dtype=pl.Int64), fate=pl.lit(fate)
            )
        )
    tick = _timer(timings, "resample", tick)
    target = target_counts(sampling, size=monte_carlo, seed=monte_carlo_seed, cache=cache)
    tick = _timer(timings, "target", tick)

    by_fate = pl.concat(counts, how="diagonal_relaxed")
    candidates = pl.concat(
        [w.select("index", "fate", *anchors) for w in wides], how="vertical_relaxed"
    )
    # pair counts once per fate, then summed per point: a third of the group-bys
    pairs_by_fate = pair_counts(candidates, anchors, by=["fate"])
    points = []
    for point, members in POINT_FATES.items():
        points.append(
            pl.concat([by_fate, pairs_by_fate], how="diagonal_relaxed")
            .filter(pl.col("fate").is_in(members))
            .group_by("path", "value")
            .agg(pl.col("count").sum())
            .with_columns(point=pl.lit(point))
        )
    observed = pl.concat(points).select("point", "path", "value", "count")
    shares = target.shares(sampling)
    dist = distances(observed, shares, z_points=["released"])
    pair_names = {
        f"{a}{PAIR_SEPARATOR}{b}" for i, a in enumerate(anchors) for b in anchors[i + 1 :]
    }
    is_pair = pl.col("path").is_in(sorted(pair_names))

    attributes = _wide(dist.filter(~is_pair), "path").with_columns(
        excess=pl.col("tv_released") - pl.col("expected_tv_released"),
        values=pl.col("path").replace_strict(
            {p: len(sampling.taxonomy.leaf(p).values) for p in sampling.categorical},
            default=None,
            return_dtype=pl.Int64,
        ),
    )
    worst_rows = attributes.sort(
        ["z_released", "excess", "path"], descending=[True, True, False], nulls_last=True
    ).head(worst)
    pair_order = {f"{a}{PAIR_SEPARATOR}{b}": k for k, (a, b) in enumerate(_pairs(anchors))}
    pairs = (
        _wide(dist.filter(is_pair), "path")
        .with_columns(_o=pl.col("path").replace_strict(pair_order, return_dtype=pl.Int64))
        .sort("_o")
        .drop("_o")
    )
    cells = shares.filter(is_pair).group_by("path").len("cells")
    pairs = pairs.join(cells, on="path", how="left")
    overall, reviewed, bias = critic_bias(candidates, anchors, margin=margin, min_group=min_group)

    summary = {}
    for point in POINTS:
        rows = attributes.filter(pl.col(f"n_{point}").is_not_null() & (pl.col(f"n_{point}") > 0))
        anchor_rows = rows.filter(pl.col("path").is_in(anchors))
        summary[point] = {
            "personas": candidates.filter(pl.col("fate").is_in(POINT_FATES[point])).height,
            "attributes": rows.height,
            "mean_tv": _round(rows.get_column(f"tv_{point}").mean()),
            "mean_expected_tv": _round(rows.get_column(f"expected_tv_{point}").mean()),
            "anchors_mean_tv": _round(anchor_rows.get_column(f"tv_{point}").mean()),
        }
    report = {
        "target": {
            "method": "monte carlo",
            "skeletons": target.skeletons,
            "seed": target.seed,
            "preset": sampling.preset,
            "taxonomy": sampling.taxonomy.ref,
            "quotas": list(sampling.quotas),
            "exact": [q.split("=", 1)[0] for q in sampling.quotas],
        },
        "summary": summary,
        "worst_attributes": _records(
            worst_rows, ["path", "values", *_point_columns(), "excess", "z_released"]
        ),
        "anchor_pairs": _records(pairs, ["path", "cells", *_point_columns(), "z_released"]),
        "critic_bias": {
            "overall_acceptance": _round(overall),
            "reviewed": reviewed,
            "margin": margin,
            "min_group": min_group,
            "flagged": [
                f"{a}={v}"
                for a, v in bias.filter(pl.col("flagged")).select("attribute", "value").iter_rows()
            ],
            "groups": _records(
                bias,
                [
                    "attribute",
                    "value",
                    "reviewed",
                    "accepted",
                    "acceptance",
                    "difference",
                    "flagged",
                ],
            ),
        },
        "anchors": _anchor_shares(observed, shares, anchors),
    }
    _timer(timings, "tables", tick)
    return report


def _pairs(anchors: Sequence[str]) -> list[tuple[str, str]]:
    return [(a, b) for i, a in enumerate(anchors) for b in anchors[i + 1 :]]


def _point_columns() -> list[str]:
    return [f"{k}_{p}" for p in POINTS for k in ("n", "tv", "expected_tv")]


def _anchor_shares(
    observed: pl.DataFrame, shares: pl.DataFrame, anchors: Sequence[str]
) -> dict[str, list[dict[str, Any]]]:
    """Per categorical anchor: value, target share and each point's share (target order)."""
    obs = observed.filter(pl.col("path").is_in(anchors)).with_columns(
        share=pl.col("count") / pl.col("count").sum().over("point", "path")
    )
    out = {}
    for a in anchors:
        table = shares.filter(pl.col("path") == a).select("value", target="share")
        for point in POINTS:
            mine = obs.filter((pl.col("path") == a) & (pl.col("point") == point)).select(
                "value", pl.col("share").alias(point)
            )
            table = table.join(mine, on="value", how="full", coalesce=True)
        table = table.fill_null(0.0).sort(["target", "value"], descending=[True, False])
        out[a] = _records(table, ["value", "target", *POINTS])
    return out


def _round(value: Any, digits: int = 4) -> Any:
    if isinstance(value, float):
        return None if math.isnan(value) else round(value, digits)
    return value


def _records(frame: pl.DataFrame, columns: Sequence[str]) -> list[dict[str, Any]]:
    have = [c for c in columns if c in frame.columns]
    return [
        {k: _round(v) for k, v in row.items()} for row in frame.select(have).iter_rows(named=True)
    ]


def _timer(timings: dict[str, float] | None, name: str, since: float) -> float:
    now = time.perf_counter()
    if timings is not None:
        timings[name] = timings.get(name, 0.0) + now - since
    return now


# -- definitions, figures, card rows ---------------------------------------------------------
DEFINITION = (
    "population fidelity: total variation distance (TV) between the personas' value shares "
    "and the taxonomy's target distribution, per categorical attribute"
)
POINT_TEXT = {
    "sampled": "every candidate persona the run sampled (kept or rejected)",
    "accepted": "candidates that passed every check before dedup (rules, generation, critic)",
    "released": "the released personas",
}


def definition(name: str) -> str:
    """The definition of a dotted metric name under `fidelity`."""
    parts = name.split(".")
    tail = parts[-1]
    if len(parts) >= 3 and parts[1] == "summary":
        who = POINT_TEXT.get(parts[2], parts[2])
        return {
            "personas": f"personas at this point: {who}",
            "attributes": f"categorical attributes present at this point ({who})",
            "mean_tv": f"mean over attributes of the TV to the target ({who})",
            "mean_expected_tv": f"mean over attributes of the TV that sampling alone gives for as many personas ({who})",
            "anchors_mean_tv": f"mean TV to the target of the categorical anchors ({who})",
        }.get(tail, DEFINITION)
    if len(parts) >= 2 and parts[1] == "target":
        return {
            "skeletons": "skeletons of the Monte Carlo estimate of the target distribution",
            "seed": "seed of the Monte Carlo skeletons",
        }.get(tail, DEFINITION)
    if len(parts) >= 2 and parts[1] == "critic_bias":
        return {
            "overall_acceptance": "share of the candidates the critic reviewed that it accepted",
            "reviewed": "candidates the critic reviewed (released, removed as duplicates or rejected by the critic)",
            "margin": "a group is flagged when its acceptance differs from the overall rate by more than this",
            "min_group": "groups with fewer reviewed candidates are not flagged",
        }.get(tail, DEFINITION)
    return DEFINITION


def figures(report: dict[str, Any] | None) -> dict[str, Any]:
    """Headline numbers for the Prefect `corpus-figures` artifact."""
    if not report or "summary" not in report:
        return {"fidelity": (report or {}).get("reason", "not computed")}
    out: dict[str, Any] = {}
    for point in POINTS:
        out[f"fidelity mean TV ({point})"] = report["summary"][point]["mean_tv"]
    out["fidelity anchors mean TV (released)"] = report["summary"]["released"]["anchors_mean_tv"]
    worst = report["worst_attributes"][:1]
    if worst:
        out["fidelity worst attribute (released TV)"] = (
            f"{worst[0]['path']} ({worst[0]['tv_released']})"
        )
    bias = report["critic_bias"]
    out["critic acceptance (reviewed)"] = bias["overall_acceptance"]
    out["critic bias flagged groups"] = ", ".join(bias["flagged"]) or "none"
    return out


def _f(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else ""
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _pct(value: Any) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _points_pct(value: Any) -> str:
    return "-" if value is None else f"{100 * value:+.1f}"


@dataclass
class Rows:
    """The fidelity tables as text cells (the card and `stats` print the same)."""

    intro: str
    points: list[tuple[str, ...]]
    worst: list[tuple[str, ...]]
    pairs: list[tuple[str, ...]]
    bias_line: str
    flagged: list[tuple[str, ...]]
    bias_by_anchor: list[tuple[str, ...]]
    # the header of each table (the card's and `stats`'s)
    points_header: tuple[str, ...] = ()
    worst_header: tuple[str, ...] = ()
    pairs_header: tuple[str, ...] = ()
    flagged_header: tuple[str, ...] = ()
    by_anchor_header: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.points_header = POINTS_HEADER
        self.worst_header = WORST_HEADER
        self.pairs_header = PAIRS_HEADER
        self.flagged_header = FLAGGED_HEADER
        self.by_anchor_header = BY_ANCHOR_HEADER


def _tv_row(r: dict[str, Any], size_key: str) -> tuple[str, ...]:
    """One table row of an attribute (`values`) or an anchor pair (`cells`): its TV to the
    target at each point, the expected TV by chance and the z-score of the released one."""
    return (
        r["path"],
        _f(r.get(size_key)),
        _f(r.get("n_released")),
        _f(r.get("tv_sampled")),
        _f(r.get("tv_accepted")),
        _f(r.get("tv_released")),
        _f(r.get("expected_tv_released")),
        _f(r.get("z_released"), 1),
    )


def rows(report: dict[str, Any]) -> Rows:
    t = report["target"]
    quotas = (
        f"; quota'd attributes ({', '.join(t['exact'])}) take their quota shares"
        if t["exact"]
        else ""
    )
    intro = (
        f"Target: Monte Carlo over {t['skeletons']:,} skeletons of `{t['taxonomy']}` "
        f"(preset {t['preset']}, rules and quotas applied, seed {t['seed']}){quotas}. "
        "TV is the total variation distance to it (0 = same shares, 1 = disjoint); "
        '"expected" is the TV that as many draws from the target give by chance alone.'
    )
    points = [
        (
            point,
            _f(s["personas"]),
            _f(s["attributes"]),
            _f(s["mean_tv"]),
            _f(s["mean_expected_tv"]),
            _f(s["anchors_mean_tv"]),
        )
        for point, s in report["summary"].items()
    ]
    worst = [_tv_row(r, "values") for r in report["worst_attributes"]]
    pairs = [_tv_row(r, "cells") for r in report["anchor_pairs"]]
    bias = report["critic_bias"]
    bias_line = (
        f"Critic acceptance per value of each anchor: overall {_pct(bias['overall_acceptance'])} "
        f"of {bias['reviewed']:,} reviewed candidates; a group of at least {bias['min_group']} "
        f"is flagged when its acceptance differs by more than {100 * bias['margin']:.0f} points."
    )
    flagged = [
        (
            g["attribute"],
            g["value"],
            _f(g["reviewed"]),
            _f(g["accepted"]),
            _pct(g["acceptance"]),
            _points_pct(g["difference"]),
        )
        for g in bias["groups"]
        if g["flagged"]
    ]
    by_anchor: dict[str, list[dict[str, Any]]] = {}
    for g in bias["groups"]:
        by_anchor.setdefault(g["attribute"], []).append(g)
    bias_by_anchor = []
    for attribute, groups in by_anchor.items():
        big = [g for g in groups if g["reviewed"] >= bias["min_group"]] or groups
        low = min(big, key=lambda g: (g["acceptance"], g["value"]))
        high = max(big, key=lambda g: (g["acceptance"], g["value"]))
        bias_by_anchor.append(
            (
                attribute,
                _f(len(groups)),
                f"{low['value']} {_pct(low['acceptance'])}",
                f"{high['value']} {_pct(high['acceptance'])}",
                _f(sum(1 for g in groups if g["flagged"])),
            )
        )
    return Rows(intro, points, worst, pairs, bias_line, flagged, bias_by_anchor)


POINTS_HEADER = ("point", "personas", "attributes", "mean TV", "mean expected", "anchors' mean TV")
# The columns of `_tv_row` after the path and its size (values or cells).
TV_COLUMNS = ("released", "TV sampled", "TV accepted", "TV released", "expected", "z")
WORST_HEADER = ("attribute", "values", *TV_COLUMNS)
PAIRS_HEADER = ("anchor pair", "cells", *TV_COLUMNS)
FLAGGED_HEADER = ("anchor", "value", "reviewed", "accepted", "acceptance", "difference (points)")
BY_ANCHOR_HEADER = ("anchor", "values", "lowest acceptance", "highest acceptance", "flagged")


def chart_data(
    report: dict[str, Any], max_bars: int = 12
) -> tuple[
    list[tuple[str, list[tuple[str, float, float]]]],
    list[tuple[str, list[tuple[str, float, bool]]]],
]:
    """(target-vs-released panels per anchor: (path, [(value, target, released)]),
    critic-bias panels per anchor: (path, [(value, acceptance, flagged)]))."""
    shares = []
    for path, items in report.get("anchors", {}).items():
        top = items[:max_bars]
        rest = items[max_bars:]
        bars = [(r["value"], r["target"] or 0.0, r["released"] or 0.0) for r in top]
        if rest:
            bars.append(
                (
                    f"other ({len(rest)})",
                    sum(r["target"] or 0.0 for r in rest),
                    sum(r["released"] or 0.0 for r in rest),
                )
            )
        shares.append((path, bars))
    bias = []
    by_anchor: dict[str, list[dict[str, Any]]] = {}
    for g in report.get("critic_bias", {}).get("groups", []):
        by_anchor.setdefault(g["attribute"], []).append(g)
    for path, groups in by_anchor.items():
        ordered = sorted(groups, key=lambda g: (not g["flagged"], -g["reviewed"], g["value"]))
        bias.append(
            (
                path,
                [
                    (g["value"], g["acceptance"] or 0.0, bool(g["flagged"]))
                    for g in ordered[:max_bars]
                ],
            )
        )
    return shares, bias


__all__ = [
    "BIAS_MARGIN",
    "MIN_GROUP_SIZE",
    "MONTE_CARLO_SEED",
    "MONTE_CARLO_SKELETONS",
    "RunSampling",
    "Target",
    "critic_bias",
    "distances",
    "expected_tv_terms",
    "fidelity_report",
    "figures",
    "population_fidelity",
    "rows",
    "run_sampling",
    "target_counts",
]


CHART_FILES = ("fidelity.png", "critic_bias.png")
CHART_BARS = 10


def write_charts(report: dict[str, Any] | None, folder: Path) -> list[tuple[str, str, str]]:
    """The card's fidelity charts in `folder`: (title, caption, file name) of each."""
    from personaloom.publish import charts

    if not report or "summary" not in report:
        return []
    shares, bias = chart_data(report, CHART_BARS)
    made = []
    if shares:
        charts.paired_bar_panels(
            shares,
            folder / "fidelity.png",
            title="Anchors: target vs released",
            names=("target", "released"),
        )
        made.append(
            (
                "Anchors: target vs released",
                "share of each value of the categorical anchors in the target distribution "
                "(grey) and among the released personas (blue)",
                "fidelity.png",
            )
        )
    overall = report["critic_bias"]["overall_acceptance"]
    if bias and overall is not None:
        charts.acceptance_panels(
            bias,
            folder / "critic_bias.png",
            title="Critic acceptance per anchor value",
            overall=overall,
            margin=report["critic_bias"]["margin"],
        )
        made.append(
            (
                "Critic bias",
                "share of the reviewed candidates the critic accepted, per value of each "
                f"anchor (largest groups first); the line is the overall rate, the band "
                f"+-{100 * report['critic_bias']['margin']:.0f} points, flagged groups in red",
                "critic_bias.png",
            )
        )
    return made
