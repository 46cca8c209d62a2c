"""`personaloom critique FILE --kind persona|conversation --out VERDICTS.parquet`.

Runs the project's rule critics (validators/critics/*.py with validators/critics.yaml, as
`generate` loads them) over any Parquet or JSONL file of personas or conversations in our
schema: a released corpus, another tool's output mapped to our columns, a hand-edited
file. Writes one verdict per record and critic (`record_id`, `kind`, `critic`, `mode`,
`passed`, `score`, `reason` (the code), `evidence` (the rest of the critic's message))
atomically, and prints acceptance per critic. Every critic runs whatever its mode: a
verdict is what the critic measured, the mode only says whether `generate` would reject.

Conversations are compared with their personas (`--personas FILE`, or `../personas/` when
FILE lies in a dataset folder's `conversations/`); `--taxonomy` tells the identity critics
which attributes hold the persona's name and gender. A missing file or needed column is a
bad input (exit 2, naming the file, line and column); nothing is written then.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from personaloom.errors import UserError

KINDS = ("persona", "conversation")
NEEDED = {
    "persona": ("persona_id", "attributes", "narrative", "sections"),
    "conversation": ("conversation_id", "persona_id", "turns"),
}
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "critique",
        help="run the rule critics over a Parquet or JSONL file of personas or conversations",
        description=__doc__.split("\n\n")[1].replace("\n", " "),
    )
    parser.add_argument("file", metavar="FILE", help="Parquet or JSONL (one record a line)")
    parser.add_argument("--kind", required=True, choices=KINDS, help="what the records are")
    parser.add_argument("--out", required=True, metavar="VERDICTS.parquet", help="verdicts")
    parser.add_argument(
        "--taxonomy",
        metavar="NAME|PATH",
        help="the records' taxonomy (its identity leaves name the name and gender attributes)",
    )
    parser.add_argument(
        "--personas",
        metavar="FILE",
        help="personas of the conversations (default: ../personas/ of a dataset folder)",
    )
    parser.add_argument("--project", metavar="DIR", help="corpus project folder (default: .)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from personaloom.critic.settings import load_critic_config
    from personaloom.project import Project

    path = Path(args.file)
    out = Path(args.out)
    if out.resolve() == path.resolve():
        raise UserError(f"--out {args.out}: would overwrite FILE")
    if out.is_dir():
        raise UserError(f"--out {args.out}: is a directory")
    project = Project.locate(args.project)
    records = read_records(path, args.kind)
    personas = _personas(args, path) if args.kind == "conversation" else {}
    shared: dict[str, Any] = {}
    if args.taxonomy:
        from personaloom.critic.identity import identity_paths
        from personaloom.taxonomy.loader import load_taxonomy

        shared.update(identity_paths(load_taxonomy(project.taxonomy_path(args.taxonomy))))
    critics = load_critic_config(project.validators).critics
    rows = critique(critics, records, args.kind, personas=personas, shared=shared)
    write_verdicts(rows, out)
    print_summary(rows, args.kind, len(records), path, out, personas_given=bool(personas))
    return 0


# -- reading -------------------------------------------------------------------------------
def read_records(path: Path, kind: str) -> list[dict[str, Any]]:
    """The records of a Parquet or JSONL file; a UserError names a missing needed column."""
    if not path.is_file():
        raise UserError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
    if path.suffix.lower() in JSONL_SUFFIXES or not _is_parquet(path):
        return _read_jsonl(path, kind)
    return _read_parquet(path, kind)


def _is_parquet(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(4) == b"PAR1"


def _read_parquet(path: Path, kind: str) -> list[dict[str, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise UserError(f"{path}: not a readable Parquet file ({exc})") from None
    missing = [c for c in NEEDED[kind] if c not in table.column_names]
    if missing:
        raise UserError(
            f"{path}: no column {missing[0]!r}, needed for --kind {kind} "
            f"(needed: {', '.join(NEEDED[kind])}; the file has: {', '.join(table.column_names)})"
        )
    return table.to_pylist()


def _read_jsonl(path: Path, kind: str) -> list[dict[str, Any]]:
    from personaloom.errors import read_utf8

    records = []
    for number, line in enumerate(read_utf8(path, "records file").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}:{number}: not a JSON object ({exc.msg})") from None
        if not isinstance(record, dict):
            raise UserError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
        missing = [c for c in NEEDED[kind] if c not in record]
        if missing:
            raise UserError(
                f"{path}:{number}: no column {missing[0]!r}, needed for --kind {kind} "
                f"(needed: {', '.join(NEEDED[kind])})"
            )
        records.append(record)
    return records


def _personas(args: argparse.Namespace, path: Path) -> dict[str, dict[str, Any]]:
    if args.personas:
        source = Path(args.personas)
        files = sorted(source.glob("*.parquet")) if source.is_dir() else [source]
    else:
        folder = path.resolve().parent.parent / "personas"
        files = sorted(folder.glob("*.parquet")) if path.parent.name == "conversations" else []
    personas: dict[str, dict[str, Any]] = {}
    for file in files:
        for record in read_records(file, "persona"):
            personas[str(record["persona_id"])] = record
    return personas


# -- verdicts ------------------------------------------------------------------------------
def critique(
    critics: Sequence[Any],
    records: Sequence[dict[str, Any]],
    kind: str,
    *,
    personas: Mapping[str, dict[str, Any]] | None = None,
    shared: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """One verdict row per record and critic that applies to `kind`."""
    from personaloom.critic.rule_critics import record_id, run_rule_critics

    modes = {c.name: c.mode for c in critics}
    results = run_rule_critics(critics, records, kind, personas=personas, shared=shared)
    rows = []
    for record, row in zip(records, results, strict=True):
        rid = record_id(record, kind)
        for result in row:
            code, _, evidence = result.reason.partition(": ")
            rows.append(
                {
                    "record_id": rid,
                    "kind": kind,
                    "critic": result.critic,
                    "mode": modes.get(result.critic, "filter"),
                    "passed": result.passed,
                    "score": None if result.score is None else float(result.score),
                    "reason": code if not result.passed else "",
                    "evidence": evidence.strip() if not result.passed else "",
                }
            )
    return rows


def write_verdicts(rows: list[dict[str, Any]], out: Path) -> None:
    import pyarrow as pa

    from personaloom.atomic import write_table_atomic

    schema = pa.schema(
        [
            ("record_id", pa.string()),
            ("kind", pa.string()),
            ("critic", pa.string()),
            ("mode", pa.string()),
            ("passed", pa.bool_()),
            ("score", pa.float64()),
            ("reason", pa.string()),
            ("evidence", pa.string()),
        ]
    )
    write_table_atomic(pa.Table.from_pylist(rows, schema=schema), out)


def summary(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per critic: records checked, passed, acceptance and the most common reason."""
    by_critic: dict[str, dict[str, Any]] = {}
    for row in rows:
        entry = by_critic.setdefault(
            row["critic"], {"critic": row["critic"], "mode": row["mode"], "checked": 0, "passed": 0}
        )
        entry["checked"] += 1
        entry["passed"] += bool(row["passed"])
        entry.setdefault("reasons", Counter())
        if not row["passed"]:
            entry["reasons"][row["reason"]] += 1
    out = []
    for name in sorted(by_critic):
        entry = by_critic[name]
        reasons = entry.pop("reasons")
        entry["acceptance"] = round(entry["passed"] / entry["checked"], 4)
        entry["top_reason"] = (
            ", ".join(f"{r} ({n})" for r, n in reasons.most_common(3)) if reasons else ""
        )
        out.append(entry)
    return out


def print_summary(
    rows: Sequence[dict[str, Any]],
    kind: str,
    n_records: int,
    path: Path,
    out: Path,
    *,
    personas_given: bool,
) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 120)
    accepted = _accepted_records(rows)
    table = Table(
        title=f"{path}: {n_records} {kind} records, {accepted} pass every critic",
        title_justify="left",
    )
    for column in ("critic", "mode", "checked", "passed", "acceptance", "top reasons"):
        table.add_column(column, justify="right" if column in ("checked", "passed") else "left")
    for entry in summary(rows):
        table.add_row(
            entry["critic"],
            entry["mode"],
            str(entry["checked"]),
            str(entry["passed"]),
            f"{entry['acceptance']:.1%}",
            entry["top_reason"],
        )
    console.print(table)
    if kind == "conversation" and not personas_given:
        console.print(
            "note: no personas given (--personas): the consistency critics had nothing to "
            "compare the user turns with"
        )
    console.print(f"verdicts: {out}")


def _accepted_records(rows: Sequence[dict[str, Any]]) -> int:
    failed = {r["record_id"] for r in rows if not r["passed"]}
    return len({r["record_id"] for r in rows} - failed)
