"""Roles: the user simulator never speaks as the assistant, the assistant never as the user.

A small model playing the user often slips into the assistant's part ("Hello, I am your
assistant today", "How can I help you?"), and the assistant sometimes answers as the
person ("I'm Maria, a 34-year-old nurse", "Thanks for your help!"). Each phrase list below
is a set of regular expressions (case-insensitive) that only one side of the conversation
says; edit them in validators/critics.yaml.
"""

from __future__ import annotations

import re

from personaloom.critic.identity import Identity
from personaloom.critic.rule_critics import CriticContext, CriticResult, rule_critic


@rule_critic(
    "role_consistency",
    kinds=("conversation",),
    defaults={
        # said by the user simulator, these mean it plays the assistant
        "assistant_phrases": [
            r"\bI(?:'m|’m| am) (?:your (?:\w+\s+)?(?:assistant|chatbot|AI)|an? (?:AI|virtual|"
            r"digital) (?:assistant|chatbot)|an? (?:AI|language model|chatbot|bot))\b",
            r"\bas an? (?:AI|language model|virtual assistant|AI assistant)\b",
            r"\bhow (?:can|may|could|might) I (?:help|assist) you\b",
            r"\bwhat can I (?:do|help you with|help with) (?:for you )?today\b",
            r"\b(?:is there )?anything else I can (?:help|assist|do)\b",
            r"\bI(?:'m|’m| am) here to (?:help|assist) you\b",
            r"\blet me know if you have any (?:other |more |further )?questions\b",
            r"^\W*(?:assistant|AI|bot|chatbot)\s*:",
        ],
        # said by the assistant, these mean it plays the user (or a person)
        "user_phrases": [
            r"\bthank(?:s| you)(?: so much| very much)? for (?:your|the|all the) "
            r"(?:help|advice|assistance|tips|suggestions|support)\b",
            r"\bI(?:'m|’m| am) an? \d{1,3}[- ]years?[- ]old\b",
            r"\bmy (?:husband|wife|boyfriend|girlfriend|kids|children|son|daughter|mom|mum|dad|"
            r"mother|father)\b",
            r"^\W*(?:user|human|me|client|customer)\s*:",
        ],
    },
)
def role_consistency(record: dict, ctx: CriticContext) -> CriticResult:
    """No user turn says what only the assistant says (and the reverse); the assistant
    never introduces itself with the persona's name."""
    assistant = [re.compile(p, re.I | re.M) for p in ctx.settings["assistant_phrases"]]
    user = [re.compile(p, re.I | re.M) for p in ctx.settings["user_phrases"]]
    persona = ctx.persona(record.get("persona_id"))
    identity = Identity(persona) if persona else None
    for i, turn in enumerate(record.get("turns") or []):
        role, content = turn.get("role"), turn.get("content") or ""
        label = f"turns[{i}].{role}"
        for sentence in ctx.sentences(content) or [content]:
            if role == "user" and any(p.search(sentence) for p in assistant):
                return ctx.fail(
                    f"user_speaks_as_assistant: the user simulator talks as the assistant; "
                    f"role is 'user' (in {label}: {sentence[:120]!r})"
                )
            if role == "assistant":
                if any(p.search(sentence) for p in user) or _claims_name(sentence, identity):
                    return ctx.fail(
                        f"assistant_speaks_as_user: the assistant talks as the user; "
                        f"role is 'assistant' (in {label}: {sentence[:120]!r})"
                    )
    return ctx.ok()


def _claims_name(sentence: str, identity: Identity | None) -> bool:
    """The assistant introduces itself with the persona's name ("I'm Maria")."""
    if identity is None or not identity.words:
        return False
    for m in re.finditer(
        r"\b(?:my name is|I'm|I’m|I am|this is)\s+([A-Z][a-z'’]+)", sentence, re.I
    ):
        if m.group(1).lower() in identity.words:
            return True
    return False
