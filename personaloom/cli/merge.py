"""`personaloom merge PART_DIR... --out DIR`: combine the parts of a `--shard k/n` run."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "merge",
        help="merge the part folders of a sharded run (--shard k/n) into one dataset folder",
        description="Check that the parts are the n finished shards of one run, concatenate "
        "them, remove near-duplicate personas across parts (with their conversations and "
        "probes), then write the shards, the rejected tables, the manifest and the card. "
        "Re-running the same merge is a no-op; after a crash it redoes the merge.",
    )
    p.add_argument(
        "parts", nargs="+", metavar="PART_DIR", help="folders written by generate --shard k/n"
    )
    p.add_argument("--out", required=True, help="dataset folder to write (new, or this merge's)")
    p.add_argument(
        "--no-embeddings",
        action="store_true",
        help="skip the semantic-uniqueness metric (no embedding model is loaded)",
    )
    p.set_defaults(func=run)


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    from personaloom.run.merge import merge

    result = merge(
        args.parts,
        args.out,
        embeddings=not args.no_embeddings,
        command=["personaloom", *sys.argv[1:]],
        log=_progress,
    )
    counts, dedup = result["counts"], result["dedup"]
    removed = dedup.get("exact_duplicates", 0) + dedup.get("near_duplicates", 0)
    state = "already up to date" if result["skipped"] else "written"
    print(f"merged corpus {state}: {result['out']}")
    print(
        f"  parts: {len(result['parts'])}; personas kept {counts.get('personas_kept')} of "
        f"{counts.get('personas_requested')} requested ({removed} duplicates across parts "
        f"removed); conversations {counts.get('conversations')}; probes {counts.get('probes')}"
    )
    if result.get("shortfall"):
        # Cross-part dedup can remove personas that no part could replace.
        print(f"warning: {result['shortfall']} after dedup across parts", file=sys.stderr)
    return 0
