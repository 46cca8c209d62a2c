"""PNG charts for the dataset card: plain data in, one file out.

matplotlib is driven through its object API on an Agg canvas (no pyplot, no global
backend switch, no display). Output is deterministic for the same input (no timestamp
or version in the PNG metadata), so re-writing a card over unchanged data leaves the
released files byte-identical and a re-release is a no-op.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from personaloom.shards import atomic_path

BAR_COLOR = "#4C72B0"
HIST_COLOR = "#55A868"
MAX_LABEL = 28


def _short(label: str) -> str:
    return label if len(label) <= MAX_LABEL else label[: MAX_LABEL - 1] + "…"


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, metadata={"Software": None})
    return path


def _grid(n: int) -> tuple[int, int]:
    cols = 1 if n == 1 else 2
    return math.ceil(n / cols), cols


def bar_panels(
    panels: Sequence[tuple[str, Sequence[tuple[str, int]]]],
    path: Path,
    *,
    title: str,
    xlabel: str = "records",
    xlim: tuple[float, float] | None = None,
) -> Path:
    """One horizontal bar chart per panel: (panel title, [(label, value), ...])."""
    rows, cols = _grid(len(panels))
    tallest = max((len(items) for _, items in panels), default=1)
    fig = Figure(figsize=(6.0 * cols, max(2.5, 0.28 * tallest + 1.2) * rows))
    fig.suptitle(title)
    for i, (name, items) in enumerate(panels):
        ax = fig.add_subplot(rows, cols, i + 1)
        labels = [_short(str(label)) for label, _ in items][::-1]
        values = [value for _, value in items][::-1]
        ax.barh(range(len(values)), values, color=BAR_COLOR)
        ax.set_yticks(range(len(values)), labels, fontsize=8)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel(xlabel, fontsize=8)
        if xlim is not None:
            ax.set_xlim(*xlim)
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.tick_params(axis="x", labelsize=8)
    return _save(fig, path)


def histogram_panels(
    panels: Sequence[tuple[str, dict[int, int]]],
    path: Path,
    *,
    title: str,
) -> Path:
    """One integer histogram per panel: (panel title, {value: frequency})."""
    rows, cols = _grid(len(panels))
    fig = Figure(figsize=(5.0 * cols, 3.2 * rows))
    fig.suptitle(title)
    for i, (name, counts) in enumerate(panels):
        ax = fig.add_subplot(rows, cols, i + 1)
        xs = sorted(counts)
        ax.bar(xs, [counts[x] for x in xs], width=0.8, color=HIST_COLOR)
        ax.set_title(name, fontsize=10)
        ax.set_ylabel("count", fontsize=8)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        if xs and len(xs) <= 25:
            ax.set_xticks(xs)
        ax.tick_params(labelsize=8)
    return _save(fig, path)
