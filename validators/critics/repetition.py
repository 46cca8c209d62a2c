"""Degenerate repetition: looping n-grams within a text, the same sentence said again."""

from __future__ import annotations

from collections import Counter

from personaloom.critic.rule_critics import (
    CriticContext,
    CriticResult,
    normalize_phrase,
    rule_critic,
    text_units,
)


def repeated_ngram_ratio(tokens: list[str], n: int) -> float:
    """Share of n-gram occurrences that repeat an earlier one (0: none, near 1: a loop)."""
    grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    if not grams:
        return 0.0
    return 1.0 - len(set(grams)) / len(grams)


@rule_critic(
    "repeated_ngrams",
    kinds=("persona", "conversation"),
    defaults={"n": 3, "max_ratio": 0.3, "min_words": 30},
)
def repeated_ngrams(record: dict, ctx: CriticContext) -> CriticResult:
    """No section or turn repeats its own word n-grams beyond a ratio (generation loops)."""
    s = ctx.settings
    worst, worst_label = 0.0, ""
    for label, text in text_units(record, ctx.kind):
        tokens = ctx.words(text)
        if len(tokens) < s["min_words"]:
            continue
        ratio = repeated_ngram_ratio(tokens, s["n"])
        if ratio > worst:
            worst, worst_label = ratio, label
    if worst > s["max_ratio"]:
        return ctx.fail(
            f"repeated_ngrams: {worst:.2f} of {s['n']}-grams in {worst_label} are repeats "
            f"(max {s['max_ratio']})",
            score=round(worst, 4),
        )
    return ctx.ok(score=round(worst, 4))


@rule_critic(
    "repeated_sentences",
    kinds=("persona", "conversation"),
    defaults={
        "min_sentence_words": 5,
        "persona": {"max_repeats": 1},
        "conversation": {"max_repeats": 2},
        "max_repeats_within": 1,
    },
)
def repeated_sentences(record: dict, ctx: CriticContext) -> CriticResult:
    """A sentence (normalized, >= min words) appears at most `max_repeats` times in the record
    and at most `max_repeats_within` times in one section or turn."""
    s = ctx.settings
    limit, within = s[ctx.kind]["max_repeats"], s["max_repeats_within"]
    counts: Counter[str] = Counter()
    for label, text in text_units(record, ctx.kind):
        here: Counter[str] = Counter()
        for sentence in ctx.sentences(text):
            normalized = normalize_phrase(sentence)
            if len(normalized.split()) >= s["min_sentence_words"]:
                here[normalized] += 1
        if here:
            sentence, n = here.most_common(1)[0]
            if n > within:
                return ctx.fail(
                    f"repeated_sentence: said {n} times in {label} (max {within}): {sentence[:80]!r}"
                )
        counts.update(here)
    if counts:
        sentence, n = counts.most_common(1)[0]
        if n > limit:
            return ctx.fail(f"repeated_sentence: said {n} times (max {limit}): {sentence[:80]!r}")
    return ctx.ok()
