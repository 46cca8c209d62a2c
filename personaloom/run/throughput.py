"""The run's throughput figures (manifest `throughput`, the card's Engine line), from the
batch summaries of one run or the manifests of merged parts."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

SUMMED = (
    "output_tokens",
    "prompt_tokens",
    "cached_tokens",
    "cache_counted",
    "seconds",
    "personas",
    "requests",
)


def throughput(rows: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Totals of `rows` (batch summaries, or the `throughput` of merged parts) and the
    rates: output tokens/s, prompt tokens per persona the critic kept (`personas`, before
    corpus dedup; every request of the run counts, conversations and judges included),
    and the share of prompt tokens the engine served from its prefix cache (None when the
    engine did not report it)."""
    total = {key: 0.0 for key in SUMMED}
    for row in rows:
        for key in SUMMED:
            total[key] += row.get(key) or 0
    seconds = round(total["seconds"], 2)
    return {
        "output_tokens": int(total["output_tokens"]),
        "seconds": seconds,
        "tokens_per_s": round(total["output_tokens"] / seconds, 1) if seconds else None,
        "prompt_tokens": int(total["prompt_tokens"]),
        "personas": int(total["personas"]),
        "requests": int(total["requests"]),
        "prompt_tokens_per_persona": round(total["prompt_tokens"] / total["personas"])
        if total["personas"]
        else None,
        "cached_tokens": int(total["cached_tokens"]),
        "cache_counted": int(total["cache_counted"]),
        "cached_share": round(total["cached_tokens"] / total["cache_counted"], 3)
        if total["cache_counted"]
        else None,
    }
