"""`personaloom dedup`: exact + near-duplicate dedup of one Parquet file's text column."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from personaloom.errors import UserError

if TYPE_CHECKING:  # heavy imports wait for `run`: every CLI start imports this module
    import numpy as np
    import pyarrow as pa


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


READ_BATCH_ROWS = 8192  # smaller batches keep Arrow's decode buffers small


def _read_parquet(path: Path) -> pa.Table:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path, memory_map=True)
        batches = list(parquet.iter_batches(batch_size=READ_BATCH_ROWS, use_threads=False))
    except (pa.ArrowException, OSError) as exc:
        raise UserError(f"{path}: not a readable Parquet file ({exc})") from exc
    return pa.Table.from_batches(batches, schema=parquet.schema_arrow)


def _write_kept(table: pa.Table, keep: np.ndarray, path: Path) -> None:
    """Write table[keep] atomically, a row group at a time (no full filtered copy)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from personaloom.atomic import ROW_GROUP_BYTES, atomic_path

    with atomic_path(path) as tmp:
        with pq.ParquetWriter(tmp, table.schema, compression="zstd", write_page_index=True) as out:
            group: list[pa.RecordBatch] = []
            size = start = 0
            for batch in table.to_batches():
                kept = batch.filter(pa.array(keep[start : start + batch.num_rows]))
                start += batch.num_rows
                if kept.num_rows:
                    group.append(kept)
                    size += kept.nbytes
                if size >= ROW_GROUP_BYTES:
                    out.write_table(pa.Table.from_batches(group, schema=table.schema))
                    group, size = [], 0
            if group:
                out.write_table(pa.Table.from_batches(group, schema=table.schema))


def run(args: argparse.Namespace) -> int:
    from personaloom.atomic import write_table_atomic
    from personaloom.dedup import dedup_column, load_signatures, removed_table

    _check_options(args)
    path = Path(args.input)
    if not path.is_file():
        raise UserError(f"{args.input}: no such file")
    table = _read_parquet(path)
    previous = load_signatures(*args.against) if args.against else None

    result = dedup_column(
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
    _write_kept(table, result.keep, Path(args.out))
    if args.removed:
        write_table_atomic(removed_table(table, result), Path(args.removed))
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
