"""Benchmark: `personaloom dedup` against a datasketch baseline, end to end, on one core.

    python bench/dedup.py                  # 20,000 documents, memory probe at 20k and 100k
    python bench/dedup.py --docs 50000
    python bench/dedup.py --quick          # 2,000 documents, small memory probe (smoke run)

Corpus: seeded synthetic documents of 120-400 words (Zipf-distributed vocabulary, sentences
with random punctuation and capitalization, ~3% of words accented). Planted on top:
near-duplicate families (1-4 variants made by word substitutions, insertions and deletions
aimed at Jaccard levels spread over 0.45-1.0, some chained), and exact copies that differ
only in case, punctuation and spacing. Every planted pair's true Jaccard is computed exactly
from the shingle sets, as is that of every pair a method puts in one cluster.

Both methods run the same job in the same process, pinned to one core (NUMBA_NUM_THREADS=1,
one Arrow thread): read the Parquet file, normalize, exact dedup, near dedup with the same
bands/rows and the same verification rule, keep the best row per cluster (score, id, row),
write the kept rows with the same writer.
- ours: `personaloom dedup IN --column text --out OUT --score-column score --id-column id`
  (the CLI entry point, in process);
- baseline: per-document Python normalization (`py_normalize`: NFKC, casefold and
  `str.translate` with personaloom's character-class table, so the same result), word
  n-gram shingles made here (`py_shingles`, same definition as ours), then datasketch:
  `MinHash.bulk` with `hashfunc=xxhash.xxh32_intdigest` (the same shingle hash, in C) and
  `scheme="affine32"`, `MinHashLSH` query/insert per document, candidates verified by
  `MinHash.jaccard`; union-find. Only the character-class table is personaloom's.

Memory: peak RSS of a fresh process running the CLI at two corpus sizes, extrapolated
linearly to 1M documents (stated as an extrapolation in the output).
"""

from __future__ import annotations

import os

os.environ.setdefault("NUMBA_NUM_THREADS", "1")  # before numba is imported

import argparse
import contextlib
import io
import json
import subprocess
import sys
import tempfile
import time
import unicodedata
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from personaloom.atomic import write_table_atomic  # noqa: E402
from personaloom.cli import main as cli_main  # noqa: E402
from personaloom.dedup import dedup_table, lsh_params, normalize_texts  # noqa: E402
from personaloom.dedup.normalize import unicode_tables  # noqa: E402

# ---------------------------------------------------------------------------- corpus

COMMON = (
    "the of and to in a is that for it as was with be by on not he this are or his from at "
    "which but have an had they you were their one all we can her has there been if more "
    "when will would who so no she out up into do any your what some its time only could new "
    "them man our very my about over such these two first after may then than like other"
).split()
LETTERS = "etaoinshrdlcumwfgypbvkjxqz"
LETTER_P = np.array([12.7, 9.1, 8.2, 7.5, 7.0, 6.7, 6.3, 6.1, 6.0, 4.3, 4.0, 2.8, 2.8, 2.4,
                     2.4, 2.2, 2.0, 2.0, 1.9, 1.5, 1.0, 0.8, 0.2, 0.2, 0.1, 0.1])  # fmt: skip
ACCENTS = "éèüöñïçå"


def make_vocabulary(rng: np.random.Generator, size: int = 40_000) -> tuple[list[str], np.ndarray]:
    letters = np.array(list(LETTERS))
    p = LETTER_P / LETTER_P.sum()
    words = list(COMMON)
    seen = set(words)
    while len(words) < size:
        length = int(np.clip(rng.poisson(5.5), 2, 14))
        word = "".join(rng.choice(letters, length, p=p))
        if rng.random() < 0.03:
            pos = int(rng.integers(0, length))
            word = word[:pos] + ACCENTS[int(rng.integers(0, len(ACCENTS)))] + word[pos + 1 :]
        if word not in seen:
            seen.add(word)
            words.append(word)
    weights = 1.0 / (np.arange(len(words)) + 10.0)
    return words, weights / weights.sum()


def render(words: list[str], rng: np.random.Generator) -> str:
    """Sentences with random capitalization, commas, dashes and spacing (normalized away)."""
    out = []
    start = True
    for w in words:
        if start:
            w = w.capitalize()
            start = False
        r = rng.random()
        if r < 0.07:
            w += "."
            start = True
        elif r < 0.12:
            w += ","
        elif r < 0.13:
            w += " —"
        elif r < 0.135:
            w = "“" + w + "”"
        out.append(w)
    sep = "  " if rng.random() < 0.2 else " "
    return sep.join(out) + "."


def draw(rng: np.random.Generator, cdf: np.ndarray, size: int) -> np.ndarray:
    return np.minimum(np.searchsorted(cdf, rng.random(size)), len(cdf) - 1)


def mutate(words: list[str], target: float, rng, vocab: list[str], cdf: np.ndarray) -> list[str]:
    """Edit words so that about the target Jaccard of 5-gram shingle sets remains."""
    shingles = max(1, len(words) - 4)
    changed = shingles * (1.0 - target) / (1.0 + target)
    edits = max(1, round(changed / 5))
    out = list(words)
    for new_index in draw(rng, cdf, edits).tolist():
        pos = int(rng.integers(0, len(out)))
        r = rng.random()
        new = vocab[new_index]
        if r < 0.6:
            out[pos] = new if new != out[pos] else new + "x"
        elif r < 0.8:
            out.insert(pos, new)
        elif len(out) > 10:
            del out[pos]
    return out


def make_corpus(n_docs: int, seed: int) -> tuple[list[str], list[list[int]], list[int]]:
    """(texts, families of planted near duplicates, exact-copy pairs' rows), shuffled."""
    rng = np.random.default_rng(seed)
    vocab, p = make_vocabulary(rng)
    cdf = np.cumsum(p)
    docs: list[list[str]] = []
    family_of: list[int] = []
    families: list[list[int]] = []
    exact_rows: list[int] = []
    while len(docs) < n_docs:
        words = [vocab[i] for i in draw(rng, cdf, int(rng.integers(120, 401))).tolist()]
        members = [len(docs)]
        docs.append(words)
        family_of.append(len(families))
        r = rng.random()
        if r < 0.15:
            k = int(rng.choice([1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4]))
            for _ in range(k):
                parent = docs[members[int(rng.integers(0, len(members)))]]
                if len(docs) < n_docs:
                    members.append(len(docs))
                    docs.append(mutate(parent, float(rng.uniform(0.45, 1.0)), rng, vocab, cdf))
                    family_of.append(len(families))
        elif r < 0.18 and len(docs) < n_docs:
            members.append(len(docs))
            exact_rows.append(len(docs))
            docs.append(list(words))
            family_of.append(len(families))
        families.append(members)
    order = rng.permutation(len(docs))
    position = np.empty(len(docs), dtype=np.int64)
    position[order] = np.arange(len(docs))
    texts = [render(docs[i], rng) for i in order]
    families = [sorted(int(position[m]) for m in fam) for fam in families if len(fam) > 1]
    return texts, families, sorted(int(position[i]) for i in exact_rows)


def write_corpus(path: Path, texts: list[str], seed: int) -> None:
    rng = np.random.default_rng(seed + 1)
    table = pa.table(
        {
            "id": np.arange(len(texts), dtype=np.int64),
            "text": pa.array(texts, type=pa.string()),
            "score": rng.random(len(texts)).round(3),
        }
    )
    write_table_atomic(table, path)


# -------------------------------------------------------------------------- baseline

_TRANSLATE: dict[int, str | None] | None = None


def py_normalize(text: str | None) -> str:
    """Plain-Python normalization, equal to personaloom's on this corpus."""
    global _TRANSLATE
    if _TRANSLATE is None:
        classes = unicode_tables()[0] & 3
        _TRANSLATE = {int(cp): " " for cp in np.flatnonzero(classes == 1)}
        _TRANSLATE.update({int(cp): None for cp in np.flatnonzero(classes == 2)})
    if not text:
        return ""
    if not text.isascii():
        text = unicodedata.normalize("NFKC", text)
    return " ".join(text.casefold().translate(_TRANSLATE).split())


def py_shingles(norm: str, ngram: int) -> list[bytes]:
    words = norm.split(" ")
    if len(words) < ngram:
        return [norm.encode()]
    return [" ".join(words[i : i + ngram]).encode() for i in range(len(words) - ngram + 1)]


def run_baseline(in_path: Path, out_path: Path, threshold: float, num_perm: int, seed: int,
                 ngram: int, bands: tuple[int, int]) -> np.ndarray:  # fmt: skip
    """datasketch end to end, same rules as ours; returns the kept row for every row."""
    import xxhash
    from datasketch import MinHash, MinHashLSH

    table = pq.read_table(in_path)
    texts = table.column("text").to_pylist()
    ids = table.column("id").to_pylist()
    scores = table.column("score").to_pylist()
    n = len(texts)
    norm = [py_normalize(t) for t in texts]
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(x: int, y: int) -> None:
        rx, ry = find(x), find(y)
        if rx != ry:
            parent[max(rx, ry)] = min(rx, ry)

    def key(i: int) -> tuple:
        return (-scores[i], ids[i], i)

    # exact groups: the best row of each normalized text
    best_of: dict[str, int] = {}
    for i, s in enumerate(norm):
        b = best_of.get(s)
        if b is None or key(i) < key(b):
            best_of[s] = i
    reps = [best_of[s] for s in best_of if s]
    minhashes = MinHash.bulk(
        (py_shingles(norm[i], ngram) for i in reps),
        num_perm=num_perm,
        seed=seed,
        hashfunc=xxhash.xxh32_intdigest,
        scheme="affine32",
    )
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, params=bands)
    by_row = {}
    for i, m in zip(reps, minhashes, strict=True):
        for j in lsh.query(m):
            if m.jaccard(by_row[j]) >= threshold:
                union(i, j)
        lsh.insert(i, m)
        by_row[i] = m

    # in each component, best first: removed if it matches a kept text, else kept
    components: dict[int, list[int]] = {}
    for i in reps:
        components.setdefault(find(i), []).append(i)
    keeper_of = {best_of[""]: best_of[""]} if "" in best_of else {}
    for members in components.values():
        kept: list[int] = []
        for i in sorted(members, key=key):
            keeper_of[i] = next((k for k in kept if by_row[i].jaccard(by_row[k]) >= threshold), i)
            if keeper_of[i] == i:
                kept.append(i)
    cluster = np.array([keeper_of[best_of[s]] for s in norm], dtype=np.int64)
    keep = cluster == np.arange(n)
    write_table_atomic(table.filter(pa.array(keep)), out_path)
    return cluster


def run_ours(in_path: Path, out_path: Path, threshold: float, num_perm: int) -> str:
    argv = ["dedup", str(in_path), "--column", "text", "--out", str(out_path),
            "--score-column", "score", "--id-column", "id",
            "--threshold", str(threshold), "--num-perm", str(num_perm)]  # fmt: skip
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(io.StringIO()):
        code = cli_main(argv)
    if code != 0:
        raise SystemExit(f"personaloom dedup exited {code}")
    return buf.getvalue()


# --------------------------------------------------------------------------- metrics


class TrueJaccard:
    def __init__(self, texts: list[str], ngram: int) -> None:
        self.norm = normalize_texts(texts)
        self.ngram = ngram
        self.cache: dict[int, set[bytes]] = {}

    def sets(self, i: int) -> set[bytes]:
        s = self.cache.get(i)
        if s is None:
            s = self.cache[i] = (
                set(py_shingles(self.norm[i], self.ngram)) if self.norm[i] else set()
            )
        return s

    def __call__(self, i: int, j: int) -> float:
        a, b = self.sets(i), self.sets(j)
        return len(a & b) / len(a | b) if a or b else 1.0


def pair_metrics(cluster: np.ndarray, families: list[list[int]], truth: TrueJaccard,
                 threshold: float) -> dict[str, float]:  # fmt: skip
    """Pair metrics over distinct normalized texts.

    `cluster[row]` is the row kept for it. A pair is *caught* unless both rows are kept; it
    is *removed as a duplicate* when one row's kept row is the other; it *shares a kept row*
    when both have the same one.
    """
    norm = truth.norm
    family_pairs = {}
    for fam in families:
        for x in range(len(fam)):
            for y in range(x + 1, len(fam)):
                i, j = fam[x], fam[y]
                if norm[i] != norm[j]:
                    family_pairs[(i, j)] = truth(i, j)
    edges = {
        (min(r, int(k)), max(r, int(k)))
        for r, k in enumerate(cluster.tolist())
        if k != r and norm[r] != norm[k]
    }
    edge_j = {e: family_pairs.get(e) or truth(*e) for e in edges}

    kept = cluster == np.arange(len(cluster))

    def caught(p: tuple[int, int]) -> bool:
        return not (kept[p[0]] and kept[p[1]])

    def same(p: tuple[int, int]) -> bool:
        return cluster[p[0]] == cluster[p[1]]

    high = [p for p, j in family_pairs.items() if j >= threshold + 0.05]
    low = [p for p, j in family_pairs.items() if j < threshold - 0.1]
    positives = {p for p, j in family_pairs.items() if j >= threshold}
    positives |= {e for e, j in edge_j.items() if j >= threshold}
    return {
        "pairs_high": len(high),
        "recall_high": sum(map(caught, high)) / max(1, len(high)),
        "pairs_low": len(low),
        "removed_low": sum(p in edges for p in low) / max(1, len(low)),
        "clustered_low": sum(map(same, low)) / max(1, len(low)),
        "edges": len(edges),
        "precision": sum(j >= threshold for j in edge_j.values()) / max(1, len(edges)),
        "recall": sum(map(caught, positives)) / max(1, len(positives)),
        "positives": len(positives),
    }


# ---------------------------------------------------------------------------- memory


def status_kb(field: str) -> int:
    """VmRSS / VmHWM of this process. (Not ru_maxrss: Linux folds the pre-exec memory of
    the forked parent into it, so a child would report the bench's own peak.)"""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def memory_child(in_path: str, warm_path: str, num_perm: int) -> None:
    os.sched_setaffinity(0, {0})
    pa.set_cpu_count(1)
    with tempfile.TemporaryDirectory() as tmp:
        run_ours(Path(warm_path), Path(tmp) / "warm.parquet", 0.8, num_perm)
        start = status_kb("VmRSS")
        run_ours(Path(in_path), Path(tmp) / "out.parquet", 0.8, num_perm)
    print(json.dumps({"start_kb": start, "peak_kb": status_kb("VmHWM")}))


def measure_cold_start(warm: Path, num_perm: int) -> float:
    """Seconds for a fresh process to dedup 200 docs with an empty numba cache (compiles)."""
    code = (
        "import sys, time; sys.path.insert(0, sys.argv[1]); t = time.perf_counter(); "
        "from personaloom.cli import main; "
        "main(['dedup', sys.argv[2], '--column', 'text', '--out', sys.argv[3], '--num-perm', sys.argv[4]]); "
        "print(time.perf_counter() - t)"
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        out = Path(cache) / "out.parquet"
        cmd = [sys.executable, "-c", code, str(ROOT), str(warm), str(out), str(num_perm)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
    return float(done.stdout.strip().splitlines()[-1])


def measure_memory(
    sizes: list[int], folder: Path, warm: Path, seed: int, num_perm: int
) -> list[dict]:
    rows = []
    for n in sizes:
        path = folder / f"mem-{n}.parquet"
        texts, _, _ = make_corpus(n, seed + n)
        write_corpus(path, texts, seed)
        text_mb = pq.read_table(path).column("text").nbytes / 2**20
        del texts
        cmd = [sys.executable, __file__, "--memory-child", str(path), str(warm), str(num_perm)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        probe = json.loads(out.strip().splitlines()[-1])
        rows.append({"docs": n, "text_mb": text_mb, **probe})
    return rows


# ------------------------------------------------------------------------------ main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=20_000)
    parser.add_argument("--quick", action="store_true", help="2,000 documents, small memory probe")
    parser.add_argument("--threshold", type=float, default=0.8)
    parser.add_argument("--num-perm", type=int, default=128)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=3, help="timed runs of ours (median)")
    parser.add_argument("--memory-sizes", default=None, help="e.g. 20000,100000")
    parser.add_argument("--memory-child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child[0], args.memory_child[1], int(args.memory_child[2]))
        return
    n = 2_000 if args.quick else args.docs
    sizes = [
        int(s)
        for s in (args.memory_sizes or ("2000,10000" if args.quick else "20000,100000")).split(",")
    ]

    os.sched_setaffinity(0, {0})
    pa.set_cpu_count(1)
    pa.set_io_thread_count(1)
    threshold, num_perm, ngram, mh_seed = args.threshold, args.num_perm, 5, 1
    bands = lsh_params(threshold, num_perm)

    with tempfile.TemporaryDirectory(prefix="bench-dedup-") as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        texts, families, exact_rows = make_corpus(n, args.seed)
        in_path = folder / "in.parquet"
        write_corpus(in_path, texts, args.seed)
        gen_s = time.perf_counter() - t0
        warm = folder / "warm.parquet"
        write_corpus(warm, texts[:200], args.seed)

        t0 = time.perf_counter()
        run_ours(warm, folder / "warm-out.parquet", threshold, num_perm)
        first_call_s = time.perf_counter() - t0

        ours_wall, ours_cpu = [], []
        for _ in range(max(1, args.repeat)):
            w, c = time.perf_counter(), time.process_time()
            printed = run_ours(in_path, folder / "ours.parquet", threshold, num_perm)
            ours_wall.append(time.perf_counter() - w)
            ours_cpu.append(time.process_time() - c)
        w, c = time.perf_counter(), time.process_time()
        base_roots = run_baseline(
            in_path, folder / "base.parquet", threshold, num_perm, mh_seed, ngram, bands
        )
        base_wall, base_cpu = time.perf_counter() - w, time.process_time() - c

        # untimed: same computation as the CLI, for the clusters
        table = pq.read_table(in_path)
        _, _, result = dedup_table(table, "text", score_column="score", id_column="id",
                                   threshold=threshold, num_perm=num_perm)  # fmt: skip
        ours_ids = set(pq.read_table(folder / "ours.parquet").column("id").to_pylist())
        base_ids = set(pq.read_table(folder / "base.parquet").column("id").to_pylist())
        assert ours_ids == {int(i) for i in np.flatnonzero(result.keep)}

        truth = TrueJaccard(texts, ngram)
        assert [py_normalize(t) for t in texts] == truth.norm, "baseline normalization differs"
        m_ours = pair_metrics(result.cluster, families, truth, threshold)
        m_base = pair_metrics(base_roots, families, truth, threshold)
        exact_found = sum(r.startswith("exact") for r in result.reasons if r)

        memory = measure_memory(sizes, folder, warm, args.seed, num_perm)
        cold_s = measure_cold_start(warm, num_perm)

    ours_w, ours_c = float(np.median(ours_wall)), float(np.median(ours_cpu))
    words = np.array([len(t.split()) for t in texts])
    print(f"\n## personaloom dedup vs datasketch baseline ({n:,} docs, one core)\n")
    print(f"corpus: {n:,} docs, {words.mean():.0f} words/doc (min {words.min()}, max {words.max()}), "
          f"{sum(len(f) for f in families) - len(families):,} planted duplicates in "
          f"{len(families):,} families ({len(exact_rows):,} exact copies); generated in {gen_s:.1f} s")  # fmt: skip
    print(f"threshold {threshold}, num_perm {num_perm}, ngram {ngram}, bands x rows {bands[0]} x {bands[1]}; "
          f"load average {os.getloadavg()[0]:.2f} (shared machine; CPU time is the steadier figure)\n")  # fmt: skip
    print("| metric | ours | datasketch baseline | ratio |")
    print("|---|---:|---:|---:|")
    print(
        f"| end-to-end wall time (s) | {ours_w:.3f} | {base_wall:.2f} | {base_wall / ours_w:.1f}x |"
    )
    print(
        f"| docs/s (wall) | {n / ours_w:,.0f} | {n / base_wall:,.0f} | {base_wall / ours_w:.1f}x |"
    )
    print(
        f"| docs/s (CPU time) | {n / ours_c:,.0f} | {n / base_cpu:,.0f} | {base_cpu / ours_c:.1f}x |"
    )
    for key, label in [
        ("recall_high", f"recall (not both kept), planted pairs J >= {threshold + 0.05:.2f}"),
        ("removed_low", f"removed as duplicate, planted pairs J < {threshold - 0.1:.2f}"),
        ("clustered_low", f"sharing a kept row, planted pairs J < {threshold - 0.1:.2f}"),
        ("precision", f"pair precision at J >= {threshold} (removed row vs its kept row)"),
        ("recall", f"pair recall at J >= {threshold} (not both kept)"),
    ]:
        print(f"| {label} | {m_ours[key]:.4f} | {m_base[key]:.4f} | |")
    print(f"| near-duplicate removals (distinct texts) | {m_ours['edges']:,} | "
          f"{m_base['edges']:,} | |")  # fmt: skip
    agree = len(ours_ids & base_ids) / max(1, len(ours_ids | base_ids))
    print(f"| rows kept | {len(ours_ids):,} | {len(base_ids):,} | kept-set agreement {agree:.4f} |")
    print(f"\nplanted pairs: {m_ours['pairs_high']:,} with J >= {threshold + 0.05:.2f}, "
          f"{m_ours['pairs_low']:,} with J < {threshold - 0.1:.2f}; positives at J >= {threshold}: "
          f"{m_ours['positives']:,}; exact duplicates removed: {exact_found:,}")  # fmt: skip
    print(f"ours: median of {len(ours_wall)} runs (wall {', '.join(f'{x:.3f}' for x in ours_wall)} s); "
          f"first call (numba cache load, 200 docs): {first_call_s:.2f} s; in a fresh process with an "
          f"empty numba cache (compiles, imports included): {cold_s:.1f} s")  # fmt: skip
    print(f"CLI output: {printed.strip()}")

    sig_mb = 1_000_000 * num_perm * 4 / 2**20
    print("\n### memory (fresh process, peak RSS of the CLI run)\n")
    print(
        "| docs | text in Parquet column (MiB) | RSS before (MiB) | peak RSS (MiB) | increase (MiB) |"
    )
    print("|---:|---:|---:|---:|---:|")
    for row in memory:
        print(f"| {row['docs']:,} | {row['text_mb']:.0f} | {row['start_kb'] / 1024:.0f} | "
              f"{row['peak_kb'] / 1024:.0f} | {(row['peak_kb'] - row['start_kb']) / 1024:.0f} |")  # fmt: skip
    a, b = memory[0], memory[-1]
    per_doc_kb = (b["peak_kb"] - a["peak_kb"]) / max(1, b["docs"] - a["docs"])
    est_gb = (b["peak_kb"] + per_doc_kb * (1_000_000 - b["docs"])) / 2**20
    print(
        f"\nsignatures for 1M docs: 1,000,000 x {num_perm} x 4 B = {sig_mb:.0f} MiB. "
        f"Peak RSS grows {per_doc_kb:.2f} KiB/doc between {a['docs']:,} and {b['docs']:,} docs; "
        f"extrapolated linearly (not measured) to 1M docs: ~{est_gb:.1f} GiB."
    )


if __name__ == "__main__":
    main()
