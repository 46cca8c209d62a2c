"""Accuracy per probe type and per distance, with bootstrap intervals, chance and leak flags.

- Scored rows: every probe the model was asked and answered something to, including
  outputs that did not parse (they count as wrong). Rows whose request failed in the engine
  (`status == "error"`) are not scored; a re-run asks them again.
- Accuracy: correct / scored. The 95% interval is the percentile bootstrap over probes
  (2,000 resamples, seeded per group with `derive_seed`, so a report is reproducible). For
  a mean of 0/1 outcomes a resample's number correct is Binomial(n, accuracy), so the
  resamples are drawn from that distribution directly: the same bootstrap, without
  materialising n x 2,000 indices.
- Chance: the mean of 1 / number of choices over the group's probes (0.25 with 4 choices).
- Distance: `after_session - evidence_session`, how many sessions back the deciding fact
  was stated (probes of corpora made before `evidence_session` existed have none).
- Leaks: in a run without context (`--context none`), a type whose whole 95% interval lies
  more than `LEAK_MARGIN` above chance is flagged: its questions give their answer away.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from personaloom.seeds import derive_seed

BOOTSTRAP_RESAMPLES = 2000
CONFIDENCE = 0.95
LEAK_MARGIN = 0.10
BOOTSTRAP_SEED = 0


def bootstrap_interval(
    correct: int, n: int, *, key: str, resamples: int = BOOTSTRAP_RESAMPLES
) -> tuple[float, float]:
    """Percentile bootstrap interval of an accuracy of `correct` out of `n`."""
    if n == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(derive_seed(BOOTSTRAP_SEED, key, "bootstrap"))
    means = rng.binomial(n, correct / n, size=resamples) / n
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def summarise(rows: Sequence[Mapping[str, Any]], key: str) -> dict[str, Any]:
    """n, correct, accuracy, interval and chance of scored `rows` (labelled `key`)."""
    n = len(rows)
    correct = sum(1 for r in rows if r["correct"])
    low, high = bootstrap_interval(correct, n, key=key)
    chance = float(np.mean([1 / r["choices"] for r in rows])) if n else float("nan")
    return {
        "n": n,
        "correct": correct,
        "accuracy": correct / n if n else float("nan"),
        "ci_low": low,
        "ci_high": high,
        "chance": chance,
    }


def _grouped(
    rows: Iterable[Mapping[str, Any]], by: Callable[[Mapping[str, Any]], Any]
) -> dict[Any, list[Mapping[str, Any]]]:
    groups: dict[Any, list[Mapping[str, Any]]] = {}
    for row in rows:
        value = by(row)
        if value is not None:
            groups.setdefault(value, []).append(row)
    return groups


def is_scored(row: Mapping[str, Any]) -> bool:
    return row["status"] != "error"


def score(
    rows: Sequence[Mapping[str, Any]], *, context: str, type_order: Sequence[str] = ()
) -> dict[str, Any]:
    """Overall, per-type and per-distance accuracy of result rows, and leak flags.

    Each row needs `type`, `distance` (or None), `choices` (how many), `correct`, `status`."""
    scored = [r for r in rows if is_scored(r)]
    order = {t: i for i, t in enumerate(type_order)}
    by_type = []
    for kind, group in sorted(
        _grouped(scored, lambda r: r["type"]).items(),
        key=lambda item: (order.get(item[0], len(order)), item[0]),
    ):
        entry = {"type": kind, **summarise(group, f"type:{kind}")}
        entry["leak"] = bool(context == "none" and entry["ci_low"] > entry["chance"] + LEAK_MARGIN)
        by_type.append(entry)
    by_distance = [
        {"distance": d, **summarise(group, f"distance:{d}")}
        for d, group in sorted(_grouped(scored, lambda r: r["distance"]).items())
    ]
    statuses: dict[str, int] = {}
    for row in rows:
        statuses[row["status"]] = statuses.get(row["status"], 0) + 1
    return {
        "overall": summarise(scored, "overall"),
        "by_type": by_type,
        "by_distance": by_distance,
        "leaks": [t["type"] for t in by_type if t["leak"]],
        "statuses": dict(sorted(statuses.items())),
        "scored": len(scored),
        "not_scored": len(rows) - len(scored),
    }
