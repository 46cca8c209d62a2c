"""Benchmark: population fidelity tables, and what they add to finalize.

    python bench/fidelity.py                      # tables for 2,000 skeletons, finalize at 100k
    python bench/fidelity.py --tables-only        # only the tables
    python bench/fidelity.py --personas 20000     # finalize at another size
    python bench/fidelity.py --preset deep

1. Tables. A run folder of `--sample` (2,000) candidates of the `human` taxonomy (seed 0,
   the shipped rules) is planted from the sampler itself: a critic rejects half of the
   personas of one region (`--skew`, default Africa) and 5% of the rest at random, 2% of
   the accepted are marked as duplicates, the rest are released. The fidelity report
   (`personaloom.publish.fidelity`) is printed as the card prints it.
2. Finalize. A run of `--personas` (100,000) released personas (their sampled attributes,
   a 100-word narrative each) plus 10% rejected candidates goes through the real
   `finalize_folder` (dedup, shards, metrics with the embeddings, card). The time of the
   fidelity report inside it is measured, with the Monte Carlo target computed inside it
   (cold cache: `merge` or `stats` on a machine that never saw the taxonomy) and with the
   target ready (a generating run computes it in a background thread when it starts,
   `fidelity.prefetch_target`, so its finalize reads it from the cache), and set against
   the whole finalize. The first pass also pays one-time costs (JIT compiles) in the rest
   of finalize.

On a shared machine run it under the engine lock: `flock /tmp/engine.lock python bench/fidelity.py`.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pyarrow.parquet as pq  # noqa: E402

from personaloom import schema as S  # noqa: E402
from personaloom.project import Project  # noqa: E402
from personaloom.publish import fidelity as F  # noqa: E402
from personaloom.records import rejection, rejections_table, to_table  # noqa: E402
from personaloom.taxonomy.loader import load_taxonomy  # noqa: E402
from personaloom.taxonomy.rules import load_rules  # noqa: E402
from personaloom.taxonomy.sampling import sample_skeletons  # noqa: E402

WORDS = (
    "morning garden river market music family school letter train window winter coffee "
    "bicycle harbour library kitchen festival mountain village neighbour recipe journey "
    "workshop evening sister brother grandmother football painting novel storm bridge "
    "orchard lantern village factory island meadow chapel bakery tailor ferry canyon"
).split()


def _unit(*parts: object) -> float:
    """A deterministic number in [0, 1) from the parts."""
    return zlib.crc32("|".join(map(str, parts)).encode()) / 2**32


def build_run(
    out: Path,
    n: int,
    *,
    seed: int,
    preset: str,
    critic: Callable[[int, dict[str, str]], str | None],
    duplicate_share: float,
) -> tuple[dict, list[dict], list[dict]]:
    """Plant a run of `n` candidates: (manifest, released personas, rejection rows)."""
    project = Project.locate(None)
    path = project.taxonomy_path("human")
    tax = load_taxonomy(path)
    rules = load_rules(sorted(project.validators.glob("rules*.y*ml")), taxonomy=tax)
    rng = random.Random(seed)
    personas, rejected = [], []
    for sk in sample_skeletons(tax, seed, range(n), preset, rules=rules, batch_size=4096):
        pid = S.persona_id(seed, sk.index)
        if sk.rejected:
            rejected.append(rejection(pid, "persona", "sample", "rules", sk.rejected))
            continue
        values = {p: str(v) for p, v in sk.values.items()}
        reason = critic(sk.index, values)
        if reason:
            rejected.append(rejection(pid, "persona", "critic (round 0)", "planted", reason))
            continue
        if _unit("dup", sk.index) < duplicate_share:
            rejected.append(rejection(pid, "persona", "dedup", "dedup", "near_duplicate of x"))
            continue
        text = " ".join(rng.choice(WORDS) for _ in range(90))
        personas.append(
            {
                "persona_id": pid,
                "seed": seed,
                "index": sk.index,
                "taxonomy": tax.ref,
                "name": sk.name if hasattr(sk, "name") else "",
                "attributes": [
                    {"path": p, "value": v, "source": "sampled"} for p, v in sk.attributes
                ],
                "narrative": f"I am persona {sk.index}. " + text,
                "sections": {"background": text},
                "model": "bench",
                "scores": {"critic_score": 0.5},
            }
        )
    manifest = {
        "taxonomy": tax.ref,
        "taxonomy_leaves": len(tax.leaves),
        "status": "complete",
        "config": {"taxonomy": "human", "seed": seed, "personas": n, "preset": preset},
        "project": str(project.root),
    }
    out.mkdir(parents=True, exist_ok=True)
    return manifest, personas, rejected


def skew_critic(path: str, value: str, rate: float) -> Callable[[int, dict[str, str]], str | None]:
    def critic(index: int, values: dict[str, str]) -> str | None:
        u = _unit("critic", index)
        if values.get(path) == value and u < rate:
            return f"planted: {value}"
        return "planted: random" if u > 0.95 else None

    return critic


def _md(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def tables(sample: int, preset: str, skew: str, cache: Path) -> None:
    import polars as pl

    path, _, rest = skew.partition("=")
    value, _, rate = rest.partition(":")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        manifest, personas, rejected = build_run(
            out,
            sample,
            seed=0,
            preset=preset,
            critic=skew_critic(path, value, float(rate or 0.5)),
            duplicate_share=0.02,
        )
        frame = pl.DataFrame(to_table(personas, S.PERSONAS).select(["persona_id", "attributes"]))
        rows = pl.DataFrame(rejections_table(rejected)).select(
            "record_id", "kind", "stage", "critic", "reason"
        )
        started = time.perf_counter()
        report = F.population_fidelity(out, manifest, frame, rows, cache=cache)
        seconds = time.perf_counter() - started
    if "reason" in report:
        raise SystemExit(f"fidelity not computed: {report['reason']}")
    r = F.rows(report)
    print(f"## Fidelity tables: {sample:,} candidates of human ({preset}), critic skew {skew}\n")
    print(r.intro + "\n")
    print(_md(F.POINTS_HEADER, r.points) + "\n")
    print("Ten worst attributes:\n")
    print(_md(F.WORST_HEADER, r.worst) + "\n")
    print("Anchor pairs:\n")
    print(_md(F.PAIRS_HEADER, r.pairs) + "\n")
    print(r.bias_line + "\n")
    print(_md(F.FLAGGED_HEADER, r.flagged) + "\n" if r.flagged else "No group flagged.\n")
    print(_md(F.BY_ANCHOR_HEADER, r.bias_by_anchor) + "\n")
    print(f"(report computed in {seconds:.1f} s)\n")


def finalize_timing(n: int, preset: str, embeddings: bool) -> None:
    import os

    from personaloom.publish import metrics
    from personaloom.publish.metrics import _read_config, _read_rejected
    from personaloom.run.finalize import DedupSettings, finalize_folder
    from personaloom.state.run_state import RunState

    candidates = int(n / 0.9)  # ~10% of the candidates rejected
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        started = time.perf_counter()
        manifest, personas, rejected = build_run(
            out,
            candidates,
            seed=1,
            preset=preset,
            critic=lambda i, v: "planted: random" if _unit("c", i) < 0.08 else None,
            duplicate_share=0.0,
        )
        for extra in personas[n:]:  # exactly n released: the rest rejected by the critic
            rejected.append(
                rejection(extra["persona_id"], "persona", "critic (round 0)", "planted", "x")
            )
        personas = personas[:n]
        personas_table = to_table(personas, S.PERSONAS)
        built = time.perf_counter() - started
        print(
            f"## Finalize at {len(personas):,} personas ({preset}; {len(rejected):,} rejected "
            f"candidates; built in {built:.0f} s)\n"
        )
        state = RunState(out)
        state.rejected.mkdir(parents=True, exist_ok=True)
        pq.write_table(rejections_table(rejected), state.rejected / "b000000.parquet")
        state.write_manifest(manifest)

        spent: dict[str, float] = {}
        original = F.population_fidelity

        def timed(*args, **kwargs):
            t, c = time.perf_counter(), time.process_time()
            try:
                return original(*args, **kwargs)
            finally:
                spent["fidelity"] = time.perf_counter() - t
                spent["fidelity_cpu"] = time.process_time() - c

        cache = Path(tmp) / "cache"
        os.environ[F.CACHE_ENV] = str(cache)
        metrics.fidelity_mod.population_fidelity = timed
        rows = []
        try:
            for label in (
                "computed in finalize (cold cache)",
                "prefetched at run start (a generating run)",
            ):
                t, c = time.perf_counter(), time.process_time()
                finalize_folder(
                    out,
                    state,
                    personas=personas_table,
                    conversations=S.CONVERSATIONS.empty_table(),
                    probes=S.PROBES.empty_table(),
                    rejected={"b000000.parquet": rejections_table(rejected)},
                    rejected_in_place=True,
                    dedup=DedupSettings(threshold=0.8, file="dedup.parquet"),
                    personas_requested=n,
                    critic_reports=[],
                    manifest_fields={},
                    embeddings=embeddings,
                )
                total, cpu = time.perf_counter() - t, time.process_time() - c
                fid, fid_cpu = spent["fidelity"], spent["fidelity_cpu"]
                rest, rest_cpu = total - fid, cpu - fid_cpu
                rows.append(
                    (
                        label,
                        f"{total:.1f} / {cpu:.1f}",
                        f"{rest:.1f} / {rest_cpu:.1f}",
                        f"{fid:.1f} / {fid_cpu:.1f}",
                        f"{100 * fid / rest:.1f}% / {100 * fid_cpu / rest_cpu:.1f}%",
                    )
                )
        finally:
            metrics.fidelity_mod.population_fidelity = original
        # where the report's time goes when the target is ready
        timings: dict[str, float] = {}
        sampling = F.run_sampling(out, state.read_manifest())
        assert isinstance(sampling, F.RunSampling), sampling
        frame = _read_config(out, "personas", ("persona_id", "attributes"))
        F.fidelity_report(
            sampling, frame, _read_rejected(state.rejected), cache=cache, timings=timings
        )
    header = (
        "target",
        "finalize (wall / CPU s)",
        "finalize without fidelity",
        "fidelity",
        "added (wall / CPU)",
    )
    print(_md(header, rows))
    print(
        "\nreport with the target ready, by part (s): "
        + ", ".join(f"{k} {v:.2f}" for k, v in timings.items())
    )
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", type=int, default=2000)
    parser.add_argument("--personas", type=int, default=100_000)
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--skew", default="demographics.location.region=Africa:0.5")
    parser.add_argument("--tables-only", action="store_true")
    parser.add_argument("--no-embeddings", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as cache:
        tables(args.sample, args.preset, args.skew, Path(cache))
    if not args.tables_only:
        finalize_timing(args.personas, args.preset, not args.no_embeddings)


if __name__ == "__main__":
    main()
