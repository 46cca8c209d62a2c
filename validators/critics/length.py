"""Length bounds: texts neither stubs nor run-away generations."""

from __future__ import annotations

from personaloom.critic.rule_critics import CriticContext, CriticResult, rule_critic, text_units


@rule_critic(
    "length",
    kinds=("persona", "conversation"),
    defaults={
        "persona": {
            "min_words": 60,
            "max_words": 3000,
            "min_section_words": 12,
            "max_section_words": 700,
        },
        "conversation": {"max_turns": 80, "min_turn_words": 1, "max_turn_words": 500},
    },
)
def length(record: dict, ctx: CriticContext) -> CriticResult:
    """Word counts of the whole text and of each section or turn stay within bounds."""
    s = ctx.settings[ctx.kind]
    if ctx.kind == "persona":
        n = len(ctx.words(record.get("narrative")))
        if n < s["min_words"]:
            return ctx.fail(
                f"too_short: narrative has {n} words < {s['min_words']}", score=float(n)
            )
        if n > s["max_words"]:
            return ctx.fail(f"too_long: narrative has {n} words > {s['max_words']}", score=float(n))
        low, high = s["min_section_words"], s["max_section_words"]
    else:
        turns = record.get("turns") or []  # the minimum number of turns is completeness's
        if len(turns) > s["max_turns"]:
            return ctx.fail(
                f"too_long: {len(turns)} turns > {s['max_turns']}", score=float(len(turns))
            )
        low, high = s["min_turn_words"], s["max_turn_words"]
    for label, text in text_units(record, ctx.kind):
        n = len(ctx.words(text))
        if n < low:
            return ctx.fail(f"too_short: {label} has {n} words < {low}", score=float(n))
        if n > high:
            return ctx.fail(f"too_long: {label} has {n} words > {high}", score=float(n))
    return ctx.ok()
