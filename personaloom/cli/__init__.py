"""Command-line edge: parses options, maps UserError -> exit 2 and RunError -> exit 1.

Each subcommand lives in `personaloom/cli/<name>.py` and exposes
`register(subparsers) -> None`, which adds its parser and sets `func=run` where
`run(args: argparse.Namespace) -> int`.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from personaloom import __version__
from personaloom.errors import RunError, UserError
from personaloom.secrets import redact

COMMANDS = ("generate", "release", "dedup", "taxonomy", "stats", "merge", "critique", "eval")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse exits 2 already; keep one format
        self.print_usage(sys.stderr)
        self.exit(2, f"error: {self.prog}: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="personaloom", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"personaloom {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"personaloom.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"personaloom.cli.{name}":
                continue  # command not built yet
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # the exact command, for the card
    # Ctrl-C and SIGTERM stop the command's processes, say what is saved and exit 130/143
    # (personaloom/cli/stop.py); the command runs in a worker thread meanwhile.
    from personaloom.cli import stop

    try:
        return int(stop.for_command(args).run(args.func, args) or 0)
    except UserError as exc:
        print(f"error: {redact(str(exc))}", file=sys.stderr)
        return 2
    except RunError as exc:
        print(f"run failed: {redact(str(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: run state kept; re-run the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
