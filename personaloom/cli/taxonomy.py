"""`personaloom taxonomy check PATH` and `personaloom taxonomy sample PATH --n N`."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from personaloom.errors import UserError
from personaloom.project import Project


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("taxonomy", help="check a taxonomy or sample skeletons from it")
    sub = parser.add_subparsers(dest="taxonomy_command", required=True, parser_class=type(parser))
    check = sub.add_parser("check", help="validate a taxonomy (and its rules); print a summary")
    check.add_argument("path", metavar="PATH", help="taxonomy file or name in taxonomies/")
    check.add_argument("--rules", metavar="DIR", help="rule files or folder (default: validators/)")
    check.add_argument("--project", metavar="DIR", help="corpus project folder (default: .)")
    check.set_defaults(func=run)
    sample = sub.add_parser("sample", help="print skeletons as JSON lines (no model)")
    sample.add_argument("path", metavar="PATH", help="taxonomy file or name in taxonomies/")
    sample.add_argument("--n", type=int, required=True, help="number of skeletons (ids 0..N-1)")
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--start", type=int, default=0, help="first persona id (default 0)")
    sample.add_argument("--preset", choices=("quick", "deep"), default="quick")
    sample.add_argument(
        "--rules", metavar="DIR", help="rule files or folder (default: validators/)"
    )
    sample.add_argument("--no-rules", action="store_true", help="do not apply rules")
    sample.add_argument(
        "--quota",
        action="append",
        default=[],
        metavar="SPEC",
        help="PATH=uniform or PATH=value:share,... (repeatable)",
    )
    sample.add_argument("--project", metavar="DIR", help="corpus project folder (default: .)")
    sample.set_defaults(func=run)


def _load(args: argparse.Namespace):
    from personaloom.taxonomy.loader import load_taxonomy
    from personaloom.taxonomy.rules import RuleSet, load_rules

    project = Project.locate(args.project)
    path = project.taxonomy_path(args.path)
    tax = load_taxonomy(path)
    if getattr(args, "no_rules", False):
        return tax, RuleSet.empty()
    source = Path(args.rules) if args.rules else project.validators
    if args.rules and not source.exists():
        raise UserError(f"--rules {args.rules}: no such file or folder")
    rules = load_rules(source, taxonomy=tax) if source.exists() else RuleSet.empty()
    return tax, rules


def run(args: argparse.Namespace) -> int:
    if args.taxonomy_command == "check":
        return _check(args)
    return _sample(args)


def _check(args: argparse.Namespace) -> int:
    tax, rules = _load(args)
    s = tax.stats()
    print(f"{tax.ref}: ok ({tax.source})")
    print(
        f"  leaves: {s['leaves']} (categorical {s['categorical']}, numeric {s['numeric']}, "
        f"generated {s['generated']}; conditional {s['conditional']})"
    )
    if s["identity"]:
        names = ", ".join(leaf.path for leaf in tax.identity_leaves)
        print(f"  identity: {names} (names from {tax.locales.source})")
    print(
        f"  depth: {s['depth']}  categories: {s['categories']}  subcategories: {s['subcategories']}"
    )
    print(f"  anchors: {', '.join(s['anchors']) or 'none'}")
    for cat, n in s["per_category"].items():
        print(f"    {cat}: {n}")
    print(f"  rules: {len(rules)}")
    _check_topics(args, tax)
    return 0


def _check_topics(args: argparse.Namespace, tax) -> None:
    """The topics file serving the taxonomy, checked against it (exit 2 on a problem)."""
    from personaloom.generate.topics import catalogue_notice, catalogue_path, load_catalogue

    project = Project.locate(args.project)
    path = project.taxonomy_path(args.path)
    topics = catalogue_path(project, path)
    catalogue = load_catalogue(topics, tax)
    print(
        f"  topics: {len(catalogue.topics)}, changing preferences: "
        f"{len(catalogue.preferences)} ({topics})"
    )
    notice = catalogue_notice(topics, path)
    if notice:
        print(notice, file=sys.stderr)


def _sample(args: argparse.Namespace) -> int:
    from personaloom.taxonomy.quotas import plan_quotas
    from personaloom.taxonomy.sampling import iter_batches

    if args.n < 0:
        raise UserError(f"--n {args.n}: must be >= 0")
    if args.seed < 0:
        raise UserError(f"--seed {args.seed}: must be >= 0")
    if args.start < 0:
        raise UserError(f"--start {args.start}: must be >= 0")
    tax, rules = _load(args)
    settings = tax.settings(args.preset)
    quota_plan = (
        plan_quotas(tax, args.quota, n=args.start + args.n, seed=args.seed) if args.quota else None
    )
    indices = range(args.start, args.start + args.n)
    out = sys.stdout
    try:
        for batch in iter_batches(
            tax, args.seed, indices, settings, rules, quota_plan, batch_size=64
        ):
            for sk in batch.skeletons():
                out.write(json.dumps(sk.to_json(), ensure_ascii=False) + "\n")
                out.flush()
    except BrokenPipeError:  # `| head`: the reader is gone, which is not an error
        devnull = open(os.devnull, "w")
        os.dup2(devnull.fileno(), sys.stdout.fileno())
    return 0
