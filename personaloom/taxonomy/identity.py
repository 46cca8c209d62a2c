"""Identity: a persona's name, drawn from Faker's locale-specific name lists.

A taxonomy declares a name with a leaf of kind `identity` (docs/taxonomy.md, "Identity")
that names the attributes it follows: the country (required) and the gender (optional).
The country picks a Faker locale through the corpus project's `taxonomies/locales.yaml`
(data, not code: which locales name the people of each country, with weights, and how
each locale writes a full name); the gender picks Faker's female, male or neutral lists.

A name is a given and a family name in the order and script the locale uses
(`layouts:`), with a romanization alongside when the script is not Latin: Faker's own
where the locale has aligned romanized pairs (`ja_JP`), otherwise a transliteration
(`anyascii`, with the inherent vowel of Indic scripts restored, Arabic long vowels and
article read, Thai leading vowels put back after their consonant). The draw is
deterministic per (run seed, persona index): one random stream seeded with
`personaloom.seeds.derive_seed(seed, index, "identity")` picks the locale, then the given
and family name from Faker's lists (with Faker's weights; a locale whose provider has
name logic of its own gets a Faker instance seeded from that stream), so a persona gets
the same name whatever its batch, shard or restart point (for a given Faker version: its
lists are data that a new release may change). Faker instances are made once per locale
and process, romanizations are cached: a name costs tens of microseconds.

Faker's lists carry no birth years, so names do not follow the persona's birth cohort.
A country the file does not list takes the file's `default:` locales when it has them;
without them (the shipped file) the persona gets no name rather than one from another
culture.
"""

from __future__ import annotations

import bisect
import importlib.util
import itertools
import random
import re
import unicodedata
from dataclasses import dataclass, field
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

from personaloom.errors import read_utf8
from personaloom.project import packaged_root
from personaloom.seeds import derive_seed
from personaloom.taxonomy.model import Problems
from personaloom.taxonomy.yamlmarks import (
    MarkedDict,
    is_number,
    load_mapping,
)

LOCALES_FILE = "locales.yaml"
GENDER_CLASSES = ("female", "male", "any")
DEFAULT_LAYOUT = "{given} {family}"
TOP_KEYS = ("description", "default", "layouts", "countries")
# Gender values read as female or male when a leaf gives no `genders:` mapping.
FEMALE_WORDS = frozenset({"woman", "women", "female", "girl", "f"})
MALE_WORDS = frozenset({"man", "men", "male", "boy", "m"})

_LOCALE = re.compile(r"^[a-z]{2,3}(_[A-Z]{2})?$")


# ----------------------------------------------------------------------------- names


@dataclass(frozen=True)
class Name:
    """A drawn name: given and family name in the locale's script and layout, and their
    romanization (empty when the script is Latin)."""

    given: str
    family: str
    locale: str
    layout: str = DEFAULT_LAYOUT
    romanized_given: str = ""
    romanized_family: str = ""

    @property
    def native(self) -> str:
        return self.layout.format(given=self.given, family=self.family).strip()

    @property
    def romanized(self) -> str:
        if not (self.romanized_given or self.romanized_family):
            return ""
        spaced = self.layout if " " in self.layout else self.layout.replace("}{", "} {")
        return spaced.format(given=self.romanized_given, family=self.romanized_family).strip()

    @property
    def text(self) -> str:
        """The display value: `native` or `native (romanized)`."""
        return f"{self.native} ({self.romanized})" if self.romanized else self.native


# ----------------------------------------------------------------------------- locale map


@dataclass(frozen=True)
class LocaleMap:
    """`locales.yaml`: country -> weighted Faker locales; locale -> name layout."""

    source: str
    countries: dict[str, tuple[tuple[str, ...], tuple[float, ...]]]
    layouts: dict[str, str] = field(default_factory=dict)
    default: tuple[tuple[str, ...], tuple[float, ...]] | None = None

    def locales_for(self, country: str) -> tuple[tuple[str, ...], tuple[float, ...]] | None:
        """The weighted locales of a country (the default for an unlisted one), or None."""
        return self.countries.get(country, self.default)

    def pick(self, country: str, u: float) -> str | None:
        """The locale for `country` at a uniform draw `u` in [0, 1), or None."""
        found = self.locales_for(country)
        if found is None:
            return None
        locales, weights = found
        target, total = u * sum(weights), 0.0
        for locale, weight in zip(locales, weights, strict=True):
            total += weight
            if target < total:
                return locale
        return locales[-1]

    def layout(self, locale: str) -> str:
        return self.layouts.get(locale, DEFAULT_LAYOUT)


def default_locales_path() -> Path:
    return packaged_root() / "taxonomies" / LOCALES_FILE


def locales_path_for(taxonomy_file: str | Path | None) -> Path:
    """`locales.yaml` beside the taxonomy file when there is one, else the packaged file."""
    if taxonomy_file is not None:
        beside = Path(taxonomy_file).parent / LOCALES_FILE
        if beside.is_file():
            return beside
    return default_locales_path()


def load_locales(path: str | Path) -> LocaleMap:
    """Read and check a locale map; raises TaxonomyError listing every problem as
    `file:line: path: message`."""
    path = Path(path)
    return _load_cached(str(path), path.stat().st_mtime_ns)


@lru_cache(maxsize=8)
def _load_cached(path: str, _mtime: int) -> LocaleMap:
    return parse_locales(read_utf8(Path(path), "locale map"), source=path)


def parse_locales(text: str, source: str = "<memory>") -> LocaleMap:
    problems = Problems(source)
    doc = load_mapping(text, problems, "a locale map is a mapping with countries (and layouts)")
    _duplicates(doc, "", problems)
    for key in doc:
        if key not in TOP_KEYS:
            problems.add(
                doc.key_line(key), str(key), f"unknown key (expected one of {', '.join(TOP_KEYS)})"
            )
    if "description" in doc and not isinstance(doc["description"], str):
        problems.add(doc.key_line("description"), "description", "must be a string")
    countries: dict[str, tuple[tuple[str, ...], tuple[float, ...]]] = {}
    raw = doc.get("countries")
    if not isinstance(raw, MarkedDict) or not raw:
        problems.add(
            doc.key_line("countries") if "countries" in doc else doc.line,
            "countries",
            "missing or empty: a mapping of country -> locale or {locale: weight}",
        )
    else:
        for country, value in raw.items():
            where = f"countries.{country}"
            if not isinstance(country, str) or not country.strip():
                problems.add(raw.key_line(country), where, "a country is a non-empty text")
                continue
            weighted = _weighted_locales(value, where, raw.key_line(country), problems)
            if weighted is not None:
                countries[country] = weighted
    default = None
    if "default" in doc and doc["default"] is not None:
        default = _weighted_locales(doc["default"], "default", doc.key_line("default"), problems)
    layouts: dict[str, str] = {}
    raw_layouts = doc.get("layouts")
    if raw_layouts is not None:
        if not isinstance(raw_layouts, MarkedDict):
            problems.add(
                doc.key_line("layouts"), "layouts", "a mapping of locale -> '{family} {given}'"
            )
        else:
            for locale, layout in raw_layouts.items():
                where, line = f"layouts.{locale}", raw_layouts.key_line(locale)
                if _check_locale(locale, where, line, problems):
                    if (
                        not isinstance(layout, str)
                        or sorted(re.findall(r"\{(\w*)\}", layout)) != ["family", "given"]
                        or re.sub(r"\{(given|family)\}", "", layout).strip(" ") != ""
                    ):
                        problems.add(
                            line,
                            where,
                            f"layout must hold {{given}} and {{family}} once each, "
                            f"separated by nothing or spaces, got {layout!r}",
                        )
                    else:
                        layouts[locale] = layout
    if problems:
        raise problems.error()
    return LocaleMap(source, countries, layouts, default)


def _weighted_locales(
    value: Any, where: str, line: int, problems: Problems
) -> tuple[tuple[str, ...], tuple[float, ...]] | None:
    if isinstance(value, str):
        return ((value,), (1.0,)) if _check_locale(value, where, line, problems) else None
    if not isinstance(value, MarkedDict) or not value:
        problems.add(line, where, f"expected a locale or {{locale: weight}}, got {value!r}")
        return None
    locales, weights = [], []
    for locale, weight in value.items():
        item_line = value.key_line(locale)
        if not _check_locale(locale, f"{where}.{locale}", item_line, problems):
            continue
        if not is_number(weight) or weight < 0:
            problems.add(
                item_line,
                f"{where}.{locale}",
                f"weight must be a number >= 0, got {weight!r}",
            )
            continue
        locales.append(locale)
        weights.append(float(weight))
    if len(locales) != len(value):
        return None
    if sum(weights) <= 0:
        problems.add(line, where, "all weights are zero")
        return None
    return tuple(locales), tuple(weights)


def _check_locale(locale: Any, where: str, line: int, problems: Problems) -> bool:
    if not isinstance(locale, str) or not _LOCALE.match(locale):
        problems.add(line, where, f"{locale!r} is not a locale name like fr_FR")
        return False
    if not has_person_names(locale):
        problems.add(
            line,
            where,
            f"Faker has no person names for locale {locale!r} "
            "(choose a neighbouring locale, or leave the country out)",
        )
        return False
    return True


def _duplicates(node: Any, prefix: str, problems: Problems) -> None:
    if isinstance(node, MarkedDict):
        for key, line, first in node.duplicates:
            where = f"{prefix}.{key}" if prefix else str(key)
            problems.add(line, where, f"duplicate key {key!r} (first defined at line {first})")
        for key, child in node.items():
            _duplicates(child, f"{prefix}.{key}" if prefix else str(key), problems)


@cache
def has_person_names(locale: str) -> bool:
    """Whether Faker ships person names for `locale` (and would not fall back to en_US)."""
    try:
        return importlib.util.find_spec(f"faker.providers.person.{locale}") is not None
    except (ImportError, ValueError):
        return False


# ----------------------------------------------------------------------------- drawing


def gender_class(value: str | None, genders: dict[str, str] | None = None) -> str:
    """female, male or any for a gender value (`genders` maps values explicitly)."""
    if value is None:
        return "any"
    if genders and value in genders:
        return genders[value]
    word = value.strip().lower()
    if word in FEMALE_WORDS:
        return "female"
    if word in MALE_WORDS:
        return "male"
    return "any"


@cache
def _faker(locale: str) -> Any:
    from faker import Faker  # creating one takes ~50 ms: one per locale per process

    return Faker(locale)


@dataclass(frozen=True)
class _Choices:
    """One of Faker's name lists: its elements, and cumulative weights when weighted."""

    elements: tuple[Any, ...]
    cumulative: tuple[float, ...] | None = None

    @classmethod
    def of(cls, raw: Any) -> _Choices:
        if isinstance(raw, dict):  # Faker's weighted lists: {element: weight}
            return cls(tuple(raw), tuple(itertools.accumulate(float(w) for w in raw.values())))
        return cls(tuple(raw))

    def pick(self, u: float) -> Any:
        if self.cumulative is None:
            return self.elements[min(int(u * len(self.elements)), len(self.elements) - 1)]
        i = bisect.bisect_right(self.cumulative, u * self.cumulative[-1])
        return self.elements[min(i, len(self.elements) - 1)]


@cache
def _name_lists(locale: str, gender: str) -> tuple[_Choices, _Choices, bool] | None:
    """Faker's given- and family-name lists of a locale for a gender class, chosen as
    Faker's own `first_name_female()` ... `last_name()` choose them (the gendered list
    when the locale has one, else the common one), and whether the elements are
    (native, kana, romanized) pairs (`ja_JP`). None when the locale's provider overrides
    those methods with logic of its own: then the methods are called."""
    from faker.providers.person import Provider as Base

    fake = _faker(locale)
    provider = next(
        p for p in fake.providers if type(p).__module__.startswith("faker.providers.person")
    )
    suffix = {"female": "_female", "male": "_male"}.get(gender, "")
    if hasattr(provider, "last_name_pairs"):
        given = getattr(provider, f"first_name{suffix}_pairs", provider.first_name_pairs)
        return _Choices.of(given), _Choices.of(provider.last_name_pairs), True
    given_method = f"first_name{suffix or '_nonbinary'}"
    family_method = f"last_name{suffix}"
    for method in {given_method, family_method, "first_name", "last_name"}:
        if getattr(type(provider), method) is not getattr(Base, method):
            return None
    given_list = f"first_names{suffix or '_nonbinary'}"
    given = getattr(provider, given_list) if hasattr(provider, given_list) else None
    family = getattr(provider, f"last_names{suffix}", None) if suffix else None
    return (
        _Choices.of(given if given is not None else provider.first_names),
        _Choices.of(family if family is not None else provider.last_names),
        False,
    )


def draw_name(
    locales: LocaleMap, seed: int, index: int, country: str, gender: str = "any"
) -> Name | None:
    """The name of persona `index` of a run with `seed`, for its country and gender class
    (female, male, any); None when no locale covers the country.

    One random stream seeded with `derive_seed(seed, index, "identity")` picks the
    locale, then the given and the family name from Faker's lists (with their weights);
    a locale whose provider has its own name logic gets a Faker instance seeded from the
    same stream."""
    rng = random.Random(derive_seed(seed, index, "identity"))
    locale = locales.pick(country, rng.random())
    if locale is None:
        return None
    layout = locales.layout(locale)
    lists = _name_lists(locale, gender)
    if lists is not None:
        given_list, family_list, pairs = lists
        given, family = given_list.pick(rng.random()), family_list.pick(rng.random())
        if pairs:  # (native, kana, romanized): Faker's own romanization, aligned
            return Name(given[0], family[0], locale, layout, given[-1], family[-1])
    else:
        fake = _faker(locale)
        fake.seed_instance(rng.getrandbits(63))
        suffix = {"female": "_female", "male": "_male"}.get(gender, "")
        given = getattr(fake, f"first_name{suffix or '_nonbinary'}")()
        family = getattr(fake, f"last_name{suffix}")()
    given, family = " ".join(str(given).split()), " ".join(str(family).split())
    if is_latin(given + family):
        return Name(given, family, locale, layout)
    return Name(given, family, locale, layout, romanize(given), romanize(family))


def is_latin(text: str) -> bool:
    """Whether every letter of `text` is a Latin letter."""
    return all(not ch.isalpha() or _script(ch) == "LATIN" for ch in text)


def _script(ch: str) -> str:
    return unicodedata.name(ch, "UNKNOWN").split(" ", 1)[0]


# Scripts whose consonant letters carry an inherent vowel ("a") unless a vowel sign or a
# virama follows; in the first group a word-final inherent vowel is silent (schwa
# deletion: विवेक is Vivek, not Viveka), except after a consonant cluster (इन्द्र: Indra).
_SCHWA_DELETING = frozenset({"DEVANAGARI", "BENGALI", "GURMUKHI", "GUJARATI"})
_BRAHMIC = _SCHWA_DELETING | {"ORIYA", "TAMIL", "TELUGU", "KANNADA", "MALAYALAM", "SINHALA"}


@lru_cache(maxsize=65536)
def romanize(text: str) -> str:
    """A Latin-letter reading of a name (each word capitalised): anyascii's
    transliteration, with the inherent vowel of Indic scripts restored."""
    from anyascii import anyascii

    words = []
    for word in text.split():
        script = _script(word[0])
        if script in _BRAHMIC:
            latin = _brahmic(word, anyascii)
        elif script == "ARABIC":
            latin = _arabic(word, anyascii)
        elif script == "THAI":
            latin = anyascii(_thai(word))
        else:
            latin = anyascii(word)
        latin = latin.replace("`", "").strip("'")
        words.append("-".join(part[:1].upper() + part[1:].lower() for part in latin.split("-")))
    return " ".join(w for w in words if w)


# Arabic script writes long vowels only: read alif, waw and ya as vowels inside a word,
# ayn as "a", the article as "Al-" (عبد الحليم: Abd Al-Halim reads Abd Al-Hlim).
_ARABIC = {"ا": "a", "أ": "a", "إ": "i", "آ": "a", "ى": "a", "ة": "a", "ع": "a", "ء": ""}
_ARABIC |= {"ئ": "i", "ؤ": "u"}


def _arabic(word: str, anyascii: Any) -> str:
    article = word.startswith("ال") and len(word) > 3
    body = word[2:] if article else word
    out = []
    for i, ch in enumerate(body):
        if ch in _ARABIC:
            out.append(_ARABIC[ch])
        elif ch in "ويی":
            out.append(("w" if ch == "و" else "y") if i == 0 else ("u" if ch == "و" else "i"))
        else:
            out.append(anyascii(ch))
    return ("al-" if article else "") + "".join(out)


# Thai writes some vowels before the consonant they follow (เ แ โ ใ ไ), and marks a
# silent consonant with a thanthakhat (์).
def _thai(word: str) -> str:
    chars, i = list(word), 0
    while i < len(chars) - 1:
        if "\u0e40" <= chars[i] <= "\u0e44":
            chars[i], chars[i + 1] = chars[i + 1], chars[i]
            i += 1
        i += 1
    out: list[str] = []
    for ch in chars:
        if ch == "\u0e4c" and out:
            out.pop()
        else:
            out.append(ch)
    return "".join(out)


# Where anyascii's stripped ISO 15919 reading differs from how Indian names are usually
# spelt in Latin letters (श ś: sh, च c: ch, ं ṁ: n, ृ ṛ: ri).
_INDIC = {
    "श": "sh", "ष": "sh", "च": "ch", "छ": "chh", "ं": "n", "ृ": "ri", "ऋ": "ri",
    "শ": "sh", "ষ": "sh", "চ": "ch", "ছ": "chh", "ং": "ng",
    "શ": "sh", "ષ": "sh", "ચ": "ch", "છ": "chh", "ં": "n",
    "ଶ": "sh", "ଷ": "sh", "ଚ": "ch", "ଂ": "n",
}  # fmt: skip


def _brahmic(word: str, anyascii: Any) -> str:
    out: list[str] = []
    chars = [ch for ch in word if "NUKTA" not in unicodedata.name(ch, "")]
    for i, ch in enumerate(chars):
        piece = _INDIC.get(ch) or anyascii(ch)
        out.append(piece)
        if not _is_consonant(ch, piece):
            continue
        following = chars[i + 1] if i + 1 < len(chars) else None
        if following is not None and _silences_vowel(following):
            continue
        final = following is None or not unicodedata.category(following).startswith(("L", "M"))
        after_cluster = i > 0 and "VIRAMA" in unicodedata.name(chars[i - 1], "")
        if final and i > 0 and _script(ch) in _SCHWA_DELETING and not after_cluster:
            continue
        out.append("a")
    return "".join(out)


def _is_consonant(ch: str, latin: str) -> bool:
    return unicodedata.category(ch) == "Lo" and bool(latin) and latin[-1] not in "aeiou"


def _silences_vowel(ch: str) -> bool:
    name = unicodedata.name(ch, "")
    return "VOWEL SIGN" in name or "VIRAMA" in name
