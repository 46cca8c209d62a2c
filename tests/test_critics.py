"""Rule critics: plug-in loading and settings, and each shipped critic on good and bad records."""

from __future__ import annotations

import copy
import importlib.util
import re
import sys
import textwrap
from dataclasses import replace

import pytest

from personaloom.critic.rule_critics import (
    CriticResult,
    load_critic_settings,
    load_critics,
    run_rule_critics,
    template_phrases,
)
from personaloom.errors import UserError

SECTIONS = {
    "background": (
        "Maria Dubois grew up in a small town in Brittany, the second of three children of a "
        "fisherman and a school cook. She moved to Lyon to study nursing and never left."
    ),
    "daily_life": (
        "Maria is a 34-year-old nurse who works night shifts at a public hospital. On her days "
        "off she cycles along the Rhone, shops at the Croix-Rousse market and cooks for friends."
    ),
    "relationships": (
        "She shares a flat with her partner Julien, a sound engineer, and calls her mother every "
        "Sunday. Her younger brother is a 7-year-old's favourite uncle and lives in Paris."
    ),
    "values": (
        "Maria believes that care is a craft that deserves respect, and she will not cut corners "
        "with a patient even when the ward is understaffed and the night is long."
    ),
}
NARRATIVE = "\n\n".join(SECTIONS.values())


def persona(**changes) -> dict:
    record = {
        "persona_id": "p0-00000001",
        "seed": 0,
        "index": 1,
        "taxonomy": "human@0.1.0",
        "attributes": [
            {"path": "demographics.age", "value": "34 years", "source": "sampled"},
            {"path": "demographics.gender", "value": "woman", "source": "sampled"},
            {"path": "demographics.first_name", "value": "Maria", "source": "generated"},
            {"path": "demographics.location.country", "value": "France", "source": "sampled"},
            {"path": "demographics.location.city", "value": "Lyon", "source": "sampled"},
            {"path": "work.occupation", "value": "registered nurse", "source": "sampled"},
        ],
        "narrative": NARRATIVE,
        "sections": dict(SECTIONS),
        "model": "test",
        "scores": {},
    }
    record.update(changes)
    return record


def with_section(name: str, text: str) -> dict:
    sections = {**SECTIONS, name: text}
    return persona(sections=sections, narrative="\n\n".join(sections.values()))


TURNS = [
    {
        "role": "user",
        "content": "Hi! I'm trying to plan meals for my night shifts next week, any ideas?",
    },
    {
        "role": "assistant",
        "content": "Sure. Batch-cook a lentil stew on Sunday, pack it in portions, and keep nuts "
        "and fruit for the 3 a.m. slump so you are not tempted by the vending machine.",
    },
    {
        "role": "user",
        "content": "Lentils sound good. I work as a nurse so I only get a short break.",
    },
    {
        "role": "assistant",
        "content": "Then choose food you can eat cold in ten minutes: grain salads, wraps and "
        "boiled eggs travel well and keep you full until morning.",
    },
]


def conversation(**changes) -> dict:
    record = {
        "conversation_id": "p0-00000001/s0",
        "persona_id": "p0-00000001",
        "session": 0,
        "timestamp": None,
        "topic": "meal planning",
        "turns": copy.deepcopy(TURNS),
        "profile_updates": [],
        "scores": {},
    }
    record.update(changes)
    return record


def with_turn(i: int, content: str) -> dict:
    turns = copy.deepcopy(TURNS)
    turns[i]["content"] = content
    return conversation(turns=turns)


@pytest.fixture(scope="module")
def critics(repo_root):
    return {c.name: c for c in load_critics(repo_root / "validators" / "critics")}


def check(critics, name, record, kind="persona", personas=None) -> CriticResult:
    (result,) = run_rule_critics([critics[name]], [record], kind, personas=personas)[0]
    return result


def failing(critics, record, kind="persona", personas=None) -> list[CriticResult]:
    (row,) = run_rule_critics(list(critics.values()), [record], kind, personas=personas)
    return [r for r in row if not r.passed]


# -- the shipped critics pass good records ---------------------------------------------------
def test_good_persona_passes_every_critic(critics):
    assert failing(critics, persona()) == []


def test_good_conversation_passes_every_critic(critics):
    assert failing(critics, conversation(), "conversation", {"p0-00000001": persona()}) == []


def test_shipped_critics_cover_the_design(critics):
    assert set(critics) == {
        "completeness",
        "length",
        "repeated_ngrams",
        "repeated_sentences",
        "attribute_consistency",
        "name_consistency",
        "pronoun_consistency",
        "role_consistency",
        "gopher_repetition",
        "prompt_leakage",
        "pii",
        "language",
    }


# -- completeness --------------------------------------------------------------------------
def test_completeness_fails_an_empty_section(critics):
    result = check(critics, "completeness", with_section("values", "   "))
    assert not result.passed and result.reason == "empty_section: values"


def test_completeness_fails_an_empty_narrative(critics):
    assert check(critics, "completeness", persona(narrative="")).reason.startswith(
        "empty_narrative"
    )


def test_completeness_fails_a_conversation_without_turns(critics):
    result = check(critics, "completeness", conversation(turns=[]), "conversation")
    assert result.reason == "few_turns: 0 turns < 2"


def test_completeness_fails_two_user_turns_in_a_row(critics):
    turns = [TURNS[0], TURNS[0], TURNS[1]]
    result = check(critics, "completeness", conversation(turns=turns), "conversation")
    assert result.reason.startswith("no_alternation: turns 0 and 1")


# -- length --------------------------------------------------------------------------------
def test_length_fails_a_stub_section(critics):
    result = check(critics, "length", with_section("values", "Kind and fair."))
    assert not result.passed
    assert result.reason == "too_short: sections.values has 3 words < 12"


def test_length_fails_a_runaway_turn(critics):
    result = check(critics, "length", with_turn(1, "word " * 501), "conversation")
    assert result.reason == "too_long: turns[1].assistant has 501 words > 500"


# -- repetition ----------------------------------------------------------------------------
def test_repeated_ngrams_fails_a_generation_loop(critics):
    loop = "She loves the sea and she loves the wind. " * 6
    result = check(
        critics, "repeated_ngrams", with_section("values", SECTIONS["values"] + " " + loop)
    )
    assert not result.passed
    assert result.reason.startswith("repeated_ngrams:") and "sections.values" in result.reason
    assert result.score > 0.3


def test_repeated_ngrams_scores_normal_prose_low(critics):
    result = check(critics, "repeated_ngrams", persona())
    assert result.passed and result.score < 0.1


def test_repeated_sentences_fails_a_sentence_said_twice(critics):
    sentence = "She will not cut corners with a patient even when the ward is understaffed."
    record = with_section("daily_life", SECTIONS["daily_life"] + " " + sentence)
    record["sections"]["values"] = sentence
    result = check(critics, "repeated_sentences", record)
    assert not result.passed
    assert result.reason.startswith("repeated_sentence: said 2 times (max 1)")


def test_repeated_sentences_fails_a_sentence_repeated_within_one_turn(critics):
    sentence = "Here's a simple yet effective way to make your plan work."
    result = check(
        critics, "repeated_sentences", with_turn(1, f"{sentence} {sentence}"), "conversation"
    )
    assert result.reason.startswith("repeated_sentence: said 2 times in turns[1].assistant (max 1)")


def test_repeated_sentences_allows_a_conversation_two_repeats(critics):
    closing = " Let me know if you want more ideas for the week."
    turns = copy.deepcopy(TURNS)
    turns[1]["content"] += closing
    turns[3]["content"] += closing
    assert check(critics, "repeated_sentences", conversation(turns=turns), "conversation").passed
    turns.append({"role": "user", "content": "Thanks!"})
    turns.append({"role": "assistant", "content": "You're welcome." + closing})
    result = check(critics, "repeated_sentences", conversation(turns=turns), "conversation")
    assert result.reason.startswith("repeated_sentence: said 3 times (max 2)")


# -- consistency ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("sentence", "code"),
    [
        ("Maria is a 45-year-old nurse who works nights.", "age_mismatch: text says 45"),
        ("At 52, she is proud of her career on the ward.", "age_mismatch: text says 52"),
        ("She is forty-one years old and still loves nights.", "age_mismatch: text says 41"),
        (
            "Maria works as a software developer at a start-up.",
            "occupation_mismatch: text says 'software developer'",
        ),
        (
            "She lives in Berlin with her partner Julien.",
            "location_mismatch: text says lives in 'Berlin'",
        ),
    ],
)
def test_consistency_fails_a_contradicting_statement(critics, sentence, code):
    result = check(critics, "attribute_consistency", with_section("daily_life", sentence))
    assert not result.passed
    assert result.reason.startswith(code), result.reason


@pytest.mark.parametrize(
    "sentence",
    [
        "Maria is a 35-year-old nurse.",  # within the one-year tolerance
        "Her daughter is a 7-year-old who loves drawing. She is 12 years old next month.",
        "Her brother works as a software developer in Paris.",
        "She has a friend named Sophie. Her name is Sophie Martin.",
        "She is a keen cook and a bit of a painter at heart.",
        "She is a nurse at heart and a registered nurse by trade.",
        "When she was 20, she lived in Berlin for a year.",
        "She lives in Lyon, France, near the Croix-Rousse market.",
        "She lives in Villeurbanne, a suburb she adores.",
    ],
)
def test_consistency_does_not_reject_what_is_not_a_contradiction(critics, sentence):
    result = check(critics, "attribute_consistency", with_section("daily_life", sentence))
    assert result.passed, result.reason


def test_consistency_ignores_personas_without_the_attribute(critics):
    record = with_section("daily_life", "Maria is a 45-year-old nurse who lives in Berlin.")
    record["attributes"] = [
        a for a in record["attributes"] if not a["path"].endswith(("age", "city", "country"))
    ]
    assert check(critics, "attribute_consistency", record).passed


def test_consistency_checks_the_users_first_person_statements(critics):
    record = with_turn(2, "Thanks! I'm 52, so I need something gentle on the stomach.")
    result = check(
        critics, "attribute_consistency", record, "conversation", {"p0-00000001": persona()}
    )
    assert result.reason.startswith("age_mismatch: text says 52")
    assert "turns[2].user" in result.reason


def test_consistency_accepts_a_profile_update(critics):
    record = with_turn(2, "Big news: I work as a teacher now, so my breaks are short.")
    record["profile_updates"] = [
        {
            "path": "work.occupation",
            "old": "registered nurse",
            "new": "teacher",
            "reason": "career change",
        }
    ]
    personas = {"p0-00000001": persona()}
    assert check(critics, "attribute_consistency", record, "conversation", personas).passed
    record["profile_updates"] = []
    result = check(critics, "attribute_consistency", record, "conversation", personas)
    assert result.reason.startswith("occupation_mismatch: text says 'teacher'")


def test_consistency_skips_conversations_without_their_persona(critics):
    record = with_turn(2, "I'm 52, by the way.")
    assert check(critics, "attribute_consistency", record, "conversation").passed


# -- leakage -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("<|im_start|>assistant Maria is a nurse who works nights at the hospital.", "marker"),
        ("As an AI, I cannot know her, but Maria works nights at the hospital.", "marker"),
        ("Attributes: age 34. Maria works nights at the hospital.", "marker"),
        ('Here is the JSON: {"age": 34} and Maria works nights.', "marker"),
        ("Maria (demographics.age: 34) works nights at the hospital.", "attribute_path"),
        ("Here is what we know about a person: Maria works nights.", "prompt_text"),
    ],
)
def test_leakage_fails_prompt_and_template_text(critics, text, code):
    result = check(critics, "prompt_leakage", with_section("daily_life", text))
    assert not result.passed
    assert result.reason.startswith(f"{code}: sections.daily_life"), result.reason


def test_leakage_reads_sentences_of_the_prompt_templates(repo_root, tmp_path):
    (tmp_path / "p.j2").write_text(
        "Describe {{ who }} warmly.\nNever mention the secret word list today.\n"
    )
    assert template_phrases(tmp_path) == ["never mention the secret word list today"]
    shipped = template_phrases(repo_root / "prompts")
    assert "when asked to fill in details answer with a json object" in shipped


def test_leakage_lets_the_assistant_talk_about_json(critics):
    record = with_turn(
        1, "You can store the plan as JSON or in a spreadsheet, whichever you prefer."
    )
    assert check(critics, "prompt_leakage", record, "conversation").passed
    record = with_turn(0, "As an AI language model I want meal ideas for night shifts.")
    assert check(critics, "prompt_leakage", record, "conversation").reason.startswith(
        "marker: turns[0].user"
    )


# -- PII -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("You can reach Maria at maria.dubois@gmail.com for shifts.", "email"),
        ("Her mobile is +33 6 12 34 56 78 if the ward needs her.", "phone"),
        ("Call her on (415) 555-2671 after nine in the evening.", "phone"),
        ("She paid with card 4539 1488 0343 6467 at the market.", "card_number"),
        ("Her social security number is 123-45-6789, she said.", "ssn"),
    ],
)
def test_pii_fails_real_looking_personal_data(critics, text, code):
    result = check(critics, "pii", with_section("daily_life", text))
    assert not result.passed and result.reason.startswith(f"{code}: sections.daily_life"), (
        result.reason
    )


@pytest.mark.parametrize(
    "text",
    [
        "Write to maria@example.com or jobs@hospital.example.org for shifts.",
        "The fictional number 555-0123 appears in her favourite film from 1998-2004.",
        "She paid 4539 1488 0343 6468 euros in total over 2019-2023.",  # fails the Luhn check
        "Her badge number is 123-45-678 and the ward is 4B.",
        "She worked there from 2010 to 2015 and earned 1,250,000 points.",
    ],
)
def test_pii_allows_reserved_and_non_pii_numbers(critics, text):
    result = check(critics, "pii", with_section("daily_life", text))
    assert result.passed, result.reason


def _plugin_module(repo_root, name):
    path = repo_root / "validators" / "critics" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"test_plugin_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("number", "valid"),
    [
        ("4539148803436467", True),
        ("4539 1488 0343 6468", False),
        ("79927398713", True),
        ("79927398710", False),
        ("378282246310005", True),
        ("0", False),
    ],
)
def test_luhn_checksum(repo_root, number, valid):
    assert _plugin_module(repo_root, "pii").luhn_valid(number) is valid


# -- language ------------------------------------------------------------------------------
def test_language_fails_another_language(critics):
    spanish = (
        "María trabaja como enfermera en un hospital público de Lyon. Los fines de semana "
        "recorre el río en bicicleta, compra en el mercado y cocina para sus amigos."
    )
    result = check(critics, "language", with_section("values", spanish))
    assert not result.passed and result.reason.startswith("not_english:")


def test_language_fails_another_script(critics):
    text = "玛丽亚是一名护士，在里昂的一家公立医院上夜班。她喜欢骑自行车。" * 3
    result = check(critics, "language", with_section("values", text))
    assert result.reason.startswith("non_english_script:")


# -- loading plug-ins ----------------------------------------------------------------------
GOOD_PLUGIN = """
from personaloom.critic.rule_critics import rule_critic

@rule_critic("short", kinds=("persona",), defaults={"max_words": 5, "limits": {"soft": 1}})
def short(record, ctx):
    n = len(ctx.words(record["narrative"]))
    if n > ctx.settings["max_words"]:
        return ctx.fail(f"too_long: {n} words")
    return ctx.ok()
"""


def _folder(tmp_path, files: dict[str, str], settings: str | None = None):
    folder = tmp_path / "validators" / "critics"
    folder.mkdir(parents=True)
    for name, text in files.items():
        (folder / name).write_text(textwrap.dedent(text))
    if settings is not None:
        (tmp_path / "validators" / "critics.yaml").write_text(textwrap.dedent(settings))
    return folder


def test_plugin_runs_only_on_its_kinds(tmp_path):
    critics = load_critics(_folder(tmp_path, {"short.py": GOOD_PLUGIN}))
    assert [c.name for c in critics] == ["short"]
    results = run_rule_critics(critics, [{"narrative": "one two three four five six"}], "persona")
    assert results == [[CriticResult("short", False, "too_long: 6 words")]]
    assert run_rule_critics(critics, [conversation()], "conversation") == [[]]


def test_settings_file_then_argument_override_defaults(tmp_path):
    folder = _folder(tmp_path, {"short.py": GOOD_PLUGIN}, "rules:\n  short: {max_words: 6}\n")
    record = {"narrative": "one two three four five six"}
    assert run_rule_critics(load_critics(folder), [record], "persona")[0][0].passed
    (critic,) = load_critics(folder, {"short": {"max_words": 2}})
    assert critic.settings == {"max_words": 2, "limits": {"soft": 1}}


def test_a_critic_can_be_disabled(tmp_path):
    folder = _folder(tmp_path, {"short.py": GOOD_PLUGIN}, "rules:\n  short: {enabled: false}\n")
    assert load_critics(folder) == []


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            "rules:\n  short: {max_wrods: 6}\n",
            r"critics\.yaml: rules\.short\.max_wrods: unknown setting",
        ),
        ("rules:\n  short: {max_words: many}\n", r"rules\.short\.max_words: expected int, got str"),
        ("rules:\n  short: {limits: {hard: 2}}\n", r"rules\.short\.limits\.hard: unknown setting"),
        ("rules:\n  shrot: {}\n", r"critics\.yaml: rules\.shrot: no such critic"),
        ("rulez: {}\n", r"critics\.yaml: unknown section rulez"),
        ("rules: [\n", r"critics\.yaml:\d+: YAML syntax error"),
    ],
)
def test_bad_settings_name_the_file_and_key(tmp_path, settings, message):
    folder = _folder(tmp_path, {"short.py": GOOD_PLUGIN}, settings)
    with pytest.raises(UserError, match=message):
        load_critics(folder)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("def broken(:\n    pass\n", r"bad\.py:1: syntax error in critic plug-in"),
        (
            "import os\nraise RuntimeError('boom')\n",
            r"bad\.py:2: critic plug-in failed to load: RuntimeError: boom",
        ),
        (
            "import no_such_module_here\n",
            r"bad\.py:1: critic plug-in failed to load: ModuleNotFoundError",
        ),
        ("X = 1\n", r"bad\.py: defines no critic"),
        (
            "from personaloom.critic.rule_critics import rule_critic\n"
            "@rule_critic('x', kinds=('probe',))\ndef x(record, ctx):\n    return ctx.ok()\n",
            r"bad\.py: critic 'x': unknown record kind probe",
        ),
        (
            "from personaloom.critic.rule_critics import rule_critic\n"
            "@rule_critic('Bad Name')\ndef x(record, ctx):\n    return ctx.ok()\n",
            r"bad\.py: critic name 'Bad Name': use lower_snake_case",
        ),
    ],
)
def test_broken_plugin_names_the_file(tmp_path, text, message):
    folder = _folder(tmp_path, {"bad.py": text})
    with pytest.raises(UserError, match=message):
        load_critics(folder)


def test_duplicate_critic_names_both_files(tmp_path):
    folder = _folder(tmp_path, {"a.py": GOOD_PLUGIN, "b.py": GOOD_PLUGIN})
    with pytest.raises(UserError, match=r"b\.py: critic 'short' is already defined in .*a\.py"):
        load_critics(folder)


def test_missing_folder_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="critic plug-in folder does not exist"):
        load_critics(tmp_path / "nope")


def test_plugins_load_under_unique_names_without_bytecode(tmp_path):
    one = _folder(tmp_path / "one", {"short.py": GOOD_PLUGIN})
    two = _folder(tmp_path / "two", {"short.py": GOOD_PLUGIN.replace('"short"', '"short2"')})
    (a,) = load_critics(one)
    (b,) = load_critics(two)
    assert a.check_fn.__module__ != b.check_fn.__module__
    assert a.check_fn.__module__ in sys.modules
    assert not (one / "__pycache__").exists()


def test_underscore_files_are_helpers_not_plugins(tmp_path):
    folder = _folder(tmp_path, {"short.py": GOOD_PLUGIN, "_helpers.py": "X = 1\n"})
    assert [c.name for c in load_critics(folder)] == ["short"]


def test_a_critic_that_raises_is_recorded_not_fatal(tmp_path):
    plugin = (
        "from personaloom.critic.rule_critics import rule_critic\n"
        "@rule_critic('boom')\ndef boom(record, ctx):\n    return record['missing']\n"
    )
    critics = load_critics(_folder(tmp_path, {"boom.py": plugin}))
    (result,) = run_rule_critics(critics, [{}], "persona")[0]
    assert not result.passed
    assert (
        result.reason.startswith("critic_error: KeyError: 'missing'") and "boom.py" in result.reason
    )


def test_missing_settings_file_means_defaults(tmp_path):
    assert load_critic_settings(tmp_path / "critics.yaml") == {}


def test_shipped_settings_file_matches_the_plugins(repo_root):
    settings = load_critic_settings(repo_root / "validators" / "critics.yaml")
    assert set(settings) == {"rules", "judges", "decision"}
    loaded = load_critics(repo_root / "validators" / "critics")  # no unknown key or critic
    assert {c.name for c in loaded} == set(settings["rules"])


# -- identity: the persona's name ------------------------------------------------------------
@pytest.mark.parametrize(
    ("sentence", "stated"),
    [
        ("Her name is Sophie and she loves the night shift.", "Sophie"),
        ("Meet Claire, a nurse from Lyon who works nights.", "Claire"),
        ("John grew up in a small village and works nights.", "John"),
        ("Claire, a 34-year-old nurse, works nights at the hospital.", "Claire"),
    ],
)
def test_name_consistency_fails_another_name_for_the_persona(critics, sentence, stated):
    result = check(critics, "name_consistency", with_section("daily_life", sentence))
    assert result.reason == (
        f"other_name: the persona is called {stated!r}; demographics.first_name is 'Maria' "
        f"(in sections.daily_life: {sentence!r})"
    )


@pytest.mark.parametrize(
    "sentence",
    [
        "She has a friend named Sophie. Her name is Sophie Martin.",
        "Her brother Tom grew up in Paris. Tom works as a chef there.",
        "Maria Dubois grew up in Brittany.",
        "Tom, a 50-year-old mechanic, lives next door.",  # not the persona's age
        "Lyon is a city she loves, and Paris bores her.",
        "Music enjoys pride of place in her flat; music is how she unwinds.",  # common word
    ],
)
def test_name_consistency_lets_other_people_and_places_have_names(critics, sentence):
    result = check(critics, "name_consistency", with_section("daily_life", sentence))
    assert result.passed, result.reason


def test_name_consistency_reads_the_name_column(critics):
    record = with_section("daily_life", "Meet Claire, a nurse from Lyon.")
    record["attributes"] = [a for a in record["attributes"] if not a["path"].endswith("name")]
    assert check(critics, "name_consistency", record).passed  # no name: nothing to contradict
    record["name"] = "Maria Dubois"
    result = check(critics, "name_consistency", record)
    assert result.reason.startswith("other_name: the persona is called 'Claire'; name is ")


def test_name_consistency_checks_how_the_user_introduces_themself(critics):
    personas = {"p0-00000001": persona()}
    wrong = with_turn(0, "Hi, I'm Sophie! Any ideas for meals on night shifts?")
    result = check(critics, "name_consistency", wrong, "conversation", personas)
    assert result.reason.startswith("other_name: the persona is called 'Sophie'")
    assert "turns[0].user" in result.reason
    right = with_turn(0, "Hi, I'm Maria! Any ideas for meals on night shifts?")
    assert check(critics, "name_consistency", right, "conversation", personas).passed


def test_own_name_share_counts_named_personas_only():
    from personaloom.critic.identity import own_name_share

    clean = persona()
    renamed = with_section("daily_life", "Meet Claire, a nurse from Lyon.")
    unnamed = persona()
    unnamed["attributes"] = [a for a in unnamed["attributes"] if "name" not in a["path"]]
    assert own_name_share([clean, renamed, unnamed]) == {
        "personas_with_name": 2,
        "own_name_only": 0.5,
    }
    assert own_name_share([unnamed]) == {"personas_with_name": 0, "own_name_only": None}


# -- identity: pronouns ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("section", "word"),
    [
        ("Maria is a nurse who works nights. He cycles along the river on days off.", "he"),
        ("He grew up in Brittany and moved to Lyon to study nursing.", "he"),
        ("Maria prides himself on never cutting corners with a patient.", "himself"),
        ("Maria works nights at the hospital, and he loves the quiet wards.", "he"),
    ],
)
def test_pronoun_consistency_fails_a_pronoun_of_another_gender(critics, section, word):
    result = check(critics, "pronoun_consistency", with_section("daily_life", section))
    assert result.reason == (
        f"pronoun_mismatch: {word!r} for the persona; demographics.gender is 'woman' "
        f"(in sections.daily_life: {ctx_sentence(section, word)!r})"
    )


def ctx_sentence(section: str, word: str) -> str:
    from personaloom.critic.rule_critics import sentences

    return next(s for s in sentences(section) if re.search(rf"\b{word}\b", s, re.I))


@pytest.mark.parametrize(
    "section",
    [
        "Her partner Julien is a sound engineer. He works from home and cooks on weekends.",
        "They say Maria is the calmest nurse on the ward, and they are right.",
        "Her brother lives in Paris. He visits whenever the trains run.",
    ],
)
def test_pronoun_consistency_lets_pronouns_mean_other_people(critics, section):
    result = check(critics, "pronoun_consistency", with_section("daily_life", section))
    assert result.passed, result.reason


def test_pronoun_consistency_accepts_they_for_non_binary_and_is_configurable(repo_root):
    def non_binary(text: str) -> dict:
        record = persona(sections={"daily_life": text}, narrative=text)
        for attribute in record["attributes"]:
            if attribute["path"].endswith("gender"):
                attribute["value"] = "non-binary"
        return record

    folder = repo_root / "validators" / "critics"
    record = non_binary("Maria is a nurse who works nights. She cycles on days off.")
    (default,) = [c for c in load_critics(folder) if c.name == "pronoun_consistency"]
    assert run_rule_critics([default], [record], "persona")[0][0].reason.startswith(
        "pronoun_mismatch: 'she' for the persona; demographics.gender is 'non-binary'"
    )
    they = non_binary("Maria is a nurse who works nights. They cycle on days off.")
    assert run_rule_critics([default], [they], "persona")[0][0].passed
    settings = {"pronoun_consistency": {"she": ["woman", "female", "girl", "non-binary"]}}
    (she_too,) = [c for c in load_critics(folder, settings) if c.name == "pronoun_consistency"]
    assert run_rule_critics([she_too], [record], "persona")[0][0].passed


# -- roles -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("turn", "text", "code"),
    [
        (0, "Hello, I am your assistant today. What are we cooking?", "user_speaks_as_assistant"),
        (2, "Great. How can I help you today?", "user_speaks_as_assistant"),
        (2, "I'm an AI assistant, so I never get hungry.", "user_speaks_as_assistant"),
        (1, "Thanks for your help! I will cook lentils.", "assistant_speaks_as_user"),
        (3, "I'm Maria, and I work nights too.", "assistant_speaks_as_user"),
        (3, "My husband cooks for me on Sundays.", "assistant_speaks_as_user"),
        (1, "User: what should I cook?", "assistant_speaks_as_user"),
    ],
)
def test_role_consistency_fails_a_side_playing_the_other(critics, turn, text, code):
    personas = {"p0-00000001": persona()}
    result = check(critics, "role_consistency", with_turn(turn, text), "conversation", personas)
    role = "user" if turn % 2 == 0 else "assistant"
    assert result.reason.startswith(f"{code}: ")
    assert f"role is {role!r} (in turns[{turn}].{role}: " in result.reason


@pytest.mark.parametrize(
    ("turn", "text"),
    [
        (2, "Thank you for your help, lentils it is."),
        (1, "How can I help you plan? Batch-cook lentils on Sunday."),
        (2, "I'm a personal assistant by day and a nurse by night, so I'm always tired."),
        (3, "My advice: cook once, eat three times."),
    ],
)
def test_role_consistency_lets_each_side_say_its_own_lines(critics, turn, text):
    personas = {"p0-00000001": persona()}
    result = check(critics, "role_consistency", with_turn(turn, text), "conversation", personas)
    assert result.passed, result.reason


# -- numbers and places ----------------------------------------------------------------------
def rich_persona(section: str) -> dict:
    record = with_section("daily_life", section)
    record["attributes"] += [
        {"path": "demographics.location.settlement", "value": "large city", "source": "sampled"},
        {
            "path": "relationships_and_family.children.number_of_children",
            "value": "2",
            "source": "sampled",
        },
        {"path": "career.status.years_in_current_job", "value": "6 years", "source": "sampled"},
        {"path": "finances.income.annual_income", "value": "42000 USD/year", "source": "sampled"},
    ]
    return record


@pytest.mark.parametrize(
    ("sentence", "code"),
    [
        ("She was born in 1970 in Brittany.", "birth_year_mismatch: text says born in 1970"),
        ("Maria has three children.", "children_mismatch: text says 3 children"),
        ("She has no children.", "children_mismatch: text says 0 children"),
        ("Her three kids keep her busy.", "children_mismatch: text says 3 children"),
        ("She has worked as a nurse for 15 years.", "years_in_job_mismatch: text says 15 years"),
        ("She earns $400,000 a year.", "income_mismatch: text says"),
        ("She earns $15,000 a month.", "income_mismatch: text says"),
        (
            "She lives in a small village.",
            "settlement_mismatch: text says lives in 'a small village'",
        ),
        (
            "She lives in the countryside.",
            "settlement_mismatch: text says lives in 'the countryside'",
        ),
    ],
)
def test_consistency_fails_numbers_and_places_that_contradict(critics, sentence, code):
    result = check(critics, "attribute_consistency", rich_persona(sentence))
    assert result.reason.startswith(code), result.reason
    assert f"(in sections.daily_life: {sentence!r})" in result.reason


@pytest.mark.parametrize(
    "sentence",
    [
        "She was born in 1991 in Brittany.",  # 34 in 2025, before or after her birthday
        "She has two children.",
        "Her sister has three children.",
        "She has been a nurse for 6 years.",
        "She has been a mother for 15 years.",
        "She earns about $3,500 a month.",  # 42,000 a year
        "Her husband earns $400,000 a year.",
        "She lives in a big city.",
        "She earns 400,000 rupees a year.",  # not dollars: not compared
    ],
)
def test_consistency_does_not_reject_numbers_and_places_that_agree(critics, sentence):
    result = check(critics, "attribute_consistency", rich_persona(sentence))
    assert result.passed, result.reason


def test_birth_year_of_a_session_is_counted_from_its_own_year(critics):
    personas = {"p0-00000001": persona()}  # 34 years old
    record = with_turn(2, "I was born in 1996, so nights are still fine for me.")
    record["timestamp"] = "2030-06-01T10:00:00+00:00"  # 34 in 2030
    assert check(critics, "attribute_consistency", record, "conversation", personas).passed
    record["timestamp"] = "2025-06-01T10:00:00+00:00"  # 29 in 2025
    result = check(critics, "attribute_consistency", record, "conversation", personas)
    assert result.reason.startswith("birth_year_mismatch: text says born in 1996 (aged 29")


# -- Gopher repetition -----------------------------------------------------------------------
MATCH_MADE = "\n".join(f"Chat {i}: Match made, match made." for i in range(1, 6))


def test_gopher_counts_as_the_paper_defines(repo_root):
    gopher = _plugin_module(repo_root, "gopher")
    assert gopher.duplicate_pieces(["a b", "c", "a b", "a b"]) == (2, 6)
    # "x y" occurs twice: 3 characters x 2; a top n-gram said once counts nothing
    assert gopher.top_ngram_chars(["x", "y", "x", "y", "z"], 2) == 6
    assert gopher.top_ngram_chars(["x", "y", "z"], 2) == 0
    # the second "a b c d e" repeats the first: its 5 one-letter words
    assert gopher.duplicate_ngram_chars(list("abcdeabcdef"), 5) == 5
    assert gopher.normalize_digits("Chat 12: 3 pm") == "Chat 00: 0 pm"


def test_gopher_rejects_a_loop_that_only_changes_a_number(critics):
    record = with_turn(1, MATCH_MADE)
    result = check(critics, "gopher_repetition", record, "conversation")
    assert result.reason.startswith(
        "dup_line_frac: 0.500 > 0.3 ('Chat 0: Match made, match made.' x5)"
    )
    assert check(critics, "repeated_sentences", record, "conversation").passed  # why it's needed


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("Same para here.\n\nOther one.\n\nSame para here.\n\nSame para here.", "dup_para_frac"),
        (
            "A long first line that the model repeats word for word later on.\n"
            + "A long first line that the model repeats word for word later on.\n"
            + "\n".join(f"short line {w}" for w in "abcdefg"),
            "dup_line_char_frac",
        ),
        ("They like long walks by the sea. " * 12, "top_2_gram"),
    ],
)
def test_gopher_names_the_sub_check_that_failed(critics, text, code):
    turns = [{"role": "user", "content": "Hi."}, {"role": "assistant", "content": text}]
    result = check(critics, "gopher_repetition", conversation(turns=turns), "conversation")
    assert result.reason.startswith(f"{code}: "), result.reason


def test_gopher_compression_ratio_catches_what_compresses_too_well(repo_root):
    folder = repo_root / "validators" / "critics"
    off = {k: 1.0 for k in ("dup_para_frac", "dup_para_char_frac", "dup_line_frac")}
    off.update({"dup_line_char_frac": 1.0, "top_2_gram": 1.0, "top_3_gram": 1.0})
    off.update({f"top_{n}_gram": 1.0 for n in (2, 3, 4)})
    off.update({f"dup_{n}_gram": 1.0 for n in range(5, 11)})
    settings = {"gopher_repetition": off}
    (only,) = [c for c in load_critics(folder, settings) if c.name == "gopher_repetition"]
    loop = with_section("values", "They like walks. " * 100)
    (result,) = run_rule_critics([only], [loop], "persona")[0]
    assert result.reason.startswith("compression_ratio: ") and "< 0.3" in result.reason
    assert run_rule_critics([only], [persona()], "persona")[0][0].passed


def test_gopher_leaves_short_texts_to_the_other_critics(repo_root, critics):
    short = conversation(
        turns=[
            {"role": "user", "content": "I love my job and I love my family, any gift ideas?"},
            {"role": "assistant", "content": "A framed family photo or a shared day out."},
        ]
    )
    assert check(critics, "gopher_repetition", short, "conversation").passed
    folder = repo_root / "validators" / "critics"
    settings = {"gopher_repetition": {"min_words": 0}}
    (unguarded,) = [c for c in load_critics(folder, settings) if c.name == "gopher_repetition"]
    (result,) = run_rule_critics([unguarded], [short], "conversation")[0]
    assert result.reason.startswith("top_3_gram: ")  # "i love my" said twice in 18 words


# -- modes: filter, advisory, auto -------------------------------------------------------------
def test_rule_critic_mode_defaults_to_filter_and_is_a_setting(tmp_path):
    folder = _folder(tmp_path, {"short.py": GOOD_PLUGIN}, "rules:\n  short: {mode: advisory}\n")
    assert [c.mode for c in load_critics(folder)] == ["advisory"]
    assert [c.mode for c in load_critics(folder, {"short": {"mode": "auto"}})] == ["auto"]
    bare = _folder(tmp_path / "b", {"short.py": GOOD_PLUGIN})
    assert [c.mode for c in load_critics(bare)] == ["filter"]


def test_a_bad_mode_names_the_file_and_the_choices(tmp_path):
    folder = _folder(tmp_path, {"short.py": GOOD_PLUGIN}, "rules:\n  short: {mode: maybe}\n")
    with pytest.raises(
        UserError,
        match=r"critics\.yaml: rules\.short\.mode: expected one of "
        r"filter, advisory, auto, got 'maybe'",
    ):
        load_critics(folder)


def test_an_advisory_critic_flags_without_rejecting():
    from personaloom.critic.decision import acceptance_report, decide

    failing = CriticResult("style", False, "bad_style: too flat")
    passing = CriticResult("length", True)
    advised = decide([failing, passing], {}, None, advisory={"style"})
    assert (advised.accepted, advised.reasons, advised.flagged) == (True, [], ["style"])
    filtered = decide([failing, passing], {}, None)
    assert not filtered.accepted and filtered.failed == ["style"]
    report = acceptance_report([[advised, filtered]])["total"]
    assert report["accepted"] == 1
    assert report["critics"]["style"]["acceptance"] == 0.0  # measured: it passed neither
    assert report["critics"]["length"]["acceptance"] == 1.0


def test_auto_mode_is_advisory_for_the_embedded_model_only(repo_root):
    from personaloom.critic.rounds import resolve_rule_modes
    from personaloom.critic.settings import load_critic_config
    from personaloom.engine.embedded import EMBEDDED_MODEL

    config = load_critic_config(repo_root / "validators")
    auto = replace(config, critics=[replace(c, mode="auto") for c in config.critics[:2]])
    embedded = resolve_rule_modes(auto, EMBEDDED_MODEL)
    other = resolve_rule_modes(auto, "Qwen/Qwen2.5-7B-Instruct")
    assert [c.mode for c in embedded.critics] == ["advisory", "advisory"]
    assert [c.mode for c in other.critics] == ["filter", "filter"]


def test_critic_summary_marks_advisory_critics():
    from personaloom.critic.decision import acceptance_report, decide
    from personaloom.critic.rounds import critic_summary

    decisions = [
        decide([CriticResult("style", passed)], {}, None, advisory={"style"})
        for passed in (True, False, False, True)
    ]
    rates = critic_summary([{"persona": acceptance_report({0: decisions})}])["rates"]
    assert rates["persona"] == {"all rounds": 1.0, "style (advisory)": 0.5}
