"""Language: the text is mostly English (letter script and common-word heuristics)."""

from __future__ import annotations

from personaloom.critic.rule_critics import (
    CriticContext,
    CriticResult,
    full_text,
    rule_critic,
    text_units,
)

STOPWORDS = frozenset(
    """a about after all also an and any are as at be because been but by can could did do
    does for from had has have he her hers him his how i if in into is it its just like me
    more most my no not now of on one only or other our out over she so some than that the
    their them then there these they this those through to too up us very was we were what
    when where which while who why will with would you your i'm it's don't i've""".split()
)


@rule_critic(
    "language",
    kinds=("persona", "conversation"),
    defaults={"min_ascii_letter_ratio": 0.9, "min_stopword_ratio": 0.2, "min_words": 20},
)
def language(record: dict, ctx: CriticContext) -> CriticResult:
    """Mostly ASCII letters and a normal share of English function words."""
    s = ctx.settings
    text = full_text(record, ctx.kind)
    letters = [c for c in text if c.isalpha()]
    if letters:
        ascii_ratio = sum(c.isascii() for c in letters) / len(letters)
        if ascii_ratio < s["min_ascii_letter_ratio"]:
            return ctx.fail(
                f"non_english_script: {ascii_ratio:.2f} of letters are ASCII "
                f"(min {s['min_ascii_letter_ratio']})",
                score=round(ascii_ratio, 4),
            )
    # the whole text, then each section or turn long enough to judge on its own
    for label, piece in [("text", text), *text_units(record, ctx.kind)]:
        tokens = ctx.words(piece)
        if len(tokens) < s["min_words"]:
            continue
        ratio = sum(t in STOPWORDS for t in tokens) / len(tokens)
        if ratio < s["min_stopword_ratio"]:
            return ctx.fail(
                f"not_english: {ratio:.2f} of words in {label} are English function words "
                f"(min {s['min_stopword_ratio']})",
                score=round(ratio, 4),
            )
    return ctx.ok()
