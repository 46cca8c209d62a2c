"""`personaloom stats DIR [--json]`: counts, rejections and quality metrics of a dataset folder."""

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
        help="skip the semantic-uniqueness metric (no embedding model is loaded)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from personaloom.metrics import compute_metrics

    out = Path(args.dir)
    if not out.is_dir():
        raise UserError(
            f"{args.dir}: no such dataset folder"
            if not out.exists()
            else f"{args.dir}: not a folder"
        )
    metrics = compute_metrics(out, embeddings=not args.no_embeddings)
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
        for column in ("kind", "round", "reviewed", "accepted", "acceptance", "mean score"):
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


def _leaves(metrics: dict[str, Any]) -> list[tuple[str, Any]]:
    skip = {"counts", "rejections", "definitions"}
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
