"""`personaloom release DIR --to TARGET [--tag vX.Y.Z] [--private] [--create-pr] [--message M]`."""

from __future__ import annotations

import argparse

HELP = "publish a dataset folder to the Hugging Face Hub or a local git repository"
EPILOG = """\
TARGET is hf://datasets/ORG/NAME (token from HF_TOKEN or the Prefect Secret block
personaloom-hf-token) or a local path (a git repository, created if absent, with one
commit per release and the tag on it). Re-running a release is safe: the same content is
never committed twice, an interrupted upload resumes, and an existing tag holding other
content is refused.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "release",
        help=HELP,
        description=HELP,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "dir", metavar="DIR", help="dataset folder written by `personaloom generate`"
    )
    parser.add_argument(
        "--to", required=True, metavar="TARGET", help="hf://datasets/ORG/NAME or a local path"
    )
    parser.add_argument(
        "--tag", metavar="vX.Y.Z", help="version tag for this release (e.g. v1.0.0)"
    )
    parser.add_argument("--private", action="store_true", help="create the Hub repo as private")
    parser.add_argument(
        "--create-pr",
        action="store_true",
        help="open a pull request on the Hub instead of committing to main",
    )
    parser.add_argument("--message", metavar="M", help="commit message (default: 'Release vX.Y.Z')")
    parser.add_argument(
        "--project",
        default=None,
        help="corpus project folder (for flows/release.py's token lookup)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from personaloom.cli.flow_runner import hub_token_source
    from personaloom.publish.release import release

    outcome = release(
        args.dir,
        args.to,
        tag=args.tag,
        private=args.private,
        create_pr=args.create_pr,
        message=args.message,
        token_source=hub_token_source(args.project) if args.to.startswith("hf://") else None,
    )
    commit = outcome.commit[:12] if outcome.commit else "-"
    if outcome.noop:
        where = f"tag {outcome.tag}" if outcome.tag else "main"
        print(
            f"already released: {outcome.target} {where} ({commit}) holds this content; nothing to do"
        )
    elif outcome.pr_url:
        print(f"proposed: {outcome.pr_url} (commit {commit})")
    else:
        parts = [f"commit {commit}" + ("" if outcome.made_commit else " (unchanged)")]
        if outcome.made_tag:
            parts.append(f"tag {outcome.tag}")
        print(f"released: {outcome.target} " + ", ".join(parts))
    if outcome.note:
        print(f"note: {outcome.note}")
    return 0
