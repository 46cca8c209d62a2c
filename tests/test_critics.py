"""Rule critics: plug-in loading and settings, and each shipped critic on good and bad records."""

from __future__ import annotations

import copy
import importlib.util
import sys
import textwrap

import pytest

from personaloom.critics import (
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
        ("Her name is Sophie and she loves the night shift.", "name_mismatch: text says 'Sophie'"),
        ("Meet Claire, a nurse from Lyon who works nights.", "name_mismatch: text says 'Claire'"),
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
    assert "be concrete and consistent with everything above" in shipped


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
from personaloom.critics import rule_critic

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
            "from personaloom.critics import rule_critic\n"
            "@rule_critic('x', kinds=('probe',))\ndef x(record, ctx):\n    return ctx.ok()\n",
            r"bad\.py: critic 'x': unknown record kind probe",
        ),
        (
            "from personaloom.critics import rule_critic\n"
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
        "from personaloom.critics import rule_critic\n"
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
