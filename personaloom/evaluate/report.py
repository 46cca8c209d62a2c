"""The evaluation's report (DIR/report.json, DIR/report.md, DIR/accuracy_by_distance.png)
and the leaderboard over several result folders (`personaloom eval --compare DIR...`).

The report is a pure function of the result rows and the run's settings: writing it twice
over the same results gives the same files (the chart carries no timestamp).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from personaloom.atomic import atomic_path, write_text_atomic
from personaloom.errors import UserError
from personaloom.evaluate.scoring import LEAK_MARGIN, score
from personaloom.generate.probes import PROBE_TYPES as TYPE_ORDER  # the generator's order

REPORT_JSON = "report.json"
REPORT_MD = "report.md"
CHART = "accuracy_by_distance.png"
LEADERBOARD_MD = "leaderboard.md"
LEADERBOARD_JSON = "leaderboard.json"
LINE_COLOR = "#4C72B0"
CHANCE_COLOR = "#C44E52"


def _pct(value: float) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{100 * value:.1f}%"


def _interval(entry: Mapping[str, Any]) -> str:
    if entry["n"] == 0:
        return "n/a"
    return f"{_pct(entry['accuracy'])} [{_pct(entry['ci_low'])}, {_pct(entry['ci_high'])}]"


def _mean(values: Sequence[float]) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def build_report(
    rows: Sequence[Mapping[str, Any]], *, meta: Mapping[str, Any], total_probes: int
) -> dict[str, Any]:
    scores = score(rows, context=str(meta.get("context")), type_order=TYPE_ORDER)
    scored = [r for r in rows if r["status"] != "error"]
    return {
        "dataset": meta.get("dataset"),
        "dataset_label": meta.get("dataset_label"),
        "dataset_commit": meta.get("dataset_commit"),
        "model": meta.get("model"),
        "model_name": meta.get("model_name"),
        "engine": meta.get("engine"),
        "context": meta.get("context"),
        "limit": meta.get("limit"),
        "probes": {"in_dataset": total_probes, "selected": len(rows), **scores["statuses"]},
        "overall": scores["overall"],
        "by_type": scores["by_type"],
        "by_distance": scores["by_distance"],
        "leaks": scores["leaks"],
        "leak_rule": (
            f"--context none only: flagged when the 95% interval's lower bound exceeds "
            f"chance + {LEAK_MARGIN:.2f}"
        ),
        "context_tokens_mean": _mean([r["context_tokens"] for r in scored]),
        "context_tokens_max": max((r["context_tokens"] or 0 for r in scored), default=None),
        "context_sessions_mean": _mean([r["context_sessions"] for r in scored]),
        "context_dropped": sum(1 for r in scored if r["context_dropped"]),
        "latency_s_mean": _mean([r["latency_s"] for r in scored]),
        "personaloom_version": meta.get("personaloom_version"),
    }


def render_markdown(report: Mapping[str, Any]) -> str:
    probes = report["probes"]
    overall = report["overall"]
    lines = [
        f"# Memory probes: {report['model_name'] or report['model']}",
        "",
        f"- dataset: `{report['dataset_label']}`"
        + (f" (commit {report['dataset_commit'][:12]})" if report.get("dataset_commit") else ""),
        f"- context: `{report['context']}`; engine: {report['engine']}",
        f"- probes: {probes['selected']} asked of {probes['in_dataset']}"
        + "".join(f"; {k} {v}" for k, v in probes.items() if k not in ("in_dataset", "selected")),
        f"- accuracy: **{_interval(overall)}** (chance {_pct(overall['chance'])}, "
        f"95% bootstrap interval)",
    ]
    if report.get("context_tokens_mean") is not None:
        lines.append(
            f"- context: {report['context_tokens_mean']:.0f} prompt tokens on average "
            f"(max {report['context_tokens_max']}), {report['context_sessions_mean']:.2f} sessions;"
            f" history cut to fit the model for {report['context_dropped']} probes"
        )
    lines += ["", "## Accuracy per probe type", ""]
    leak_column = report["context"] == "none"
    header = "| type | probes | accuracy [95% CI] | chance |" + (
        " leaks its answer |" if leak_column else ""
    )
    lines += [header, "|---|---:|---|---:|" + ("---|" if leak_column else "")]
    for entry in report["by_type"]:
        row = f"| {entry['type']} | {entry['n']} | {_interval(entry)} | {_pct(entry['chance'])} |"
        if leak_column:
            row += " **yes** |" if entry["leak"] else " no |"
        lines.append(row)
    if leak_column:
        lines += ["", f"Leak rule: {report['leak_rule']}."]
    lines += [
        "",
        "## Accuracy per distance",
        "",
        "Distance: how many sessions before the question the deciding fact was stated.",
        "",
        "| distance | probes | accuracy [95% CI] | chance |",
        "|---:|---:|---|---:|",
    ]
    for entry in report["by_distance"]:
        lines.append(
            f"| {entry['distance']} | {entry['n']} | {_interval(entry)} | {_pct(entry['chance'])} |"
        )
    if not report["by_distance"]:
        lines.append("| n/a | 0 | the probes carry no evidence_session | |")
    lines += ["", f"![accuracy per distance]({CHART})", ""]
    return "\n".join(lines)


def distance_chart(report: Mapping[str, Any], path: Path) -> Path:
    """Accuracy per distance with its 95% interval, and chance, as one PNG."""
    entries = report["by_distance"]
    fig = Figure(figsize=(6.0, 3.6))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    if entries:
        xs = [e["distance"] for e in entries]
        ys = [e["accuracy"] for e in entries]
        low = [e["accuracy"] - e["ci_low"] for e in entries]
        high = [e["ci_high"] - e["accuracy"] for e in entries]
        ax.errorbar(xs, ys, yerr=[low, high], marker="o", color=LINE_COLOR, capsize=3)
        ax.plot(
            xs, [e["chance"] for e in entries], linestyle="--", color=CHANCE_COLOR, label="chance"
        )
        for x, entry in zip(xs, entries, strict=True):
            ax.annotate(f"n={entry['n']}", (x, 0.02), ha="center", fontsize=7)
        ax.set_xticks(xs)
        ax.legend(fontsize=8, loc="best")
    else:
        ax.text(
            0.5, 0.5, "no evidence_session in these probes", ha="center", transform=ax.transAxes
        )
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("sessions between the deciding fact and the question", fontsize=8)
    ax.set_ylabel("accuracy (95% CI)", fontsize=8)
    ax.set_title(
        f"{report['model_name'] or report['model']}, context {report['context']}", fontsize=9
    )
    ax.tick_params(labelsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, metadata={"Software": None})
    return path


def _json(value: Any) -> str:
    def clean(item: Any) -> Any:
        if isinstance(item, float) and math.isnan(item):
            return None
        if isinstance(item, dict):
            return {k: clean(v) for k, v in item.items()}
        if isinstance(item, list):
            return [clean(v) for v in item]
        return item

    return json.dumps(clean(value), indent=2) + "\n"


def write_reports(
    out: Path, rows: Sequence[Mapping[str, Any]], *, meta: Mapping[str, Any], total_probes: int
) -> dict[str, Any]:
    report = build_report(rows, meta=meta, total_probes=total_probes)
    write_text_atomic(out / REPORT_JSON, _json(report))
    write_text_atomic(out / REPORT_MD, render_markdown(report))
    distance_chart(report, out / CHART)
    return json.loads(_json(report))


# -- leaderboard -------------------------------------------------------------------------
def read_report(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / REPORT_JSON
    if not path.is_file():
        raise UserError(
            f"--compare {folder}: no {REPORT_JSON} (run personaloom eval --out {folder} first)"
        )
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"--compare {folder}: unreadable {REPORT_JSON} ({exc})") from None


def leaderboard(folders: Sequence[str | Path]) -> list[dict[str, Any]]:
    """One entry per result folder, best accuracy first; a folder's no-context twin (same
    dataset and model, `--context none`) among the folders gives its gain over no context."""
    if not folders:
        raise UserError("--compare: give at least one result folder")
    reports = [(str(f), read_report(f)) for f in folders]
    baselines = {(r["dataset"], r["model"]): r for _, r in reports if r.get("context") == "none"}
    entries = []
    for folder, report in reports:
        overall = report["overall"]
        baseline = baselines.get((report["dataset"], report["model"]))
        gain = None
        if baseline is not None and report.get("context") != "none" and overall["n"]:
            gain = overall["accuracy"] - (baseline["overall"]["accuracy"] or 0.0)
        entries.append(
            {
                "folder": folder,
                "model": report.get("model_name") or report.get("model"),
                "context": report.get("context"),
                "dataset": report.get("dataset_label"),
                "probes": overall["n"],
                "accuracy": overall["accuracy"],
                "ci_low": overall["ci_low"],
                "ci_high": overall["ci_high"],
                "chance": overall["chance"],
                "gain_over_no_context": gain,
                "by_type": {t["type"]: t["accuracy"] for t in report["by_type"]},
                "leaks": (baseline or {}).get("leaks", report.get("leaks", [])),
            }
        )
    entries.sort(key=lambda e: (-(e["accuracy"] if e["accuracy"] is not None else -1), e["folder"]))
    for rank, entry in enumerate(entries, 1):
        entry["rank"] = rank
    return entries


def _short_type(name: str) -> str:
    return name.replace("_preference", "").replace("preference_", "").replace("_", " ")


def leaderboard_markdown(entries: Sequence[Mapping[str, Any]]) -> str:
    types = [t for t in TYPE_ORDER if any(t in e["by_type"] for e in entries)]
    types += sorted({t for e in entries for t in e["by_type"]} - set(types))
    header = (
        "| # | model | context | dataset | probes | accuracy [95% CI] | vs no context | "
        + " | ".join(_short_type(t) for t in types)
        + " |"
    )
    lines = [header, "|" + "---:|---|---|---|---:|---|---:|" + "---:|" * len(types)]
    for e in entries:
        gain = e["gain_over_no_context"]
        cells = [
            str(e["rank"]),
            str(e["model"]),
            f"`{e['context']}`",
            str(e["dataset"]),
            str(e["probes"]),
            _interval({**e, "n": e["probes"]}),
            "" if gain is None else f"{100 * gain:+.1f} pts",
            *(_pct(e["by_type"].get(t)) if t in e["by_type"] else "" for t in types),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    leaks = sorted({t for e in entries for t in e["leaks"]})
    if leaks:
        lines += [
            "",
            "Types answered well above chance without context (leaking): " + ", ".join(leaks),
        ]
    return "\n".join(lines) + "\n"


def write_leaderboard(out: Path, entries: Sequence[Mapping[str, Any]]) -> None:
    write_text_atomic(out / LEADERBOARD_MD, leaderboard_markdown(entries))
    write_text_atomic(out / LEADERBOARD_JSON, _json(list(entries)))
