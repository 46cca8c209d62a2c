"""Completeness: the fields a released record needs are there and not empty."""

from __future__ import annotations

from personaloom.critic.rule_critics import CriticContext, CriticResult, rule_critic


@rule_critic(
    "completeness",
    kinds=("persona", "conversation"),
    defaults={
        "persona": {"min_attributes": 1, "min_sections": 1, "required_sections": []},
        "conversation": {"min_turns": 2, "require_alternation": True, "first_role": "user"},
    },
)
def completeness(record: dict, ctx: CriticContext) -> CriticResult:
    """Required fields are present and non-empty (narrative, sections, attributes, turns)."""
    s = ctx.settings[ctx.kind]
    if ctx.kind == "persona":
        if not str(record.get("persona_id") or "").strip():
            return ctx.fail("missing_id: persona_id is empty")
        attributes = record.get("attributes") or []
        if len(attributes) < s["min_attributes"]:
            return ctx.fail(f"few_attributes: {len(attributes)} attributes < {s['min_attributes']}")
        empty = [str(a.get("path")) for a in attributes if not str(a.get("value") or "").strip()]
        if empty:
            return ctx.fail(f"empty_attribute: {', '.join(empty[:3])}")
        if not str(record.get("narrative") or "").strip():
            return ctx.fail("empty_narrative: narrative is empty")
        sections = dict(record.get("sections") or {})
        if len(sections) < s["min_sections"]:
            return ctx.fail(f"few_sections: {len(sections)} sections < {s['min_sections']}")
        missing = [name for name in s["required_sections"] if name not in sections]
        if missing:
            return ctx.fail(f"missing_section: {', '.join(missing)}")
        blank = [name for name, text in sections.items() if not str(text or "").strip()]
        if blank:
            return ctx.fail(f"empty_section: {', '.join(blank)}")
        return ctx.ok()

    for key in ("conversation_id", "persona_id"):
        if not str(record.get(key) or "").strip():
            return ctx.fail(f"missing_id: {key} is empty")
    turns = record.get("turns") or []
    if len(turns) < s["min_turns"]:
        return ctx.fail(f"few_turns: {len(turns)} turns < {s['min_turns']}")
    for i, turn in enumerate(turns):
        role = turn.get("role")
        if role not in ("user", "assistant"):
            return ctx.fail(f"bad_role: turn {i} has role {role!r}")
        if not str(turn.get("content") or "").strip():
            return ctx.fail(f"empty_turn: turn {i} ({role}) is empty")
    if s["first_role"] and turns[0].get("role") != s["first_role"]:
        return ctx.fail(
            f"bad_role: first turn is {turns[0].get('role')!r}, expected {s['first_role']!r}"
        )
    if s["require_alternation"]:
        for i in range(1, len(turns)):
            if turns[i].get("role") == turns[i - 1].get("role"):
                return ctx.fail(
                    f"no_alternation: turns {i - 1} and {i} are both {turns[i].get('role')!r}"
                )
    return ctx.ok()
