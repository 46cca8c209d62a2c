"""The topics catalogues (`taxonomies/NAME.topics.yaml`, the generic `topics.yaml`): the
shipped files, their validation (`file:line: path: problem`, exit 2) on their own and
against their taxonomy, caching, and which file serves a taxonomy."""

from __future__ import annotations

import os
import re
import shutil
import tomllib
from fnmatch import fnmatch
from pathlib import Path

import pytest

from personaloom.errors import UserError
from personaloom.generate.timeline import build_timeline
from personaloom.generate.topics import (
    CatalogueError,
    catalogue_notice,
    catalogue_path,
    load_catalogue,
    parse_catalogue,
)
from personaloom.project import Project, is_topics_file, packaged_root
from personaloom.taxonomy.loader import load_taxonomy

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "tests" / "data" / "taxonomies"
GENERIC = REPO / "taxonomies" / "topics.yaml"
CLINIC = load_taxonomy(DATA / "clinic.yaml")

SMALL = """\
topics:
  cooking:
    - plan dinners for the coming week
  travel planning:
    - plan a long weekend away
preferences:
  cuisine:
    path: food.cuisine
    extra: true
    label: favourite cuisine
    values: [Italian, Japanese, Mexican, Thai]
    reasons:
      - a friend taught them to cook {new} dishes
      - a {new} place opened nearby
      - they got tired of {old} food
      - a trip got them hooked on {new} food
    revert_reasons:
      - "{old} lost its appeal and they went back to {new}"
    suggestion: a {value} recipe
    topics: [cooking, travel planning]
"""


def write(folder: Path, text: str, name: str = "topics.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text)
    return path


def line_of(text: str, fragment: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if fragment in line)


# -- the shipped catalogues ------------------------------------------------------------------
@pytest.mark.parametrize("name", ["human", "k12_student"])
def test_each_shipped_taxonomy_has_its_own_catalogue(name: str):
    taxonomy = load_taxonomy(REPO / "taxonomies" / f"{name}.yaml")
    path = REPO / "taxonomies" / f"{name}.topics.yaml"
    catalogue = load_catalogue(path, taxonomy)
    assert catalogue.taxonomy == taxonomy.ref and catalogue.declared_taxonomy == name
    assert len(catalogue.topics) >= 10 and len(catalogue.preferences) >= 10
    for kind in catalogue.preferences:
        if kind.extra:
            assert kind.path.split(".")[0] not in taxonomy.categories
            continue
        leaf = taxonomy.leaf(kind.path)
        assert leaf.kind == "categorical" and set(kind.values) <= set(leaf.values)
    assert catalogue_notice(path, REPO / "taxonomies" / f"{name}.yaml") is None
    assert catalogue_path(Project.locate(REPO), REPO / "taxonomies" / f"{name}.yaml") == path


def test_the_k12_catalogue_is_about_school():
    taxonomy = load_taxonomy(REPO / "taxonomies" / "k12_student.yaml")
    catalogue = load_catalogue(REPO / "taxonomies" / "k12_student.topics.yaml", taxonomy)
    names = set(catalogue.topic_names)
    assert {"homework help", "school subjects", "friendships", "clubs and activities"} <= names
    paths = {k.path for k in catalogue.preferences}
    assert {"academics.subjects.favourite_subject", "school_life.school.extracurricular"} <= paths
    assert not names & set(load_catalogue(GENERIC).topic_names)


def test_the_human_catalogue_holds_what_the_old_catalogue_held():
    taxonomy = load_taxonomy(REPO / "taxonomies" / "human.yaml")
    catalogue = load_catalogue(REPO / "taxonomies" / "human.topics.yaml", taxonomy)
    assert len(catalogue.topics) == 14
    assert catalogue.topic_names[:3] == ("recommendations", "writing help", "travel planning")
    cuisine = catalogue.preference("cuisine")
    assert cuisine.path == "lifestyle_and_routine.food.favourite_cuisine"
    assert cuisine.suggestion == "a {value} restaurant or a {value} recipe"
    assert catalogue.preference("diet").values[-1] == "pescatarian"
    assert catalogue.preference("music_genre").reasons[2] == "{old} started to feel repetitive"


def test_the_generic_default_borrows_nothing_from_a_taxonomy():
    catalogue = load_catalogue(GENERIC)
    assert catalogue.declared_taxonomy is None
    assert all(
        k.extra and k.path.startswith("assistant_preferences.") for k in catalogue.preferences
    )
    for name in ("human", "k12_student"):
        taxonomy = load_taxonomy(REPO / "taxonomies" / f"{name}.yaml")
        assert load_catalogue(GENERIC, taxonomy).preferences  # valid for any taxonomy
    assert load_catalogue(GENERIC, CLINIC)
    notice = catalogue_notice(GENERIC, DATA / "mini.yaml")
    assert notice and "\n" not in notice and "mini.topics.yaml" in notice and str(GENERIC) in notice


def test_the_catalogues_ship_with_the_defaults():
    assert (REPO / "personaloom" / "_defaults" / "taxonomies" / "topics.yaml").is_file()
    package_data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]["personaloom"]
    for name in ("topics.yaml", "human.topics.yaml", "k12_student.topics.yaml"):
        assert (packaged_root() / "taxonomies" / name).is_file()
        assert any(fnmatch(f"_defaults/taxonomies/{name}", glob) for glob in package_data)


def test_the_clinic_test_catalogue_declares_leaves_an_extra_and_transitions():
    catalogue = load_catalogue(DATA / "clinic.topics.yaml", CLINIC)
    assert catalogue.numeric == {"patient.age"}
    smoking = catalogue.preference("smoking")
    assert smoking.values == CLINIC.leaf("lifestyle.smoking").values  # the leaf's, by default
    assert smoking.targets("smokes daily") == ("trying to quit",)
    assert smoking.targets("never smoked") == ()
    assert smoking.may_change("quit", "smokes daily") and not smoking.may_change(
        "quit", "never smoked"
    )
    reminder = catalogue.preference("reminder")
    assert reminder.extra and reminder.leaf is False and len(reminder.values) == 4
    assert catalogue.topics[3].when == "patient.condition != none"


def test_loads_are_cached_until_the_file_changes(tmp_path: Path):
    path = write(tmp_path, SMALL)
    first = load_catalogue(path)
    assert load_catalogue(path) is first
    path.write_text(SMALL.replace("Japanese", "Korean"))
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    second = load_catalogue(path)
    assert second is not first
    assert second.preference("cuisine").values == ("Italian", "Korean", "Mexican", "Thai")


def test_a_timeline_draws_only_from_its_catalogue(tmp_path: Path):
    catalogue = load_catalogue(write(tmp_path, SMALL), CLINIC)
    timeline = build_timeline(
        {"persona_id": "p"}, catalogue=catalogue, sessions=6, seed=1, update_probability=1.0
    )
    assert {s.topic for s in timeline.sessions} <= {"cooking", "travel planning"}
    assert timeline.preferences == {"food.cuisine": "cuisine"}
    assert timeline.kind("food.cuisine") is catalogue.preference("cuisine")
    assert "catalogue" not in timeline.to_dict()


# -- malformed files -------------------------------------------------------------------------
def problems_of(tmp_path: Path, text: str, taxonomy=None) -> tuple[Path, str]:
    path = write(tmp_path, text)
    with pytest.raises(CatalogueError) as info:
        load_catalogue(path, taxonomy)
    assert isinstance(info.value, UserError)  # exit code 2
    return path, str(info.value)


VALUES = "values: [Italian, Japanese, Mexican, Thai]"
# (edit of SMALL: old -> new, fragment on the reported line, expected `path: problem`)
MALFORMED = {
    "yaml_syntax": (VALUES, VALUES[:-1], None, re.compile(r":\d+: \(yaml\): YAML syntax error")),
    "not_a_mapping": (SMALL, "- cooking\n- travel\n", "- cooking", "(file): a topics file is"),
    "unknown_top_level_key": (
        "preferences:\n",
        "author: me\npreferences:\n",
        "author: me",
        "author: unknown key (expected taxonomy, description, topics, preferences)",
    ),
    "unknown_preference_key": (
        "    extra: true",
        "    extra: true\n    colour: red",
        "colour: red",
        "preferences.cuisine.colour: unknown key",
    ),
    "replaced_heuristic_key": (
        "    extra: true",
        "    extra: true\n    aliases: [cuisine]",
        "aliases:",
        "preferences.cuisine.aliases: no longer supported: preferences name their taxonomy path",
    ),
    "missing_field": (
        "    label: favourite cuisine\n",
        "",
        "  cuisine:",
        "preferences.cuisine.label: missing",
    ),
    "missing_path": (
        "    path: food.cuisine\n",
        "",
        "  cuisine:",
        "preferences.cuisine.path: missing",
    ),
    "not_a_path": (
        "path: food.cuisine",
        "path: cuisine",
        "path: cuisine",
        "preferences.cuisine.path: 'cuisine' is not an attribute path",
    ),
    "extra_not_a_boolean": (
        "extra: true",
        "extra: maybe",
        "extra: maybe",
        "preferences.cuisine.extra: must be true or false",
    ),
    "missing_topics": (SMALL.split("preferences:")[0], "", "preferences:", "topics: missing"),
    "empty_list": (VALUES, "values: []", "values: []", "preferences.cuisine.values: empty list"),
    "empty_task_list": (
        "  cooking:\n    - plan dinners for the coming week\n",
        "  cooking: []\n",
        "cooking: []",
        "topics.cooking: empty list",
    ),
    "duplicate_value": (
        VALUES,
        "values: [Italian, italian, Mexican, Thai]",
        "values: [Italian",
        "preferences.cuisine.values[1]: duplicate 'italian'",
    ),
    "too_few_values": (
        VALUES,
        "values: [Italian, Japanese, Mexican]",
        "values: [Italian",
        "preferences.cuisine.values: needs at least 4 values (a probe offers 4 choices)",
    ),
    "too_few_reasons": (
        "      - a trip got them hooked on {new} food\n",
        "",
        "    reasons:",
        "preferences.cuisine.reasons: needs at least 4 reasons",
    ),
    "a_single_topic": (
        "  travel planning:\n    - plan a long weekend away\n",
        "",
        "topics:",
        "topics: needs at least two topics",
    ),
    "wrong_type_number": (
        VALUES,
        "values: [Italian, 42, Mexican, Thai]",
        "values: [Italian",
        "preferences.cuisine.values[1]: expected text, got the number 42 (quote it)",
    ),
    "wrong_type_list_not_text": (
        "label: favourite cuisine",
        "label: [favourite, cuisine]",
        "label: [",
        "preferences.cuisine.label: expected text, got a list",
    ),
    "wrong_type_text_not_list": (
        "topics: [cooking, travel planning]",
        "topics: cooking",
        "topics: cooking",
        "preferences.cuisine.topics: must be a list of texts, got 'cooking'",
    ),
    "unquoted_placeholder_first": (
        '"{old} lost its appeal and they went back to {new}"',
        "{old}",
        "- {old}",
        "preferences.cuisine.revert_reasons[0]: expected text, got a mapping (quote a text",
    ),
    "unknown_topic": (
        "topics: [cooking, travel planning]",
        "topics: [cooking, travelling]",
        "topics: [cooking, travelling]",
        "preferences.cuisine.topics[1]: unknown topic 'travelling' (topics: cooking, travel "
        "planning)",
    ),
    "duplicate_preference": (
        "    topics: [cooking, travel planning]\n",
        "    topics: [cooking, travel planning]\n  cuisine:\n    label: x\n",
        "  cuisine:\n    label: x",
        "preferences.cuisine: duplicate preference 'cuisine' (first at line 7)",
    ),
    "duplicate_path": (
        "    topics: [cooking, travel planning]\n",
        "    topics: [cooking, travel planning]\n"
        + SMALL.split("preferences:\n")[1].replace("  cuisine:", "  food:").split("\n", 1)[0]
        + "\n"
        + "\n".join(SMALL.split("preferences:\n")[1].splitlines()[1:])
        + "\n",
        "  food:",
        "preferences.food.path: food.cuisine is already the path of preference cuisine",
    ),
    "duplicate_topic": (
        "  travel planning:",
        "  cooking: [bake bread]\n  travel planning:",
        "cooking: [bake bread]",
        "topics.cooking: duplicate topic 'cooking' (first at line 2)",
    ),
    "placeholder_in_a_suggestion": (
        "suggestion: a {value} recipe",
        "suggestion: a {value} recipe instead of {old}",
        "suggestion:",
        "preferences.cuisine.suggestion: placeholder {old} not allowed here (use {value})",
    ),
    "suggestion_without_value": (
        "suggestion: a {value} recipe",
        "suggestion: a recipe",
        "suggestion:",
        "preferences.cuisine.suggestion: must use {value}",
    ),
    "placeholder_in_a_reason": (
        "cook {new} dishes",
        "cook {value} dishes",
        "cook {value} dishes",
        "preferences.cuisine.reasons[0]: placeholder {value} not allowed here (use {new}, {old})",
    ),
    "unmatched_brace": (
        "cook {new} dishes",
        "cook {new dishes",
        "cook {new dishes",
        "preferences.cuisine.reasons[0]: expected '}' before end of string",
    ),
    "placeholder_in_a_task": (
        "plan dinners for the coming week",
        "plan dinners for {new}",
        "plan dinners for {new}",
        "topics.cooking[0]: {new} is not filled in here",
    ),
    "placeholder_in_a_label": (
        "label: favourite cuisine",
        "label: favourite {value}",
        "label: favourite",
        "preferences.cuisine.label: {value} is not filled in here",
    ),
    "bad_preference_name": (
        "  cuisine:\n",
        "  Favourite Cuisine:\n",
        "Favourite Cuisine:",
        "preferences.Favourite Cuisine: a preference name is lower_snake_case",
    ),
    "when_syntax": (
        "  cooking:\n    - plan",
        "  cooking:\n    when: person.age >=\n    tasks:\n    - plan",
        "when: person.age",
        "topics.cooking.when: ",
    ),
    "unknown_topic_key": (
        "  cooking:\n    - plan",
        "  cooking:\n    if: person.age > 3\n    tasks:\n    - plan",
        "if: person",
        "topics.cooking.if: unknown key (expected when, tasks)",
    ),
    "task_without_text": (
        "    - plan dinners for the coming week",
        "    - when: person.age > 3",
        "- when: person",
        "topics.cooking[0].text: missing",
    ),
    "transition_to_itself": (
        VALUES,
        "transitions:\n      Italian: [Italian, Thai]\n      Thai: [Mexican, Japanese]",
        "Italian: [Italian",
        "preferences.cuisine.transitions.Italian: 'Italian' cannot change to itself",
    ),
    "transition_outside_the_values": (
        VALUES,
        VALUES + "\n    transitions:\n      Italian: [Korean]",
        "Italian: [Korean]",
        "preferences.cuisine.transitions.Italian: 'Korean' is not one of values:",
    ),
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_a_malformed_file_names_file_line_and_path(name: str, tmp_path: Path):
    old, new, fragment, expected = MALFORMED[name]
    assert old in SMALL
    text = SMALL.replace(old, new, 1)
    path, message = problems_of(tmp_path, text)
    if isinstance(expected, re.Pattern):
        assert re.search(re.escape(str(path)) + expected.pattern, message), message
        return
    line = line_of(text, fragment.splitlines()[0]) if fragment else 1
    if name == "duplicate_preference":
        line = line_of(text, "    label: x") - 1
    if name == "duplicate_path":  # the line of the second preference's path:
        line = line_of(text, "  food:") + 1
    assert f"{path}:{line}: {expected}" in message, message


# -- checked against the taxonomy ------------------------------------------------------------
CLINIC_TEXT = (DATA / "clinic.topics.yaml").read_text()
# (edit of clinic.topics.yaml: old -> new, fragment on the reported line, `path: problem`)
AGAINST_TAXONOMY = {
    "leaf_path_misspelt": (
        "path: care.pharmacy",
        "path: care.pharmacies",
        "path: care.pharmacies",
        "preferences.pharmacy.path: care.pharmacies is not a leaf of taxonomy clinic (did you "
        "mean care.pharmacy?); a preference outside the taxonomy says extra: true",
    ),
    "numeric_leaf": (
        "path: care.pharmacy",
        "path: patient.age",
        "path: patient.age",
        "preferences.pharmacy.path: patient.age is a numeric leaf; a changing preference needs "
        "a categorical leaf",
    ),
    "leaf_with_too_few_values": (
        "path: care.pharmacy",
        "path: care.interpreter",
        "path: care.interpreter",
        "preferences.pharmacy.values: care.interpreter has 2 values; a changing preference "
        "needs at least 4",
    ),
    "value_the_leaf_does_not_have": (
        "    label: preferred kind of exercise\n",
        "    label: preferred kind of exercise\n    values: [walking, swimming, cycling, rowing]\n",
        "values: [walking",
        "preferences.activity.values: 'rowing' is not a value of lifestyle.activity",
    ),
    "transition_the_leaf_does_not_have": (
        "quit: [smokes daily]",
        "quit: [vapes]",
        "    transitions:",
        "preferences.smoking.transitions: 'vapes' is not a value of lifestyle.smoking",
    ),
    "extra_inside_the_taxonomy": (
        "path: reminders.medication_reminder",
        "path: care.medication_reminder",
        "path: care.medication_reminder",
        "preferences.reminder.path: care.medication_reminder is inside taxonomy clinic (root "
        "category care); an extra path lies outside its root categories",
    ),
    "extra_without_values": (
        "    values: [phone alarm, pill box, a note on the fridge, a relative reminds them]\n",
        "",
        "path: reminders.medication_reminder",
        "preferences.reminder.values: reminders.medication_reminder is an extra path (not in "
        "taxonomy clinic): declare its values or transitions",
    ),
    "when_unknown_attribute": (
        "when: patient.age >= 65",
        "when: patient.years >= 65",
        "when: patient.years",
        "topics.healthy ageing.when: unknown attribute 'patient.years' in taxonomy clinic",
    ),
    "when_value_the_leaf_does_not_have": (
        "when: patient.condition == 'type 2 diabetes'",
        "when: patient.condition == 'diabetes'",
        "when: patient.condition == 'diabetes'",
        "topics.managing a condition.tasks[1].when: 'diabetes' is not a value of patient.condition",
    ),
    "when_on_a_generated_leaf": (
        "    when: patient.age >= 18",
        "    when: patient.worry == money",
        "when: patient.worry",
        "preferences.smoking.when: patient.worry is generated (free text)",
    ),
    "file_of_another_taxonomy": (
        "taxonomy: clinic",
        "taxonomy: human",
        "taxonomy: human",
        "taxonomy: this file is for taxonomy 'human', not 'clinic'",
    ),
}


@pytest.mark.parametrize("name", list(AGAINST_TAXONOMY))
def test_paths_and_conditions_are_checked_against_the_taxonomy(name: str, tmp_path: Path):
    old, new, fragment, expected = AGAINST_TAXONOMY[name]
    assert old in CLINIC_TEXT
    text = CLINIC_TEXT.replace(old, new, 1)
    load_catalogue(write(tmp_path / "unbound", text))  # fine on its own
    path, message = problems_of(tmp_path, text, CLINIC)
    line = line_of(text, fragment)
    assert f"{path}:{line}: {expected}" in message, message


def test_something_must_apply_to_every_persona(tmp_path: Path):
    text = SMALL.replace(
        "  cooking:\n    - plan", "  cooking:\n    when: patient.age > 40\n    tasks:\n    - plan"
    )
    text = text.replace(
        "  travel planning:\n    - plan",
        "  travel planning:\n    when: patient.age < 30\n    tasks:\n    - plan",
    )
    text = text.replace(
        "    extra: true\n", "    extra: true\n    when: patient.condition == asthma\n"
    )
    path, message = problems_of(tmp_path, text, CLINIC)
    assert f"{path}:1: topics: every topic (or each of its tasks) has a when: condition" in message
    assert (
        f"{path}:{line_of(text, 'preferences:')}: preferences: every preference has a when:"
        in message
    )


def test_every_problem_of_a_file_is_reported_together(tmp_path: Path):
    text = SMALL.replace(VALUES, "values: []").replace(
        "topics: [cooking, travel planning]", "topics: [baking]"
    )
    _, message = problems_of(tmp_path, text)
    assert message.splitlines()[0].endswith(": 2 problems")
    assert "values: empty list" in message and "unknown topic 'baking'" in message


def test_parse_from_text_names_memory():
    with pytest.raises(CatalogueError, match=r"<memory>:1: \(file\): a topics file is a mapping"):
        parse_catalogue("just text\n")


def test_a_file_that_is_not_utf8_names_the_line(tmp_path: Path):
    path = tmp_path / "topics.yaml"
    path.write_bytes(SMALL.encode().replace(b"Japanese", b"Japan\xe9se"))
    line = line_of(SMALL, "Japanese")
    with pytest.raises(UserError, match=re.escape(f"{path}:{line}: topics file is not UTF-8")):
        load_catalogue(path)


def test_a_missing_file_is_a_user_error(tmp_path: Path):
    with pytest.raises(UserError, match="cannot read topics file"):
        load_catalogue(tmp_path / "nope.yaml")


# -- which file serves a taxonomy ------------------------------------------------------------
@pytest.fixture
def project(tmp_path: Path) -> Project:
    (tmp_path / "taxonomies").mkdir()
    shutil.copy(REPO / "tests" / "data" / "taxonomies" / "mini.yaml", tmp_path / "taxonomies")
    return Project.locate(tmp_path)


def test_without_a_topics_file_the_packaged_default_serves(project: Project):
    taxonomy = project.taxonomy_path("mini")
    assert catalogue_path(project, taxonomy) == packaged_root() / "taxonomies" / "topics.yaml"


def test_the_project_topics_file_serves_taxonomies_without_their_own(project: Project):
    mine = write(project.taxonomies, SMALL)
    assert catalogue_path(project, project.taxonomy_path("mini")) == mine
    assert catalogue_notice(mine, project.taxonomy_path("mini"))
    human = packaged_root() / "taxonomies" / "human.topics.yaml"
    assert catalogue_path(project, project.taxonomy_path("human")) == human  # its own wins


def test_a_per_taxonomy_file_wins_over_topics_yaml(project: Project):
    write(project.taxonomies, SMALL)
    own = write(project.taxonomies, SMALL.replace("Japanese", "Korean"), "mini.topics.yaml")
    taxonomy = project.taxonomy_path("mini")
    assert catalogue_path(project, taxonomy) == own
    assert load_catalogue(catalogue_path(project, taxonomy)).preference("cuisine").values == (
        "Italian",
        "Korean",
        "Mexican",
        "Thai",
    )
    assert catalogue_path(project, project.taxonomy_path("k12_student")) == (
        packaged_root() / "taxonomies" / "k12_student.topics.yaml"
    )


def test_a_per_taxonomy_file_beside_a_taxonomy_given_by_path(tmp_path: Path, project: Project):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    taxonomy = Path(shutil.copy(project.taxonomies / "mini.yaml", elsewhere / "other.yaml"))
    own = write(elsewhere, SMALL, "other.topics.yaml")
    assert catalogue_path(project, taxonomy) == own


def test_topics_files_are_not_taxonomies(project: Project):
    write(project.taxonomies, SMALL)
    write(project.taxonomies, SMALL, "mini.topics.yaml")
    assert is_topics_file("taxonomies/topics.yaml") and is_topics_file("mini.topics.yaml")
    assert not is_topics_file("taxonomies/human.yaml")
    for name in ("topics", "mini.topics", str(project.taxonomies / "topics.yaml")):
        with pytest.raises(UserError, match="a topics file"):
            project.taxonomy_path(name)
    with pytest.raises(UserError) as info:
        project.taxonomy_path("martian")
    assert str(info.value).endswith(f"(known in {project.taxonomies}: mini)")
