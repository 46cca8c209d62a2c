"""Identity: persona names drawn from Faker for the sampled country and gender
(`personaloom.taxonomy.identity`, `taxonomies/locales.yaml`, docs/taxonomy.md "Identity"),
and the name in the persona record and in every generation prompt."""

from __future__ import annotations

import importlib
import random
import textwrap
import unicodedata
from pathlib import Path

import pytest

from personaloom.errors import UserError
from personaloom.generate.personas import NARRATIVE_SECTIONS, PersonaDraft, enrich, narrate
from personaloom.generate.prompts import PromptLibrary
from personaloom.project import Project
from personaloom.taxonomy import TaxonomyError, load_taxonomy, parse_taxonomy
from personaloom.taxonomy.identity import (
    draw_name,
    gender_class,
    is_latin,
    load_locales,
    parse_locales,
    romanize,
)
from personaloom.taxonomy.sampling import sample_skeleton, sample_skeletons

REPO = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data" / "taxonomies"
LOCALES = load_locales(REPO / "taxonomies" / "locales.yaml")


def faker_lists(locale: str):
    """Faker's name lists of a locale (its person provider's class attributes)."""
    return importlib.import_module(f"faker.providers.person.{locale}").Provider


def small_taxonomy(extra: str = "", genders: str = "") -> str:
    return textwrap.dedent(
        f"""
        name: small
        version: "1"
        anchors: [person.gender, person.country, person.name]
        categories:
          person:
            gender: [woman, man, non-binary]
            country: [Japan, France, India, Atlantis]
            name:
              kind: identity
              country: person.country
              gender: person.gender
        {genders}
            hobby: [chess, golf]
        {extra}
        """
    ).lstrip()


# -- drawing -----------------------------------------------------------------------------------


def test_a_name_is_deterministic_per_seed_and_persona():
    a = draw_name(LOCALES, 7, 3, "France", "female")
    assert a == draw_name(LOCALES, 7, 3, "France", "female")
    names = {draw_name(LOCALES, 7, i, "France", "female").text for i in range(40)}
    assert len(names) > 30, "different personas get different names"
    others = {draw_name(LOCALES, s, 3, "France", "female").text for s in range(40)}
    assert len(others) > 30


def test_japan_gets_japanese_script_family_name_first_with_romanization():
    fake = faker_lists("ja_JP")
    female_given = {pair[0]: pair[2] for pair in fake.first_name_female_pairs}
    families = {pair[0]: pair[2] for pair in fake.last_name_pairs}
    for i in range(30):
        name = draw_name(LOCALES, 1, i, "Japan", "female")
        assert name.locale == "ja_JP"
        assert name.given in female_given and name.family in families
        assert name.native == f"{name.family} {name.given}"
        assert name.romanized == f"{families[name.family]} {female_given[name.given]}"
        assert name.text == f"{name.native} ({name.romanized})"
        assert not is_latin(name.native) and is_latin(name.romanized)


def test_france_gets_french_names_of_the_persona_gender():
    fake = faker_lists("fr_FR")
    female, male = set(fake.first_names_female), set(fake.first_names_male)
    for i in range(30):
        woman = draw_name(LOCALES, 2, i, "France", "female")
        man = draw_name(LOCALES, 2, i, "France", "male")
        assert woman.locale == man.locale == "fr_FR"
        assert woman.given in female and man.given in male
        assert woman.text == f"{woman.given} {woman.family}" and woman.romanized == ""


def test_gendered_family_names_follow_the_gender():
    fake = faker_lists("ru_RU")
    for i in range(20):
        assert draw_name(LOCALES, 3, i, "Russia", "female").family in set(fake.last_names_female)
        assert draw_name(LOCALES, 3, i, "Russia", "male").family in set(fake.last_names_male)


def test_a_country_with_several_locales_draws_them_by_weight():
    drawn = [draw_name(LOCALES, 4, i, "Canada", "any").locale for i in range(400)]
    share = drawn.count("fr_CA") / len(drawn)
    assert set(drawn) == {"en_US", "fr_CA"} and 0.12 < share < 0.32  # weight 22 of 100


def test_non_latin_scripts_are_romanized():
    assert romanize("Всеволод") == "Vsevolod"
    assert romanize("金凤") == "Jinfeng"
    assert romanize("विवेक") == "Vivek"  # final inherent vowel silent
    assert romanize("इन्द्र") == "Indra"  # but kept after a consonant cluster
    assert romanize("सुब्रमण्यम") == "Subramanyam"
    assert romanize("உமா") == "Uma"
    assert romanize("علي") == "Ali" and romanize("عبد الحليم") == "Abd Al-Hlim"
    assert romanize("แจ้งสว่าง") == "Chaengswang"  # leading vowel read after its consonant
    for country in ("China", "India", "Russia", "South Korea", "Iran", "Thailand", "Egypt"):
        for i in range(10):
            name = draw_name(LOCALES, 5, i, country, "any")
            if not is_latin(name.native):
                assert name.romanized and is_latin(name.romanized), (country, name)
                assert name.text.endswith(f"({name.romanized})")


def test_an_unlisted_country_falls_back_to_the_default_or_gets_no_name():
    assert draw_name(LOCALES, 1, 0, "Atlantis", "female") is None  # shipped file: no default
    assert draw_name(LOCALES, 1, 0, "Myanmar", "male") is None
    with_default = parse_locales("default: {de_DE: 1}\ncountries:\n  France: fr_FR\n")
    assert draw_name(with_default, 1, 0, "Atlantis", "female").locale == "de_DE"
    assert draw_name(with_default, 1, 0, "France", "female").locale == "fr_FR"


def test_gender_values_map_to_name_lists():
    assert gender_class("woman") == gender_class("girl") == "female"
    assert gender_class("man") == gender_class("Boy") == "male"
    assert gender_class("non-binary") == gender_class(None) == "any"
    assert gender_class("femme", {"femme": "female"}) == "female"


# -- the shipped file ----------------------------------------------------------------------------


def test_the_shipped_map_covers_every_country_of_the_shipped_taxonomies():
    unlisted = set()
    for name in ("human", "k12_student"):
        tax = load_taxonomy(REPO / "taxonomies" / f"{name}.yaml")
        (leaf,) = tax.identity_leaves
        country = tax.leaf(leaf.identity.country)
        unlisted |= {c for c in country.values if LOCALES.locales_for(c) is None}
    # left out on purpose (see the file's header): no name rather than a foreign one
    assert unlisted == {"Myanmar", "Ethiopia", "DR Congo", "Papua New Guinea"}


def test_the_locale_map_is_not_a_taxonomy(tmp_path):
    project = Project.locate(tmp_path)
    for name in ("locales", "locales.yaml", str(REPO / "taxonomies" / "locales.yaml")):
        with pytest.raises(UserError, match="locale map"):
            project.taxonomy_path(name)
    with pytest.raises(UserError) as info:
        project.taxonomy_path("nope")
    assert "locales" not in str(info.value).split("known in", 1)[1]


# -- locale map errors -----------------------------------------------------------------------


LOCALE_ERRORS = [
    ("countries:\n  France: xx_YY  #!\n", "countries.France", "no person names"),
    ("countries:\n  Ethiopia: am_ET  #!\n", "countries.Ethiopia", "no person names"),
    ("countries:\n  France: french  #!\n", "countries.France", "not a locale name"),
    ("countries:\n  India: {hi_IN: 2, en_IN: -1}  #!\n", "countries.India.en_IN", ">= 0"),
    ("countries:\n  France: fr_FR\n  France: de_DE  #!\n", "countries.France", "duplicate key"),
    ("countries:\n  France: [fr_FR]  #!\n", "countries.France", "expected a locale"),
    ("layouts:\n  ja_JP: '{family}-{given}'  #!\ncountries:\n  Japan: ja_JP\n", "layouts.ja_JP", "layout"),
    ("colours: 3  #!\ncountries:\n  France: fr_FR\n", "colours", "unknown key"),
    ("countries:\n  France: fr_FR\n Mars: it_IT  #!\n", "(yaml)", "YAML"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "path", "fragment"), LOCALE_ERRORS)
def test_locale_map_problems_name_file_line_and_path(tmp_path, text, path, fragment):
    line = next(i + 1 for i, row in enumerate(text.splitlines()) if row.endswith("#!"))
    file = tmp_path / "locales.yaml"
    file.write_text(text)
    with pytest.raises(TaxonomyError) as info:
        load_locales(file)
    wanted = f"{file}:{line}: {path}: "
    assert any(p.startswith(wanted) and fragment in p for p in info.value.problems), (
        wanted,
        info.value.problems,
    )


def test_a_taxonomy_reads_the_locale_map_beside_it(tmp_path):
    (tmp_path / "small.yaml").write_text(small_taxonomy())
    (tmp_path / "locales.yaml").write_text("countries:\n  Atlantis: it_IT\n")
    tax = load_taxonomy(tmp_path / "small.yaml")
    assert tax.locales.locales_for("Atlantis") == (("it_IT",), (1.0,))
    assert tax.locales.locales_for("France") is None
    (tmp_path / "locales.yaml").write_text("countries:\n  Atlantis: zz_ZZ\n")
    with pytest.raises(TaxonomyError, match=r"locales\.yaml:2: countries\.Atlantis"):
        load_taxonomy(tmp_path / "small.yaml")


# -- taxonomy syntax -------------------------------------------------------------------------


IDENTITY_ERRORS = [
    (
        "unknown country",
        "    name:\n      kind: identity\n      country: person.nation  #!\n",
        "person.name",
        "unknown attribute 'person.nation'",
    ),
    (
        "numeric country",
        "    name:\n      kind: identity\n      country: person.age  #!\n",
        "person.name",
        "person.age is numeric",
    ),
    (
        "no country",
        "    name:  #!\n      kind: identity\n      gender: person.gender\n",
        "person.name",
        "needs country",
    ),
    (
        "bad gender class",
        "    name:\n      kind: identity\n      country: person.country\n"
        "      gender: person.gender\n      genders: {woman: lady}  #!\n",
        "person.name.genders.woman",
        "not one of female, male, any",
    ),
    (
        "gender value not in the attribute",
        "    name:\n      kind: identity\n      country: person.country\n"
        "      gender: person.gender  #!\n      genders: {girl: female}\n",
        "person.name.genders",
        "'girl' is not a value of person.gender",
    ),
    (
        "genders not a mapping",
        "    name:\n      kind: identity\n      country: person.country\n"
        "      gender: person.gender\n      genders: [woman]  #!\n",
        "person.name",
        "genders must be a mapping of gender value -> female | male | any",
    ),
    (
        "key of another kind",
        "    name:\n      kind: identity\n      country: person.country\n      values: [a]  #!\n",
        "person.name",
        "does not apply to a identity leaf",
    ),
    (
        "a condition reads a name",
        "    name:\n      kind: identity\n      country: person.country\n"
        "    hobby:\n      when: person.name == Ana  #!\n      values: [chess]\n",
        "person.hobby",
        "is an identity",
    ),
]


@pytest.mark.parametrize(
    ("body", "path", "fragment"),
    [c[1:] for c in IDENTITY_ERRORS],
    ids=[c[0] for c in IDENTITY_ERRORS],
)
def test_identity_leaf_problems_name_file_line_and_path(tmp_path, body, path, fragment):
    text = (
        'name: bad\nversion: "1"\ncategories:\n  person:\n'
        "    gender: [woman, man]\n    country: [France]\n"
        "    age: {range: [1, 9]}\n" + body
    )
    line = next(i + 1 for i, row in enumerate(text.splitlines()) if row.endswith("#!"))
    file = tmp_path / "bad.yaml"
    file.write_text(text.replace("  #!", ""))
    with pytest.raises(TaxonomyError) as info:
        load_taxonomy(file)
    wanted = f"{file}:{line}: {path}: "
    assert any(p.startswith(wanted) and fragment in p for p in info.value.problems), (
        wanted,
        info.value.problems,
    )


def test_a_name_sampled_before_its_country_is_reported():
    text = small_taxonomy().replace(
        "anchors: [person.gender, person.country, person.name]",
        "anchors: [person.gender, person.name, person.country]",
    )
    with pytest.raises(TaxonomyError, match=r"depends on person\.country, which is sampled later"):
        parse_taxonomy(text)


def test_rules_cannot_read_a_name():
    from personaloom.taxonomy.rules import Rule, check_rules

    tax = parse_taxonomy(small_taxonomy())
    rule = Rule(
        "r", "rules.yaml", 1, "small", condition="person.name == Ana", then="person.hobby == golf"
    )
    problems = check_rules([rule], tax)
    assert any("identity" in p for p in problems)


# -- sampling --------------------------------------------------------------------------------


def test_the_name_is_a_sampled_attribute_of_the_skeleton():
    tax = parse_taxonomy(small_taxonomy())
    sk = sample_skeleton(tax, 3, 0)
    paths = [p for p, _ in sk.attributes]
    assert paths[:3] == ["person.gender", "person.country", "person.name"] or sk.name == ""
    for i in range(40):
        sk = sample_skeleton(tax, 3, i)
        country = sk.values["person.country"]
        if country == "Atlantis":
            assert sk.name == "" and "person.name" not in sk.values
            continue
        assert sk.name and sk.values["person.name"] == sk.name
        gender = gender_class(str(sk.values["person.gender"]))
        assert sk.name == draw_name(tax.locales, 3, i, str(country), gender).text


def test_names_are_identical_across_batch_sizes_order_and_shards():
    tax = load_taxonomy(REPO / "taxonomies" / "human.yaml")
    ids = list(range(60))
    whole = {sk.index: sk.name for sk in sample_skeletons(tax, 9, ids, "quick", batch_size=60)}
    shuffled = ids[:]
    random.Random(1).shuffle(shuffled)
    small = {sk.index: sk.name for sk in sample_skeletons(tax, 9, shuffled, "deep", batch_size=7)}
    shard = {sk.index: sk.name for sk in sample_skeletons(tax, 9, ids[1::3], "quick")}
    assert whole == small
    assert all(whole[i] == name for i, name in shard.items())
    assert sum(1 for name in whole.values() if name) > 50


def test_shipped_taxonomies_name_every_persona_after_country_and_gender():
    for file, country_path, gender_path in (
        ("human", "demographics.location.country", "demographics.gender"),
        ("k12_student", "identity.home.country", "identity.gender"),
    ):
        tax = load_taxonomy(REPO / "taxonomies" / f"{file}.yaml")
        for sk in sample_skeletons(tax, 0, range(50), "quick"):
            country = str(sk.values[country_path])
            if LOCALES.locales_for(country) is None:
                assert sk.name == ""
                continue
            gender = tax.leaf(tax.identity_leaves[0].path).identity.genders
            expected = draw_name(
                tax.locales, 0, sk.index, country, gender_class(str(sk.values[gender_path]), gender)
            )
            assert sk.name == expected.text


def test_a_taxonomy_without_identity_still_samples():
    tax = load_taxonomy(DATA / "mini.yaml")
    assert tax.identity_leaves == [] and tax.locales is None
    sk = sample_skeleton(tax, 0, 1)
    assert sk.name == "" and sk.attributes and sk.to_json()["name"] == ""


# -- the name in the record and in every prompt ----------------------------------------------


class ScriptedEngine:
    """Answers every request (JSON for structured ones), keeping each call's requests."""

    model_name = "scripted"

    def __init__(self) -> None:
        from personaloom.engine.base import EngineStats

        self.stats = EngineStats()
        self.calls: list[list] = []

    def generate(self, requests):
        import json

        from personaloom.engine.base import Completion

        self.calls.append(list(requests))
        out = []
        for r in requests:
            if r.json_schema:
                text = json.dumps({k: f"value of {k}" for k in r.json_schema["properties"]})
            else:
                section = r.request_id.rsplit("/", 1)[-1]
                text = (
                    f"Opening sentence of {section} for {r.request_id}. " + "More words here. " * 6
                )
            out.append(Completion(r.request_id, text, output_tokens=10))
        return out


def drafts_for(tax, n: int) -> list[PersonaDraft]:
    return [
        PersonaDraft(
            index=sk.index,
            seed=0,
            taxonomy=tax.ref,
            sampled=list(sk.attributes),
            pending=list(sk.generated),
            name=sk.name,
        )
        for sk in sample_skeletons(tax, 0, range(n), "quick")
    ]


def test_sections_go_in_order_with_the_name_and_earlier_sections_in_every_prompt():
    tax = load_taxonomy(REPO / "taxonomies" / "human.yaml")
    drafts = [d for d in drafts_for(tax, 8) if d.name][:4]
    prompts = PromptLibrary(REPO / "prompts")
    engine = ScriptedEngine()
    assert enrich(engine, prompts, drafts, seed=0) == []
    enrich_calls = len(engine.calls)
    assert narrate(engine, prompts, drafts, seed=0) == []
    narrate_calls = engine.calls[enrich_calls:]
    # one engine call per narrative section, for the whole batch, in the fixed order
    assert len(narrate_calls) == len(NARRATIVE_SECTIONS)
    for k, (call, section) in enumerate(zip(narrate_calls, NARRATIVE_SECTIONS, strict=True)):
        assert {r.request_id.rsplit("/", 1)[-1] for r in call} == {section}
        assert len(call) == len(drafts)
        for request in call:
            draft = next(d for d in drafts if request.request_id.startswith(d.persona_id))
            # one conversation: the first request's user turn carries the name and the
            # profile, each earlier paragraph follows as the assistant's turn, whole
            roles = [m["role"] for m in request.messages]
            assert roles == ["system", *["user", "assistant"] * k, "user"]
            opening = request.messages[1]["content"]
            assert draft.name in opening and "Here is what we know" in opening
            said = [m["content"] for m in request.messages if m["role"] == "assistant"]
            assert said == [draft.sections[e] for e in list(NARRATIVE_SECTIONS)[:k]]
            for earlier, text in zip(NARRATIVE_SECTIONS, said, strict=False):
                assert text.startswith(f"Opening sentence of {earlier} for {draft.persona_id}")
            # the per-section instruction comes last, after the shared part
            user = request.messages[-1]["content"]
            assert draft.name in user
            assert user.rstrip().splitlines()[-1].startswith("Write one paragraph")
            if k:
                assert "Here is what we know" not in user and "earlier paragraphs" in user
            # a request's prefix is the one before it plus its answer (the prefix cache)
            if k:
                before = next(
                    r for r in narrate_calls[k - 1] if r.request_id.startswith(draft.persona_id)
                )
                assert request.messages[: len(before.messages)] == before.messages
    for call in engine.calls[:enrich_calls]:
        for request in call:
            draft = next(d for d in drafts if request.request_id.startswith(d.persona_id))
            assert draft.name in request.messages[-1]["content"]
    record = drafts[0].record("scripted")
    assert record["name"] == drafts[0].name


def test_a_taxonomys_own_narrative_sections_replace_the_default_six():
    tax = load_taxonomy(REPO / "tests" / "data" / "taxonomies" / "clinic.yaml")
    assert list(tax.narrative) == ["health_story", "at_the_clinic"]
    drafts = drafts_for(tax, 3)
    prompts = PromptLibrary(REPO / "prompts")
    engine = ScriptedEngine()
    assert narrate(engine, prompts, drafts, seed=0, sections=tax.narrative) == []
    assert [{r.request_id.rsplit("/", 1)[-1] for r in call} for call in engine.calls] == [
        {"health_story"},
        {"at_the_clinic"},
    ]
    second = engine.calls[1][0]
    assert "at the clinic: how they deal with doctors" in second.messages[-1]["content"]
    assert "Opening sentence of health_story" in second.messages[-2]["content"]
    record = drafts[0].record("scripted")
    assert list(record["sections"]) == ["health_story", "at_the_clinic"]
    assert record["narrative"].index("health_story") < record["narrative"].index("at_the_clinic")


def test_an_enrichment_prompt_carries_what_earlier_sections_generated():
    tax = load_taxonomy(REPO / "taxonomies" / "human.yaml")
    drafts = [d for d in drafts_for(tax, 12) if len({leaf.root for leaf in d.pending}) >= 3][:2]
    engine = ScriptedEngine()
    enrich(engine, PromptLibrary(REPO / "prompts"), drafts, seed=0)
    last = engine.calls[2][0].messages[-1]["content"]
    assert "Already established" in last and "value of" in last


def test_the_name_column_is_in_the_persona_schema():
    from personaloom import schema as S

    assert S.PERSONAS.field("name").type == S.PERSONAS.field("narrative").type


def test_names_use_letters_only_from_the_scripts_expected():
    for i in range(20):
        name = draw_name(LOCALES, 11, i, "China", "male")
        assert all(unicodedata.name(ch).startswith("CJK") for ch in name.native if ch.isalpha()), (
            name
        )
