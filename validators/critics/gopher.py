"""Gopher repetition: the web-scale quality filter's repetition measures, and compression.

The measures and default thresholds are those of the Gopher paper (Rae et al. 2021,
"Scaling Language Models", Table A1), as datatrove's `GopherRepetitionFilter` implements
them; each sub-check rejects with its own reason code:

    dup_para_frac       paragraphs that repeat an earlier one / paragraphs          0.30
    dup_para_char_frac  characters in repeated paragraphs / characters            0.20
    dup_line_frac       lines that repeat an earlier one / lines                    0.30
    dup_line_char_frac  characters in repeated lines / characters                 0.20
    top_2_gram .. top_4_gram        characters of the most frequent n-gram x its
                                    count / characters                 0.20, 0.18, 0.16
    dup_5_gram .. dup_10_gram       characters of words in n-grams that repeat an
                                    earlier one / characters   0.15, 0.14, ... 0.10
    compression_ratio   zlib-compressed bytes / bytes, below the minimum (ours)     0.30

The document is the whole record: a persona's narrative (its sections are paragraphs), a
conversation's turns joined as paragraphs (lines are the lines within turns). Every digit
is replaced by 0 first, so "Chat 1: ...", "Chat 2: ..." are the same line: a loop whose
only change is a counter is still a loop.

Where we differ from datatrove, and why:
- Words are the critics' tokens (lower-case, punctuation dropped) instead of NLTK's (which
  keep punctuation as tokens): "Match made, match made" is one 2-gram said twice.
- A top n-gram counts only when it occurs at least twice (datatrove counts a single
  occurrence, which rejects any very short text on its first words).
- Lines and paragraphs are compared stripped, and blank ones are skipped.
- Guard: the n-gram measures and the compression ratio need `min_words` words (50, the
  Gopher quality filter's own minimum document length); below that they measure noise (in
  a 20-word message "I love my job and I love my family" has a top 2-gram fraction of
  0.34). Line and paragraph duplicates are measured on any text with two or more pieces:
  an exact repeated line is repetition at any length.
- Settings are named as the reason codes; a maximum of 1 (or a minimum of 0) turns that
  sub-check off.
- Compression ratio: not a Gopher rule. English prose compresses (zlib, level 9) to
  0.45-0.72 of its size at 50-800 words (our README and docs), to about 0.42 at 3000
  words; a text below 0.30 repeats itself (a ten-fold sentence loop is near 0.10).
"""

from __future__ import annotations

import re
import zlib
from collections import Counter

from personaloom.critic.rule_critics import (
    CriticContext,
    CriticResult,
    full_text,
    rule_critic,
    text_units,
    words,
)

TOP_NGRAMS = (2, 3, 4)
DUP_NGRAMS = (5, 6, 7, 8, 9, 10)
_DIGIT = re.compile(r"\d")
_PARAGRAPH = re.compile(r"\n\s*\n")
_LINE = re.compile(r"\n+")


def normalize_digits(text: str) -> str:
    return _DIGIT.sub("0", text)


def document(record: dict, kind: str) -> str:
    """The text the measures read: the narrative, or the turns as paragraphs."""
    if kind == "persona":
        return full_text(record, "persona")
    return "\n\n".join(text.strip() for _, text in text_units(record, "conversation"))


def duplicate_pieces(pieces: list[str]) -> tuple[int, int]:
    """(pieces equal to an earlier piece, characters in those pieces)."""
    seen: set[str] = set()
    count = chars = 0
    for piece in pieces:
        if piece in seen:
            count += 1
            chars += len(piece)
        else:
            seen.add(piece)
    return count, chars


def top_ngram_chars(tokens: list[str], n: int) -> int:
    """Characters of the most frequent n-gram (words joined by spaces) times its count;
    0 when no n-gram occurs twice."""
    counts = Counter(" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1))
    if not counts:
        return 0
    gram, count = counts.most_common(1)[0]
    return len(gram) * count if count >= 2 else 0


def duplicate_ngram_chars(tokens: list[str], n: int) -> int:
    """Characters of the words in n-grams that repeat an earlier n-gram, each word once
    (scanning left to right; after a repeat the scan jumps past it, as datatrove does)."""
    seen: set[tuple[str, ...]] = set()
    chars = i = 0
    while i <= len(tokens) - n:
        gram = tuple(tokens[i : i + n])
        if gram in seen:
            chars += sum(len(t) for t in gram)
            i += n
        else:
            seen.add(gram)
            i += 1
    return chars


def compression_ratio(text: str) -> float:
    data = text.encode("utf-8")
    return len(zlib.compress(data, 9)) / len(data) if data else 1.0


def _pieces(parts: list[str]) -> list[str]:
    return [p.strip() for p in parts if p.strip()]


def measures(text: str, settings: dict) -> list[tuple[str, float, float, str]]:
    """(reason code, value, threshold, comparison) of every sub-check that applies to
    `text`, in the order they are checked; comparison is "max" or "min"."""
    text = normalize_digits(text).strip()
    if not text:
        return []
    total = len(text)
    out: list[tuple[str, float, float, str]] = []
    for unit, parts in (("para", _PARAGRAPH.split(text)), ("line", _LINE.split(text))):
        pieces = _pieces(parts)
        if len(pieces) < 2:
            continue
        count, chars = duplicate_pieces(pieces)
        out.append((f"dup_{unit}_frac", count / len(pieces), settings[f"dup_{unit}_frac"], "max"))
        out.append(
            (f"dup_{unit}_char_frac", chars / total, settings[f"dup_{unit}_char_frac"], "max")
        )
    tokens = words(text)
    if len(tokens) < settings["min_words"]:
        return out
    for n in TOP_NGRAMS:
        code = f"top_{n}_gram"
        out.append((code, top_ngram_chars(tokens, n) / total, settings[code], "max"))
    for n in DUP_NGRAMS:
        code = f"dup_{n}_gram"
        out.append((code, duplicate_ngram_chars(tokens, n) / total, settings[code], "max"))
    code = "compression_ratio"
    out.append((code, compression_ratio(text), settings[code], "min"))
    return out


@rule_critic(
    "gopher_repetition",
    kinds=("persona", "conversation"),
    defaults={
        "min_words": 50,
        "dup_para_frac": 0.30,
        "dup_para_char_frac": 0.20,
        "dup_line_frac": 0.30,
        "dup_line_char_frac": 0.20,
        "top_2_gram": 0.20,
        "top_3_gram": 0.18,
        "top_4_gram": 0.16,
        "dup_5_gram": 0.15,
        "dup_6_gram": 0.14,
        "dup_7_gram": 0.13,
        "dup_8_gram": 0.12,
        "dup_9_gram": 0.11,
        "dup_10_gram": 0.10,
        "compression_ratio": 0.30,
    },
)
def gopher_repetition(record: dict, ctx: CriticContext) -> CriticResult:
    """Gopher's repetition rules (duplicate lines and paragraphs, top and duplicate n-gram
    character fractions, digits normalized) and the compression ratio, on the whole record.

    The score is the worst severity: value / maximum (minimum / value for the compression
    ratio); above 1 fails. A failure names the first failing sub-check in Gopher's order.
    """
    text = document(record, ctx.kind)
    worst = 0.0
    failure = None
    for code, value, limit, comparison in measures(text, dict(ctx.settings)):
        if comparison == "min":
            severity = limit / value if value > 0 else float("inf")
            failed = value < limit
        else:
            severity = value / limit if limit > 0 else float("inf")
            failed = value > limit
        worst = max(worst, severity)
        if failed and failure is None:
            sign = "<" if comparison == "min" else ">"
            failure = f"{code}: {value:.3f} {sign} {limit} ({_evidence(code, text)})"
    if failure:
        return ctx.fail(failure, score=round(worst, 4))
    return ctx.ok(score=round(worst, 4))


def _evidence(code: str, text: str) -> str:
    """The repeated piece or n-gram behind a failed sub-check, quoted (digits as 0)."""
    text = normalize_digits(text).strip()
    if code.startswith(("dup_para", "dup_line")):
        splitter = _PARAGRAPH if code.startswith("dup_para") else _LINE
        counts = Counter(_pieces(splitter.split(text)))
        piece, n = counts.most_common(1)[0]
        return f"{piece[:80]!r} x{n}"
    match = re.match(r"(?:top|dup)_(\d+)_gram", code)
    if match:
        n = int(match.group(1))
        tokens = words(text)
        counts = Counter(" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1))
        gram, count = counts.most_common(1)[0]
        return f"{gram[:80]!r} x{count}"
    return f"{len(text.encode('utf-8'))} bytes"
