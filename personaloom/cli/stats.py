"""`personaloom stats DIR [--json]`: counts, rejections and quality metrics of a dataset folder.

Besides the counts and the metric table: population fidelity (TV distance to the taxonomy's
target at three points, the worst attributes, the anchor pairs, critic bias per anchor
value; `personaloom.publish.fidelity`) and, for runs with conversations, persona adherence
(`personaloom.publish.adherence`). `--json` prints the same as one object: the fidelity
tables are under `metrics.fidelity` (`summary`, `worst_attributes`, `anchor_pairs`,
`critic_bias.groups`, `anchors`), adherence under `metrics.adherence`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from personaloom.errors import UserError

MANIFEST_FIELDS = (
    "taxonomy",
    "model",
    "status",
    "started_at",
    "finished_at",
    "counts",
    "judges",
    "critic_report",
    "shortfall",
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "stats", help="counts, rejections and quality metrics of a dataset folder"
    )
    parser.add_argument("dir", metavar="DIR", help="dataset folder written by personaloom generate")
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object instead of tables"
    )
    parser.add_argument(
        "--no-embeddings",
        action="store_true",
        help="skip the embedding metrics: semantic uniqueness and persona adherence (no "
        "embedding model is loaded)",
    )
    parser.add_argument(
        "--no-fidelity",
        action="store_true",
        help="skip population fidelity (no skeletons are re-sampled)",
    )
    parser.add_argument(
        "--fidelity-margin",
        type=float,
        default=None,
        metavar="M",
        help="critic bias: flag acceptance differing by more than M (default: the run's, 0.10)",
    )
    parser.add_argument(
        "--fidelity-min-group",
        type=int,
        default=None,
        metavar="K",
        help="critic bias: flag only groups of at least K reviewed (default: the run's, 20)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from personaloom.publish.metrics import compute_metrics

    out = Path(args.dir)
    if not out.is_dir():
        raise UserError(
            f"{args.dir}: no such dataset folder"
            if not out.exists()
            else f"{args.dir}: not a folder"
        )
    if args.fidelity_margin is not None and not 0 < args.fidelity_margin < 1:
        raise UserError(f"--fidelity-margin {args.fidelity_margin}: expected 0 < M < 1")
    if args.fidelity_min_group is not None and args.fidelity_min_group < 1:
        raise UserError(f"--fidelity-min-group {args.fidelity_min_group}: expected K >= 1")
    metrics = compute_metrics(
        out,
        embeddings=not args.no_embeddings,
        fidelity=not args.no_fidelity,
        fidelity_settings={"margin": args.fidelity_margin, "min_group": args.fidelity_min_group},
    )
    manifest = _manifest(out)
    if args.json:
        report = {"dir": str(out), "run": manifest, "metrics": metrics}
        json.dump(report, sys.stdout, indent=2, sort_keys=False, default=str)
        sys.stdout.write("\n")
    else:
        print_report(out, manifest, metrics)
    return 0


def _manifest(out: Path) -> dict[str, Any]:
    path = out / ".personaloom" / "manifest.json"
    if not path.exists():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))  # compute_metrics has validated it
    return {k: data[k] for k in MANIFEST_FIELDS if k in data}


def print_report(out: Path, manifest: dict[str, Any], metrics: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 120)
    head = f"[bold]{out}[/bold]"
    details = [f"{k}: {manifest[k]}" for k in ("taxonomy", "model", "status") if manifest.get(k)]
    console.print(head + (f"  ({', '.join(details)})" if details else ""))
    if manifest.get("shortfall"):
        console.print(f"[yellow]{manifest['shortfall']}[/yellow]")

    counts = Table(title="Records", title_justify="left")
    counts.add_column("what")
    counts.add_column("count", justify="right")
    for name, value in metrics["counts"].items():
        counts.add_row(name, _fmt(value))
    for name, value in (manifest.get("counts") or {}).items():
        if isinstance(value, (int, float)):
            counts.add_row(f"run: {name}", _fmt(value))
    console.print(counts)

    rejections = metrics["rejections"]
    if rejections["by_stage"]:
        by = Table(title="Rejections", title_justify="left")
        by.add_column("by stage")
        by.add_column("rows", justify="right")
        by.add_column("by critic")
        by.add_column("rows", justify="right")
        stages = list(rejections["by_stage"].items())
        critics = list(rejections["by_critic"].items())
        for i in range(max(len(stages), len(critics))):
            s = stages[i] if i < len(stages) else ("", "")
            c = critics[i] if i < len(critics) else ("", "")
            by.add_row(s[0], _fmt(s[1]), c[0], _fmt(c[1]))
        console.print(by)
        top = Table(title="Top rejection reasons", title_justify="left")
        top.add_column("critic")
        top.add_column("reason")
        top.add_column("rows", justify="right")
        for row in rejections["top_reasons"]:
            top.add_row(row["critic"], row["reason"], _fmt(row["count"]))
        console.print(top)
    else:
        console.print("Rejections: none recorded")

    report = manifest.get("critic_report") or {}
    if report:
        rounds = Table(
            title=f"Critic rounds (judges: {manifest.get('judges', '?')})", title_justify="left"
        )
        for column in ("kind", "round", "reviewed", "accepted", "acceptance", "mean score", "kept"):
            rounds.add_column(column, justify="left" if column == "kind" else "right")
        for kind, per_kind in report.items():
            for row in per_kind.get("rounds", []):
                rounds.add_row(
                    kind,
                    str(row["round"]),
                    _fmt(row["records"]),
                    _fmt(row["accepted"]),
                    _fmt(row["acceptance"]),
                    _fmt(row["mean_score"]),
                    _fmt(row.get("kept")),
                )
        console.print(rounds)

    table = Table(title="Quality metrics", title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("definition", overflow="fold")
    definitions = metrics.get("definitions", {})
    for name, value in _leaves(metrics):
        table.add_row(name, _fmt(value), definitions.get(name, ""))
    console.print(table)
    semantic = metrics.get("semantic_uniqueness") or {}
    if semantic.get("value") is None and semantic.get("reason"):
        console.print(f"semantic_uniqueness: not computed: {semantic['reason']}")
    identity = metrics.get("identity") or {}
    if identity.get("personas_with_name"):
        console.print(
            f"Own name only: {_fmt(identity['own_name_only'])} of the "
            f"{identity['personas_with_name']} kept personas with a name are called only by it"
        )
    print_fidelity(console, metrics.get("fidelity") or {})
    print_adherence(console, metrics.get("adherence"))


def _table(title: str, header: tuple[str, ...], rows: list[tuple[str, ...]]) -> Any:
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for i, name in enumerate(header):
        table.add_column(name, justify="right" if i and rows and _numeric(rows[0][i]) else "left")
    for row in rows:
        table.add_row(*row)
    return table


def _numeric(cell: str) -> bool:
    return bool(cell) and (cell[0].isdigit() or cell[0] in "+-") and cell != "-"


def print_fidelity(console: Any, report: dict[str, Any]) -> None:
    from personaloom.publish import fidelity as F

    if "summary" not in report:
        if report.get("reason"):
            console.print(f"Population fidelity: not computed: {report['reason']}")
        return
    rows = F.rows(report)
    console.print(_table("Population fidelity", F.POINTS_HEADER, rows.points))
    console.print(rows.intro, highlight=False)
    console.print(
        _table("Worst attributes (released TV above sampling noise)", F.WORST_HEADER, rows.worst)
    )
    if rows.pairs:
        console.print(_table("Anchor pairs (joint TV)", F.PAIRS_HEADER, rows.pairs))
    console.print(rows.bias_line, highlight=False)
    if rows.flagged:
        console.print(_table("Critic bias: flagged groups", F.FLAGGED_HEADER, rows.flagged))
    else:
        console.print("Critic bias: no group flagged")
    console.print(_table("Critic bias per anchor", F.BY_ANCHOR_HEADER, rows.bias_by_anchor))


def print_adherence(console: Any, report: dict[str, Any] | None) -> None:
    from personaloom.publish import adherence as A

    if not report:
        return
    if "top1" not in report:
        console.print(f"Persona adherence: not computed: {report.get('reason')}")
        return
    console.print(
        _table(
            f"Persona adherence ({report.get('model')})",
            ("figure", "value", "definition"),
            A.rows(report),
        )
    )


def _leaves(metrics: dict[str, Any]) -> list[tuple[str, Any]]:
    skip = {"counts", "rejections", "definitions", "fidelity", "adherence"}  # own tables
    out: list[tuple[str, Any]] = []

    def walk(value: Any, prefix: str) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(inner, f"{prefix}.{key}" if prefix else str(key))
        elif value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)):
            out.append((prefix, value))

    for key, value in metrics.items():
        if key not in skip:
            walk(value, key)
    return out


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}".rstrip("0").rstrip(".") if not value.is_integer() else f"{int(value)}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)
