"""Identity: the persona is called only by its own name, with pronouns of its gender.

Both critics read a persona's sections and the user turns of a conversation (the user
simulator speaks as the persona). Other people may appear: a name or pronoun only counts
for the persona when the sentence leaves no doubt (see `personaloom.critic.identity` for
names). A record without a name (a taxonomy without identity) or without a gender
attribute passes the corresponding check: there is nothing to contradict.
"""

from __future__ import annotations

import re

from personaloom.critic.identity import (
    NOT_A_NAME,
    OTHER_PEOPLE,
    Identity,
    name_source,
    other_names,
    persona_gender,
)
from personaloom.critic.rule_critics import (
    CriticContext,
    CriticResult,
    rule_critic,
    text_units,
)


@rule_critic("name_consistency", kinds=("persona", "conversation"), defaults={})
def name_consistency(record: dict, ctx: CriticContext) -> CriticResult:
    """The persona is called only by its own name (explicit naming, "X, a 34-year-old",
    X as the subject of a narrative sentence); other people may appear."""
    if ctx.kind == "persona":
        persona, units = record, text_units(record, "persona")
    else:
        persona = ctx.persona(record.get("persona_id"))
        if persona is None:
            return ctx.ok()
        units = text_units(record, "conversation", role="user")
    paths = ctx.shared.get("name_paths")
    identity = Identity(persona, paths)
    if not identity.words:
        return ctx.ok()
    found = other_names(units, identity, first_person=ctx.kind == "conversation")
    if found:
        label, sentence, stated = found[0]
        return ctx.fail(
            f"other_name: the persona is called {stated!r}; {name_source(persona, paths)} is "
            f"{identity.name!r} (in {label}: {sentence[:120]!r})",
            score=float(len(found)),
        )
    return ctx.ok(score=0.0)


PRONOUNS = {
    "she": ("she", "her", "hers", "herself"),
    "he": ("he", "him", "his", "himself"),
}
_PREPOSITIONS = set(
    "in at from to near of on around across outside inside into through via about "
    "towards toward like".split()
)


def _accepted(gender: str, settings: dict) -> set[str] | None:
    """Gendered pronoun sets accepted for `gender` (None: a gender the settings don't know)."""
    known = {g.lower() for key in ("she", "he", "they") for g in settings[key]}
    if gender not in known:
        return None
    return {key for key in ("she", "he") if gender in {g.lower() for g in settings[key]}}


def _mentions_others(text: str, identity: Identity) -> bool:
    """Another person may be meant: a relation word, or a capitalised word that is not the
    first of the sentence, not after a preposition (a place) and not the persona's name."""
    if OTHER_PEOPLE.search(text):
        return True
    tokens = re.findall(r"[\w'’-]+", text)
    for i, token in enumerate(tokens):
        if i == 0 or not token[0].isupper() or token.lower() in NOT_A_NAME:
            continue
        if tokens[i - 1].lower() in _PREPOSITIONS or identity.is_own(token):
            continue
        return True
    return False


def _wrong(word: str, accepted: set[str]) -> str | None:
    """The pronoun set of `word` when it is gendered and not accepted."""
    for key, forms in PRONOUNS.items():
        if word.lower() in forms and key not in accepted:
            return key
    return None


def _first_word(sentence: str) -> str:
    m = re.match(r"\W*([\w'’]+)", sentence)
    return m.group(1) if m else ""


def _pronoun_problem(
    sentence: str, previous: str | None, identity: Identity, accepted: set[str]
) -> str | None:
    """The wrong pronoun that can only mean the persona in `sentence`, if any.

    - a section opens with it ("He grew up ..." for a woman), or
    - it opens a sentence that follows one about the persona (opening with its name or an
      accepted pronoun), neither naming anybody else before it, or
    - after the persona's name opens the sentence: a reflexive ("Maria prides himself"),
      or a subject pronoun after a conjunction ("Maria works nights, and he ...").
    """
    first = _first_word(sentence)
    wrong = _wrong(first, accepted)
    if wrong:
        if previous is None:
            return first
        prev_first = _first_word(previous)
        about = identity.is_own(prev_first) or (
            prev_first.lower() in {f for k in accepted for f in PRONOUNS[k]}
        )
        if about and not _mentions_others(previous, identity):
            return first
        return None
    if not identity.words or not identity.is_own(first):
        return None
    for m in re.finditer(
        r"\b(herself|himself)\b|(?:,\s*|\b)(?:and|but|so|yet)\s+(she|he)\b", sentence, re.I
    ):
        word = m.group(1) or m.group(2)
        if _wrong(word, accepted) and not _mentions_others(sentence[: m.start()], identity):
            return word
    return None


@rule_critic(
    "pronoun_consistency",
    kinds=("persona",),
    defaults={
        # gender values referred to as she/her and as he/him; `they` lists the genders for
        # which only they/them is accepted unless they also appear under she or he.
        # "they" itself is never a mismatch (it is also the plural).
        "she": ["woman", "female", "girl"],
        "he": ["man", "male", "boy"],
        "they": ["non-binary", "nonbinary", "genderqueer", "agender"],
    },
)
def pronoun_consistency(record: dict, ctx: CriticContext) -> CriticResult:
    """Pronouns that can only mean the persona agree with its gender (non-binary: they)."""
    path, gender = persona_gender(record, ctx.shared.get("gender_paths"))
    accepted = _accepted(gender, dict(ctx.settings)) if gender else None
    if accepted is None:
        return ctx.ok()
    identity = Identity(record, ctx.shared.get("name_paths"))
    for label, text in text_units(record, "persona"):
        sents = ctx.sentences(text)
        for i, sentence in enumerate(sents):
            word = _pronoun_problem(sentence, sents[i - 1] if i else None, identity, accepted)
            if word:
                return ctx.fail(
                    f"pronoun_mismatch: {word.lower()!r} for the persona; {path} is "
                    f"{gender!r} (in {label}: {sentence[:120]!r})"
                )
    return ctx.ok()
