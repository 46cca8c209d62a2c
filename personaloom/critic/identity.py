"""Who a text is about: the persona's own name and gender, and the names a text gives it.

Critics read a taxonomy's identity paths from `CriticContext.shared` when the caller has
them (`name_paths`, `gender_paths`: `identity_paths`), else find the attributes by their
last path component. Shared by the rule-critic plug-ins (`validators/critics/identity.py`) and the dataset
metrics (`own_name_share`: the share of personas whose text calls them only by their own
name). Deterministic and precision over recall: a capitalised word counts as a name *for
the persona* only when the sentence leaves no doubt, that is

- explicit naming: "her name is X", "my name is X", "hi, I'm X", "you can call me X",
  "Meet X" opening a text or section;
- an appositive with the persona's own age: "X, a 34-year-old ...", "X is a 34-year-old";
- in a third-person narrative, X as the subject of a person's verb ("X grew up", "X works")
  where X was never introduced as someone else (no relative, friend, colleague... word
  in the sentence where X first appears or the one before it, and not after "named").

A name counts as the persona's own when it shares a word with the persona's name (first
or last name alone is fine) or appears in any of its attribute values (a nickname).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from personaloom.critic.rule_critics import sentences, text_units

NAME_LEAVES = ("name", "full_name", "first_name", "given_name")
GENDER_LEAVES = ("gender", "sex")

# Words that introduce a person other than the persona.
OTHER_PEOPLE = re.compile(
    r"\b(?:daughters?|sons?|child(?:ren)?|kids?|bab(?:y|ies)|brothers?|sisters?|siblings?|"
    r"mother|mom|mum|father|dad|parents?|husband|wife|partner|boyfriend|girlfriend|spouse|"
    r"fianc[ée]e?|friends?|colleagues?|co-?workers?|boss|neighbou?rs?|nieces?|nephews?|cousins?|"
    r"aunts?|uncles?|grand(?:mother|father|ma|pa|parents?|sons?|daughters?|children|kids?)|"
    r"roommates?|flatmates?|mentors?|teachers?|students?|clients?|patients?|customers?|"
    r"classmates?|teammates?|coach|manager|landlord|doctor|named|called|"
    r"dogs?|cats?|pupp(?:y|ies)|kittens?|pets?|horses?|parrots?)\b",
    re.I,
)
# Capitalised words that are not names (sentence openers, days, months, titles, pronouns).
NOT_A_NAME = set(
    "i a an the this that these those it its he she they we you her his their our my your "
    "monday tuesday wednesday thursday friday saturday sunday january february march april "
    "may june july august september october november december today tomorrow yesterday "
    "not just here back sorry glad new so looking trying writing working wondering curious "
    "mr mrs ms mx miss dr doctor professor aunt uncle grandma grandpa saint st mount lake "
    "when while after before since although though because but and or if as at in on by "
    "for from with without during every each some many most all both one two three "
    "god allah christmas easter ramadan diwali internet english french spanish german "
    "chinese arabic hindi portuguese russian japanese korean italian dutch swahili".split()
)
# Verbs whose subject is a person (not "Life moved on", "Work feels endless").
PERSON_VERBS = (
    r"(?:grew|grows) up|was born|(?:works?|worked) (?:as|at|in|for)|(?:lives?|lived) (?:in|with)|"
    r"spends? (?:her|his|their)|wakes? up|woke up|enjoys?|enjoyed|believes?|believed|"
    r"dreams? (?:of|about)|hopes? to|wants? to|prefers?|studied|married|remembers?|"
    r"describes? (?:herself|himself|themselves)"
)
_NAME = r"(?P<name>[A-Z][a-z'’]+(?:[- ][A-Z][a-z'’]+)?)"
_AGE = r"(?P<age>\d{1,3})[- ]years?[- ]old"


def _attribute(
    record: Mapping[str, Any], paths: Iterable[str] | None, leaves: tuple[str, ...]
) -> tuple[str, str]:
    """(path, value) of the first non-empty attribute at one of `paths` (a taxonomy's), else
    of the first whose last path component is one of `leaves`; ("", "") if none."""
    attributes = [
        (str(a.get("path") or ""), str(a.get("value") or "").strip())
        for a in record.get("attributes") or []
    ]
    wanted = list(paths or [])
    for path, value in attributes:
        if value and path in wanted:
            return path, value
    for path, value in attributes:
        if value and path.rsplit(".", 1)[-1] in leaves:
            return path, value
    return "", ""


def persona_name(record: Mapping[str, Any] | None, paths: Iterable[str] | None = None) -> str:
    """The persona's name: the `name` column, else its name attribute (`paths`, the
    taxonomy's identity leaves, or any `...name`); "" if none."""
    if not record:
        return ""
    name = str(record.get("name") or "").strip()
    return name or _attribute(record, paths, NAME_LEAVES)[1]


def name_source(record: Mapping[str, Any], paths: Iterable[str] | None = None) -> str:
    """Where the name comes from: `name` (the column) or the attribute path."""
    if str(record.get("name") or "").strip():
        return "name"
    return _attribute(record, paths, NAME_LEAVES)[0] or "name"


def persona_gender(
    record: Mapping[str, Any] | None, paths: Iterable[str] | None = None
) -> tuple[str, str]:
    """(path, lower-case value) of the persona's gender attribute (`paths`, else any
    `...gender` or `...sex`); ("", "") if none."""
    path, value = _attribute(record or {}, paths, GENDER_LEAVES)
    return path, value.lower()


def persona_age(record: Mapping[str, Any] | None) -> int | None:
    for attribute in (record or {}).get("attributes") or []:
        path = str(attribute.get("path") or "")
        if path.rsplit(".", 1)[-1] == "age":
            found = re.search(r"\d+", str(attribute.get("value") or ""))
            if found:
                return int(found.group())
    return None


def name_words(name: str) -> set[str]:
    """Lower-case words of a name, one-letter initials left out."""
    return {w.lower() for w in re.findall(r"[^\W\d_]+", name) if len(w) > 1}


class Identity:
    """The persona's own names (its name, and any word of its attribute values)."""

    def __init__(self, record: Mapping[str, Any], name_paths: Iterable[str] | None = None) -> None:
        self.name = persona_name(record, name_paths)
        self.words = name_words(self.name)
        self.attribute_words = {
            w.lower()
            for attribute in record.get("attributes") or []
            for w in re.findall(r"[^\W\d_]+", str(attribute.get("value") or ""))
        }
        self.age = persona_age(record)

    def is_own(self, stated: str) -> bool:
        words = name_words(stated)
        return bool(words & self.words) or (bool(words) and words <= self.attribute_words)

    def mentioned_in(self, text: str) -> bool:
        return any(re.search(rf"\b{re.escape(w)}\b", text, re.I) for w in self.words)


def _patterns(first_person: bool) -> list[tuple[str, re.Pattern[str]]]:
    explicit = [
        r"(?i:\bmy\s+(?:full\s+|first\s+)?name(?:\s+is|'s|’s))\s+" + _NAME,
        r"(?i:\b(?:hi|hello|hey)[,!.]?\s+(?:there[,!.]?\s+)?(?:I'm|I’m|I\s+am|this\s+is|it's|it’s))\s+"
        + _NAME,
        r"(?i:\b(?:you\s+can\s+|please\s+|just\s+)call\s+me)\s+" + _NAME,
        r"^" + _NAME + r"(?i:\s+here)\b[,.!]",
    ]
    if first_person:
        return [("explicit", re.compile(p)) for p in explicit]
    third = [
        r"(?i:\b(?:her|his|their)\s+(?:full\s+|first\s+)?name\s+is)\s+" + _NAME,
        r"(?i:\b(?:she|he|they)\s+(?:is|was|are|were)\s+(?:called|named))\s+" + _NAME,
    ]
    return [("explicit", re.compile(p)) for p in explicit + third] + [
        ("meet", re.compile(r"^(?i:meet)\s+" + _NAME)),
        ("age", re.compile(_NAME + r"(?:,\s+an?|\s+(?i:is|was)\s+an?)\s+" + _AGE)),
        ("subject", re.compile(r"^" + _NAME + r"\s+(?:" + PERSON_VERBS + r")\b")),
    ]


_THIRD = _patterns(first_person=False)
_FIRST = _patterns(first_person=True)


def other_names(
    units: Iterable[tuple[str, str]], identity: Identity, *, first_person: bool = False
) -> list[tuple[str, str, str]]:
    """(label, sentence, name) for every sentence of `units` that calls the persona by a
    name that is not its own (see the module docstring for what counts)."""
    units = list(units)
    whole = "\n".join(text for _, text in units)
    found = []
    for label, text in units:
        sents = sentences(text)
        for i, sentence in enumerate(sents):
            previous = sents[i - 1] if i else ""
            for kind, pattern in _FIRST if first_person else _THIRD:
                if kind == "meet" and i:
                    continue  # "Meet X" only opens a text or a section
                for m in pattern.finditer(sentence):
                    stated = m.group("name")
                    if _not_a_name(stated) or identity.is_own(stated):
                        continue
                    if kind == "age" and not _own_age(m, identity):
                        continue
                    if kind in ("explicit", "age", "subject") and _about_someone_else(
                        m, sentence, previous
                    ):
                        continue
                    if kind == "subject" and (
                        _introduced_as_other(stated, whole, identity)
                        or re.search(rf"\b{re.escape(stated.lower())}\b", whole)
                    ):
                        continue  # someone else, or a common word ("work" elsewhere)
                    found.append((label, sentence, stated))
                    break
                else:
                    continue
                break
    return found


def _not_a_name(stated: str) -> bool:
    return any(w.lower() in NOT_A_NAME for w in re.split(r"[- ]", stated))


def _own_age(m: re.Match[str], identity: Identity) -> bool:
    return identity.age is not None and abs(int(m.group("age")) - identity.age) <= 1


def _about_someone_else(m: re.Match[str], sentence: str, previous: str) -> bool:
    """A possessive pronoun's name may be another person's ("Her friend... Her name is")."""
    before = sentence[: m.start("name")]
    return bool(OTHER_PEOPLE.search(before) or OTHER_PEOPLE.search(previous))


def _introduced_as_other(stated: str, text: str, identity: Identity) -> bool:
    """X was introduced as someone else where it first appears (a relation word before it
    in that sentence or in the one before), or the persona's own name shares that sentence
    ("Julien and Maria met")."""
    sents = sentences(text)
    for i, sentence in enumerate(sents):
        found = re.search(rf"\b{re.escape(stated)}\b", sentence)
        if found:
            context = (sents[i - 1] if i else "") + " " + sentence[: found.start()]
            return bool(OTHER_PEOPLE.search(context)) or identity.mentioned_in(sentence)
    return False


def persona_units(record: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The persona's text: its sections (or narrative). Sections may come as a mapping, as
    (name, text) pairs (Arrow) or as {key, value} items (polars)."""
    sections = record.get("sections")
    if isinstance(sections, list) and sections and isinstance(sections[0], Mapping):
        record = {**record, "sections": {s.get("key"): s.get("value") for s in sections}}
    return text_units(record, "persona")


def uses_only_own_name(
    record: Mapping[str, Any], name_paths: Iterable[str] | None = None
) -> bool | None:
    """Whether a persona's text calls it only by its own name (None: it has no name)."""
    identity = Identity(record, name_paths)
    if not identity.words:
        return None
    return not other_names(persona_units(record), identity)


def own_name_share(
    records: Iterable[Mapping[str, Any]], name_paths: Iterable[str] | None = None
) -> dict[str, Any]:
    """Among personas with a name: how many, and the share whose text calls them only by
    their own name (None when no persona has a name)."""
    paths = list(name_paths or [])
    verdicts = [v for v in (uses_only_own_name(r, paths) for r in records) if v is not None]
    return {
        "personas_with_name": len(verdicts),
        "own_name_only": round(sum(verdicts) / len(verdicts), 4) if verdicts else None,
    }


def identity_paths(taxonomy: Any) -> dict[str, list[str]]:
    """`name_paths` (identity leaves) and `gender_paths` (the gender they follow) of a
    loaded taxonomy, for `CriticContext.shared`."""
    leaves = list(getattr(taxonomy, "identity_leaves", None) or [])
    genders = [leaf.identity.gender for leaf in leaves if getattr(leaf, "identity", None)]
    return {
        "name_paths": [leaf.path for leaf in leaves],
        "gender_paths": [g for g in genders if g],
    }
