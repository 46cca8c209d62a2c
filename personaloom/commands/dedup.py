"""`personaloom dedup`: exact + near-duplicate dedup of one Parquet file's text column."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from personaloom.errors import UserError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "dedup",
        help="drop exact and near-duplicate rows of a Parquet file (MinHash LSH)",
        description="Keep one row per cluster of exact or near-duplicate texts; all columns "
        "are kept intact. Prints counts: in, exact duplicates, near duplicates, kept.",
    )
    p.add_argument("input", metavar="IN.parquet", help="Parquet file to dedup")
    p.add_argument("--column", required=True, help="text column to compare")
    p.add_argument("--out", required=True, metavar="OUT.parquet", help="kept rows (atomic write)")
    p.add_argument(
        "--threshold",
        type=float,
        default=0.8,
        help="Jaccard similarity of near duplicates, in (0, 1]",
    )
    p.add_argument("--num-perm", type=int, default=128, help="MinHash permutations (>= 2)")
    p.add_argument("--ngram", type=int, default=5, help="words per shingle (>= 1)")
    p.add_argument("--seed", type=int, default=1, help="MinHash permutation seed")
    p.add_argument("--score-column", default=None, help="a cluster keeps its highest score")
    p.add_argument(
        "--id-column", default=None, help="ids for ties and reasons (default: row number)"
    )
    p.add_argument(
        "--against",
        action="append",
        default=[],
        metavar="SIGNATURES",
        help="signatures of a previous release (repeatable): rows matching them are dropped",
    )
    p.add_argument(
        "--save-signatures", default=None, metavar="PATH", help="write kept rows' signatures"
    )
    p.add_argument(
        "--removed", default=None, metavar="PATH", help="write removed rows with dedup_reason"
    )
    p.set_defaults(func=run)


def _check_options(args: argparse.Namespace) -> None:
    if not 0.0 < args.threshold <= 1.0:
        raise UserError(f"--threshold {args.threshold}: must be in (0, 1]")
    if args.num_perm < 2:
        raise UserError(f"--num-perm {args.num_perm}: must be >= 2")
    if args.ngram < 1:
        raise UserError(f"--ngram {args.ngram}: must be >= 1")
    if not 0 <= args.seed < 2**32:
        raise UserError(f"--seed {args.seed}: must be in [0, 2**32)")
    outputs = {
        "--out": args.out,
        "--save-signatures": args.save_signatures,
        "--removed": args.removed,
    }
    named = {opt: Path(v).resolve() for opt, v in outputs.items() if v is not None}
    if len(set(named.values())) != len(named):
        raise UserError(f"{', '.join(named)}: output paths must differ")
    for opt, path in named.items():
        if path.is_dir():
            raise UserError(f"{opt} {outputs[opt]}: is a directory")


def run(args: argparse.Namespace) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from personaloom.dedup import dedup_table, load_signatures
    from personaloom.shards import write_table_atomic

    _check_options(args)
    path = Path(args.input)
    if not path.is_file():
        raise UserError(f"{args.input}: no such file")
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise UserError(f"{args.input}: not a readable Parquet file ({exc})") from exc
    previous = load_signatures(*args.against) if args.against else None

    kept, removed, result = dedup_table(
        table,
        args.column,
        score_column=args.score_column,
        id_column=args.id_column,
        threshold=args.threshold,
        num_perm=args.num_perm,
        seed=args.seed,
        ngram=args.ngram,
        previous=previous,
    )
    write_table_atomic(kept, Path(args.out))
    if args.removed:
        write_table_atomic(removed, Path(args.removed))
    if args.save_signatures:
        result.kept_signatures().save(args.save_signatures)

    c = result.counts
    b, r = result.bands
    print(
        f"dedup {args.input}: in {c.input}, exact duplicates {c.exact_duplicates}, "
        f"near duplicates {c.near_duplicates}, in previous release {c.in_previous_release}, "
        f"kept {c.kept} -> {args.out}"
    )
    print(
        f"  threshold {result.threshold}, {args.num_perm} permutations, {b} bands x {r} rows, "
        f"{result.verifications} verifications",
        file=sys.stderr,
    )
    return 0
