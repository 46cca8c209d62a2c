"""Benchmark: deep skeletons streamed to Parquet, and leaf coverage.

    python bench/sampling.py                 # 10k and 100k deep skeletons
    python bench/sampling.py --full          # ... and 1M
    python bench/sampling.py --max-n 10000   # only sizes <= 10k

Each size runs `--workers` processes over interleaved index ranges (persona i depends only
on (seed, i), so the split changes nothing); every worker streams its batches into its
own Parquet file, one row group per batch. Peak RSS is the sum over the main process and
its workers (proportional set size, so pages shared after fork count once), sampled
every 50 ms. CPU seconds are shown beside wall time: on a shared machine the ratio tells
how much of the wall time was ours. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from personaloom.taxonomy import load_taxonomy  # noqa: E402
from personaloom.taxonomy.rules import RuleSet, load_rules  # noqa: E402
from personaloom.taxonomy.sampling import iter_batches  # noqa: E402


def _rss_kb(pid: int) -> int:
    """Proportional set size (shared pages split between the processes sharing them), or RSS."""
    for path, key in ((f"/proc/{pid}/smaps_rollup", "Pss:"), (f"/proc/{pid}/status", "VmRSS:")):
        try:
            with open(path) as f:
                for line in f:
                    if line.startswith(key):
                        return int(line.split()[1])
        except OSError:
            continue
    return 0


def _children(pid: int) -> list[int]:
    out = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                out.extend(int(x) for x in f.read().split())
    except OSError:
        pass
    return out


class PeakRSS:
    """Peak of (main process + all descendants) RSS, polled in a thread."""

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self.peak_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = os.getpid()
        while not self._stop.is_set():
            pids, stack = [me], [me]
            while stack:
                kids = _children(stack.pop())
                pids.extend(kids)
                stack.extend(kids)
            self.peak_kb = max(self.peak_kb, sum(_rss_kb(p) for p in pids))
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _load(taxonomy: str, rules_dir: str | None):
    tax = load_taxonomy(taxonomy)
    rules = load_rules(rules_dir, taxonomy=tax) if rules_dir else RuleSet.empty()
    return tax, rules


def _worker(args: tuple) -> dict:
    taxonomy, rules_dir, preset, seed, n, k, workers, batch, out = args
    tax, rules = _load(taxonomy, rules_dir)
    settings = tax.settings(preset)
    indices = (
        i
        for start in range(k * batch, n, workers * batch)
        for i in range(start, min(start + batch, n))
    )
    used = np.zeros(len(tax.leaves), dtype=bool)
    writer = None
    rows = attrs = rejected = 0
    for b in iter_batches(tax, seed, indices, settings, rules, batch_size=batch):
        table = b.to_arrow()
        if writer is None:
            writer = pq.ParquetWriter(out, table.schema, compression="zstd")
        writer.write_table(table, row_group_size=len(b))
        used |= ~np.isnan(b.V).all(axis=0)
        used[b.plan.generated] |= b.gen_chosen.any(axis=0)
        rows += len(b)
        attrs += int((~np.isnan(b.V)).sum())
        rejected += sum(r is not None for r in b.rejected)
    if writer is not None:
        writer.close()
    return {"used": used, "rows": rows, "attrs": attrs, "rejected": rejected}


def _cpu_seconds() -> float:
    me, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def run_size(opts: argparse.Namespace, n: int, tmp: Path) -> dict:
    workers = max(1, min(opts.workers, -(-n // opts.batch)))
    jobs = [
        (
            opts.taxonomy,
            opts.rules,
            opts.preset,
            opts.seed,
            n,
            k,
            workers,
            opts.batch,
            str(tmp / f"n{n}-part{k}.parquet"),
        )
        for k in range(workers)
    ]
    cpu0 = _cpu_seconds()
    with PeakRSS() as peak:
        t0 = time.perf_counter()
        if workers == 1:
            results = [_worker(jobs[0])]
        else:
            with mp.get_context("fork").Pool(workers) as pool:
                results = pool.map(_worker, jobs)
        elapsed = time.perf_counter() - t0
    cpu = _cpu_seconds() - cpu0
    used = np.logical_or.reduce([r["used"] for r in results])
    rows = sum(r["rows"] for r in results)
    size = sum(Path(j[-1]).stat().st_size for j in jobs if Path(j[-1]).exists())
    for j in jobs:
        Path(j[-1]).unlink(missing_ok=True)
    return {
        "n": n,
        "workers": workers,
        "seconds": elapsed,
        "cpu": cpu,
        "rate": rows / elapsed,
        "peak_mb": peak.peak_kb / 1024,
        "attrs": sum(r["attrs"] for r in results) / max(rows, 1),
        "rejected": sum(r["rejected"] for r in results),
        "parquet_mb": size / 2**20,
        "used": used,
    }


def coverage(tax, used: np.ndarray) -> str:
    sampled = np.array([leaf.sampled for leaf in tax.leaves])
    return (
        f"{used.mean():.1%} of all {len(used)} leaves "
        f"(sampled {used[sampled].mean():.1%}, generated {used[~sampled].mean():.1%})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--taxonomy", default=str(ROOT / "taxonomies" / "human.yaml"))
    parser.add_argument(
        "--rules", default=str(ROOT / "validators"), help="rules folder ('' for none)"
    )
    parser.add_argument("--preset", default="deep")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--max-n", type=int, default=None, help="skip sizes above this")
    parser.add_argument("--full", action="store_true", help="also run 1M")
    opts = parser.parse_args()
    opts.rules = opts.rules or None
    sizes = [10_000, 100_000] + ([1_000_000] if opts.full else [])
    if opts.max_n is not None:
        sizes = [n for n in sizes if n <= opts.max_n] or [opts.max_n]
    tax, _ = _load(opts.taxonomy, opts.rules)
    print(
        f"taxonomy {tax.ref}: {len(tax.leaves)} leaves; preset {opts.preset}; rules {'on' if opts.rules else 'off'}; "
        f"{opts.workers} worker(s) on {os.cpu_count()} cores; batch {opts.batch}\n"
    )
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        cov_1k = run_size(argparse.Namespace(**{**vars(opts), "workers": 1}), 1000, Path(tmp))
        for n in sizes:
            results.append(run_size(opts, n, Path(tmp)))
            print(f"  done {n:,} in {results[-1]['seconds']:.1f}s", file=sys.stderr)
    print(
        "| skeletons | workers | wall s | CPU s | skeletons/s (wall) | skeletons/CPU-s | "
        "peak memory, PSS (MB) | attributes/persona | rejected | Parquet (MB) |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r['n']:,} | {r['workers']} | {r['seconds']:.1f} | {r['cpu']:.1f} | {r['rate']:,.0f} | "
            f"{r['n'] / max(r['cpu'], 1e-9):,.0f} | {r['peak_mb']:,.0f} | "
            f"{r['attrs']:.1f} | {r['rejected']:,} ({r['rejected'] / r['n']:.2%}) | {r['parquet_mb']:,.1f} |"
        )
    print()
    print(f"leaf coverage at 1k, preset {opts.preset}: {coverage(tax, cov_1k['used'])}")
    big = next((r for r in results if r["n"] == 100_000), results[-1])
    print(
        f"leaf coverage at {big['n'] // 1000}k, preset {opts.preset}: {coverage(tax, big['used'])}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        quick = argparse.Namespace(**{**vars(opts), "workers": 1, "preset": "quick"})
        for n in (1000, 10_000):
            print(
                f"leaf coverage at {n // 1000}k, preset quick: {coverage(tax, run_size(quick, n, Path(tmp))['used'])}"
            )


if __name__ == "__main__":
    main()
