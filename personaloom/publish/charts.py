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

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from personaloom.atomic import atomic_path

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


def _bar_axes(
    panels: Sequence[tuple[str, Sequence[tuple]]],
    title: str,
    *,
    bar_height: float = 0.28,
    pad: float = 1.2,
    min_height: float = 2.5,
) -> tuple[Figure, list[tuple[Axes, list[tuple]]]]:
    """A figure with one horizontal-bar subplot per panel, sized for its tallest panel, and
    per panel its axes and its items in drawing order (the first item on top, so drawn
    last); the panel's title and the items' short labels are set."""
    rows, cols = _grid(len(panels))
    tallest = max((len(items) for _, items in panels), default=1)
    fig = Figure(figsize=(6.0 * cols, max(min_height, bar_height * tallest + pad) * rows))
    fig.suptitle(title)
    out = []
    for i, (name, items) in enumerate(panels):
        ax = fig.add_subplot(rows, cols, i + 1)
        drawn = list(items)[::-1]
        labels = [_short(str(item[0])) for item in drawn]
        ax.set_yticks(range(len(drawn)), labels, fontsize=8)
        ax.set_title(name, fontsize=10)
        ax.tick_params(axis="x", labelsize=8)
        out.append((ax, drawn))
    return fig, out


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
    fig, axes = _bar_axes(panels, title)
    for ax, items in axes:
        ax.barh(range(len(items)), [value for _, value in items], color=BAR_COLOR)
        ax.set_xlabel(xlabel, fontsize=8)
        if xlim is not None:
            ax.set_xlim(*xlim)
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
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


TARGET_COLOR = "#BBBBBB"
FLAG_COLOR = "#C44E52"


def paired_bar_panels(
    panels: Sequence[tuple[str, Sequence[tuple[str, float, float]]]],
    path: Path,
    *,
    title: str,
    names: tuple[str, str] = ("target", "released"),
    xlabel: str = "share",
) -> Path:
    """One horizontal chart per panel with two bars per label, (label, first, second): the
    first (grey) and the second (blue) side by side, e.g. target and released shares."""
    fig, axes = _bar_axes(panels, title, bar_height=0.42, pad=1.4, min_height=2.8)
    for i, (ax, items) in enumerate(axes):
        y = range(len(items))
        first = [a for _, a, _ in items]
        second = [b for _, _, b in items]
        ax.barh([v + 0.2 for v in y], first, height=0.4, color=TARGET_COLOR, label=names[0])
        ax.barh([v - 0.2 for v in y], second, height=0.4, color=BAR_COLOR, label=names[1])
        ax.set_xlabel(xlabel, fontsize=8)
        if i == 0:
            ax.legend(fontsize=8, loc="best")
    return _save(fig, path)


def acceptance_panels(
    panels: Sequence[tuple[str, Sequence[tuple[str, float, bool]]]],
    path: Path,
    *,
    title: str,
    overall: float,
    margin: float,
) -> Path:
    """One horizontal chart per panel of acceptance rates, (label, rate, flagged): the
    overall rate as a line, the band of +-margin around it shaded, flagged bars in red."""
    fig, axes = _bar_axes(panels, title)
    for ax, items in axes:
        values = [rate for _, rate, _ in items]
        colors = [FLAG_COLOR if flagged else BAR_COLOR for _, _, flagged in items]
        ax.axvspan(max(0.0, overall - margin), min(1.0, overall + margin), color="#EEEEEE")
        ax.barh(range(len(values)), values, color=colors)
        ax.axvline(overall, color="black", linewidth=1)
        ax.set_xlabel("share accepted", fontsize=8)
        ax.set_xlim(0.0, 1.0)
    return _save(fig, path)
