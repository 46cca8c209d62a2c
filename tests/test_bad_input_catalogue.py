"""The bad input catalogue: every case drives the real CLI (`personaloom.cli.main`) on a copy
of a small corpus project (`--project`: taxonomies/, prompts/, validators/) holding one bad
file, or with one bad option, and checks the contract of exit code 2: the message names the
file and line, the option or the attribute path; nothing is written (the `--out` folder or
release target does not exist afterwards, or is unchanged); no traceback.

Everything is rejected while the run is being prepared, before any engine exists. As a
guard, generate cases run with `--engine openai` pointed at a closed local port: a case
that wrongly got through would fail fast with exit code 1 instead of loading vLLM.
`test_the_unmodified_project_is_valid` shows the starting point passes every check, so
each case fails because of its one change.
"""

from __future__ import annotations

import re
import shutil
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from personaloom.cli import build_parser, main
from tests.support.dataset import make_dataset

REPO = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data" / "taxonomies"
TAX = "taxonomies/mini.yaml"
RULES = "validators/rules_mini.yaml"
Expect = list[str | re.Pattern[str]]
Setup = Callable[[Path, Path], tuple[list[str], Expect]]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


GUARD = ["--engine", "openai", "--model", "m", "--base-url", f"http://127.0.0.1:{_closed_port()}"]


# -- helpers -------------------------------------------------------------------------------
def edit(path: Path, old: str, new: str) -> int:
    """Replace the first `old` in `path` by `new`; return the line where `new` starts."""
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    at = text.index(old)
    path.write_text(text[:at] + new + text[at + len(old) :])
    return text[:at].count("\n") + 1


def line_of(path: Path, text: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if text in line)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() if p.is_file() else b"<dir>"
        for p in sorted(folder.rglob("*"))
    }


@pytest.fixture(scope="module")
def project_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small, valid corpus project: the mini taxonomy, its rules, the shipped prompts and
    critic validators."""
    root = tmp_path_factory.mktemp("template") / "project"
    shutil.copytree(REPO / "prompts", root / "prompts")
    shutil.copytree(REPO / "validators", root / "validators")
    (root / "taxonomies").mkdir()
    shutil.copy(DATA / "mini.yaml", root / TAX)
    shutil.copy(DATA / "rules_mini.yaml", root / RULES)
    return root.resolve()


@pytest.fixture
def project(project_template: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(project_template, tmp_path / "project"))


def generate_args(out: Path, project: Path, extra: list[str]) -> list[str]:
    base = ["--taxonomy", "mini", "--personas", "2", "--sessions", "0", *GUARD]
    return ["generate", "--out", str(out), "--project", str(project), *base, *extra]


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse errors
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.err


def assert_named(err: str, expect: Expect) -> None:
    assert "Traceback" not in err, err
    for fragment in expect:
        if isinstance(fragment, re.Pattern):
            assert fragment.search(err), f"{fragment.pattern!r} not in:\n{err}"
        else:
            assert fragment in err, f"{fragment!r} not in:\n{err}"


# -- the catalogue: generate ------------------------------------------------------------------
CASES: dict[str, Setup] = {}


def case(fn: Setup) -> Setup:
    CASES[fn.__name__] = fn
    return fn


# taxonomy files
@case
def taxonomy_yaml_syntax_error(p: Path, t: Path):
    f = p / TAX
    edit(f, "anchors: [person.age_band, person.age, person.role]", "anchors: [person.age_band,")
    return [], [re.compile(re.escape(str(f)) + r":\d+: \(yaml\): YAML syntax error")]


@case
def taxonomy_without_a_name(p: Path, t: Path):
    f = p / TAX
    edit(f, "name: mini\n", "")
    return [], [re.compile(re.escape(str(f)) + r":\d+: name: missing")]


@case
def taxonomy_version_is_a_number(p: Path, t: Path):
    f = p / TAX
    line = edit(f, 'version: "0.1"', "version: 0.1")
    return [], [f"{f}:{line}: version: must be a non-empty string"]


@case
def taxonomy_unknown_top_level_key(p: Path, t: Path):
    f = p / TAX
    line = edit(f, "anchors:", "author: me\nanchors:")
    return [], [f"{f}:{line}: author: unknown top-level key"]


@case
def taxonomy_negative_weight(p: Path, t: Path):
    f = p / TAX
    line = edit(f, "{young: 1, middle: 1, old: 1}", "{young: -1, middle: 1, old: 1}")
    return [], [f"{f}:{line}: person.age_band: weight of 'young' is negative"]


@case
def taxonomy_all_weights_zero(p: Path, t: Path):
    f = p / TAX
    line = edit(f, "{pop: 5, jazz: 2, metal: 1}", "{pop: 0, jazz: 0, metal: 0}")
    return [], [f"{f}:{line}: taste.music.genre: all weights are zero"]


@case
def taxonomy_empty_value_list(p: Path, t: Path):
    f = p / TAX
    line = edit(f, "colour: [red, green, blue]", "colour: []")
    return [], [f"{f}:{line}: taste.colour: empty list of values"]


@case
def taxonomy_inverted_range(p: Path, t: Path):
    f = p / TAX
    line = edit(f, "range: [1, 8]", "range: [8, 1]")
    return [], [f"{f}:{line}: person.home.rooms: inverted range"]


@case
def taxonomy_range_of_words(p: Path, t: Path):
    f = p / TAX
    line = edit(f, "range: [10, 60]", "range: [ten, 60]")
    return [], [f"{f}:{line}: work.hours: range must be [min, max]"]


@case
def taxonomy_unknown_distribution(p: Path, t: Path):
    f = p / TAX
    line = edit(f, "distribution: normal\n      mean: 38", "distribution: gamma\n      mean: 38")
    return [], [f"{f}:{line}: work.hours: unknown distribution 'gamma'"]


@case
def taxonomy_when_names_an_unknown_attribute(p: Path, t: Path):
    f = p / TAX
    line = edit(f, "when: person.role == worker", "when: person.job == worker")
    return [], [f"{f}:{line}: work.salary: when: unknown attribute 'person.job'"]


@case
def taxonomy_when_compares_with_an_unknown_value(p: Path, t: Path):
    f = p / TAX
    line = edit(f, "when: person.role == worker", "when: person.role == pilot")
    return [], [f"{f}:{line}: work.salary: when: 'pilot' is not a value of person.role"]


@case
def taxonomy_when_tries_python(p: Path, t: Path):
    f = p / TAX
    line = edit(f, "when: person.role == worker", "when: __import__('os').system('id')")
    return [], [f"{f}:{line}: work.salary: when: unexpected character '.'"]


@case
def taxonomy_scale_given_an_unknown_attribute(p: Path, t: Path):
    f = p / TAX
    line = edit(f, "given: person.home.city", "given: person.home.town")
    return [], [f"{f}:{line}: work.salary: scale: unknown attribute 'person.home.town'"]


@case
def taxonomy_anchor_names_an_unknown_attribute(p: Path, t: Path):
    f = p / TAX
    line = edit(
        f, "anchors: [person.age_band, person.age, person.role]", "anchors: [person.height]"
    )
    return [], [f"{f}:{line}: anchors.person.height: unknown attribute"]


@case
def taxonomy_table_row_for_an_unknown_value(p: Path, t: Path):
    f = p / TAX
    line = edit(
        f, "        young: {student: 6, worker: 4}", "        teen: {student: 6, worker: 4}"
    )
    return [], [f"{f}:{line}: person.role.table[teen]: 'teen' is not a value of person.age_band"]


@case
def taxonomy_duplicate_leaf(p: Path, t: Path):
    f = p / TAX
    line = edit(f, "colour: [red, green, blue]", "colour: [red, green, blue]\n    colour: [cyan]")
    return [], [
        f"{f}:{line + 1}: taste.colour: duplicate key 'colour' (first defined at line {line})"
    ]


@case
def taxonomy_leaf_name_with_spaces(p: Path, t: Path):
    f = p / TAX
    line = edit(f, "colour: [red, green, blue]", "Favourite Colour: [red, green, blue]")
    return [], [f"{f}:{line}: taste.Favourite Colour:", "lower_snake_case"]


@case
def taxonomy_condition_cycle(p: Path, t: Path):
    f = p / TAX
    line = edit(
        f,
        "dish: [rice, bread, noodles]",
        "dish:\n        when: taste.food.spicy == hot\n        values: [rice, bread, noodles]",
    )
    return [], [f"{f}:{line + 1}: taste.food.dish: condition cycle"]


@case
def taxonomy_preset_with_a_misspelt_setting(p: Path, t: Path):
    f = p / TAX
    edit(f, "quick: {attributes_per_persona: 8,", "quick: {attributes_per_persons: 8,")
    return [], [re.compile(re.escape(str(f)) + r":\d+: sampling\.attributes_per_persons")]


@case
def taxonomy_that_is_a_list(p: Path, t: Path):
    f = p / TAX
    f.write_text("- person\n- age\n")
    return [], [f"{f}:1: (file): a taxonomy is a mapping"]


@case
def taxonomy_not_utf8(p: Path, t: Path):
    f = p / TAX
    f.write_bytes(f.read_bytes().replace(b"Lyon", b"Ly\xf6n"))
    line = next(i for i, s in enumerate(f.read_bytes().split(b"\n"), 1) if b"Ly\xf6n" in s)
    return [], [f"{f}:{line}: taxonomy is not UTF-8 text"]


# rule files
@case
def rule_names_an_unknown_attribute(p: Path, t: Path):
    f = p / RULES
    line = edit(f, "if: person.age < 60", "if: person.height < 60")
    return [], [f"{f}:{line}: young_are_not_retired: if: unknown attribute 'person.height'"]


@case
def rule_expression_syntax_error(p: Path, t: Path):
    f = p / RULES
    line = edit(f, "if: person.age < 60", "if: person.age <")
    return [], [f"{f}:{line}: young_are_not_retired: if: expected a value"]


@case
def rule_expression_tries_python(p: Path, t: Path):
    f = p / RULES
    line = edit(f, "if: person.age < 60", "if: __import__('os').system('id') == 0")
    return [], [f"{f}:{line}: young_are_not_retired: if: unexpected character '.'"]


@case
def rule_compares_a_number_with_text(p: Path, t: Path):
    f = p / RULES
    line = edit(f, "then: person.role != retired", "then: person.age == retired")
    return [], [f"{f}:{line}: young_are_not_retired: then:", "compares numeric with text"]


@case
def rule_compares_with_an_unknown_value(p: Path, t: Path):
    f = p / RULES
    line = edit(f, "then: person.role != retired", "then: person.role != pilot")
    return [], [f"{f}:{line}: young_are_not_retired: then: 'pilot' is not a value of person.role"]


@case
def rule_without_a_name(p: Path, t: Path):
    f = p / RULES
    line = edit(f, "- name: young_are_not_retired\n    if:", "- if:")
    return [], [f"{f}:{line}: rules[0]: missing name"]


@case
def rule_with_if_but_no_then(p: Path, t: Path):
    f = p / RULES
    edit(f, "    then: person.role != retired\n", "")
    line = line_of(f, "- name: young_are_not_retired")
    return [], [f"{f}:{line}: young_are_not_retired: needs if: and then: (or forbid:)"]


@case
def rule_with_both_forbid_and_if(p: Path, t: Path):
    f = p / RULES
    edit(
        f,
        "forbid: person.role == student and person.age > 29",
        "forbid: person.role == student\n    if: person.age > 29",
    )
    line = line_of(f, "- name: students_are_young")
    return [], [f"{f}:{line}: students_are_young: use either forbid: or if:/then:, not both"]


@case
def rule_resamples_an_attribute_it_does_not_name(p: Path, t: Path):
    f = p / RULES
    line = edit(f, "resample: work.salary", "resample: taste.colour")
    return [], [f"{f}:{line}: no_rich_teens: resample: taste.colour is not named by the rule"]


@case
def rule_name_used_twice(p: Path, t: Path):
    f = p / RULES
    line = edit(f, "name: students_are_young", "name: young_are_not_retired")
    return [], [f"{f}:{line}: young_are_not_retired: duplicate rule name (first at line 3)"]


@case
def rule_with_an_unknown_key(p: Path, t: Path):
    f = p / RULES
    line = edit(f, "resample: work.salary", "resample: work.salary\n    severity: high") + 1
    return [], [f"{f}:{line}: no_rich_teens: unknown key 'severity'"]


@case
def rule_file_yaml_syntax_error(p: Path, t: Path):
    f = p / RULES
    edit(f, "forbid: person.role == student", "forbid: [person.role == student")
    return [], [re.compile(re.escape(str(f)) + r":\d+: \(yaml\): YAML syntax error")]


@case
def rule_file_not_utf8(p: Path, t: Path):
    f = p / RULES
    f.write_bytes(f.read_bytes() + b"# caf\xe9\n")
    lines = f.read_bytes().count(b"\n")
    return [], [f"{f}:{lines}: rule file is not UTF-8 text"]


# topics files (checked when the run has sessions)
def topics_file(p: Path, name: str = "topics.yaml") -> Path:
    f = p / "taxonomies" / name
    shutil.copy(REPO / "taxonomies" / "topics.yaml", f)
    return f


@case
def topics_preference_names_an_unknown_topic(p: Path, t: Path):
    f = topics_file(p)
    line = edit(
        f, "topics: [explanations, everyday questions", "topics: [baking, everyday questions"
    )
    return ["--sessions", "1"], [
        f"{f}:{line}: preferences.answer_length.topics[0]: unknown topic 'baking'"
    ]


@case
def topics_placeholder_where_it_is_not_filled_in(p: Path, t: Path):
    f = topics_file(p)
    line = edit(f, 'suggestion: "an answer as {value}"', 'suggestion: "an answer as {new}"')
    return ["--sessions", "1"], [
        f"{f}:{line}: preferences.answer_length.suggestion: placeholder {{new}} not allowed here"
    ]


@case
def topics_file_of_the_taxonomy_yaml_syntax_error(p: Path, t: Path):
    topics_file(p)  # a valid topics.yaml: the taxonomy's own file wins over it
    f = topics_file(p, "mini.topics.yaml")
    edit(f, "label: preferred length of answers", "label: [preferred length of answers")
    return ["--sessions", "1"], [re.compile(re.escape(str(f)) + r":\d+: \(yaml\): YAML syntax")]


@case
def topics_preference_path_not_in_the_taxonomy(p: Path, t: Path):
    f = topics_file(p, "mini.topics.yaml")
    edit(f, "    extra: true\n", "")
    line = line_of(f, "path: assistant_preferences.answer_length")
    return ["--sessions", "1"], [
        f"{f}:{line}: preferences.answer_length.path: assistant_preferences.answer_length is "
        "not a leaf of taxonomy mini"
    ]


@case
def topics_when_reads_an_unknown_attribute(p: Path, t: Path):
    f = topics_file(p, "mini.topics.yaml")
    line = (
        edit(
            f,
            "  planning:\n    - plan the week ahead\n",
            "  planning:\n    when: person.salary > 3\n    tasks:\n    - plan the week ahead\n",
        )
        + 1
    )
    return ["--sessions", "1"], [
        f"{f}:{line}: topics.planning.when: unknown attribute 'person.salary' in taxonomy mini"
    ]


# prompt templates
@case
def template_undefined_variable_in_a_branch_the_check_does_not_take(p: Path, t: Path):
    f = p / "prompts" / "persona_enrich.j2"
    line = edit(f, "{{ fewshot }}", "{{ fewshots }}")
    return [], [f"{f}:{line}: undefined variable in template: 'fewshots'"]


@case
def template_undefined_attribute(p: Path, t: Path):
    f = p / "prompts" / "persona_enrich.j2"
    line = edit(f, "- {{ field.key }}:", "- {{ field.label }}:")
    return [], [f"{f}:{line}: undefined variable in template:", "'label'"]


@case
def template_of_the_conversation_stage_undefined_variable(p: Path, t: Path):
    f = p / "prompts" / "user_simulator_turn.j2"
    line = edit(f, "{{ t.speaker }}", "{{ speaker }}")
    return ["--sessions", "1"], [f"{f}:{line}: undefined variable in template: 'speaker'"]


@case
def template_of_a_judge_undefined_variable(p: Path, t: Path):
    f = p / "prompts" / "judge_safety.j2"
    line = edit(f, "{{ text }}", "{{ txt }}")
    return [], [f"{f}:{line}: undefined variable in template: 'txt'"]


@case
def template_syntax_error(p: Path, t: Path):
    f = p / "prompts" / "persona_narrate.j2"
    f.write_text("Write the {{ section }}.\n{% if guide %}\n{{ guide }}\n")
    return [], [f"{f}:3: template syntax error: Unexpected end of template"]


@case
def template_unknown_filter(p: Path, t: Path):
    f = p / "prompts" / "system_writer.j2"
    f.write_text("You are a writer.\n{{ 'x' | shout }}\n")
    return [], [f"{f}:2: template syntax error: No filter named 'shout'"]


@case
def template_reaches_for_subclasses(p: Path, t: Path):
    f = p / "prompts" / "system_writer.j2"
    f.write_text("You are a writer.\n{{ ''.__class__.__mro__[1].__subclasses__() }}\n")
    return [], [f"{f}:2: template refused by the sandbox:", "'__class__'"]


@case
def template_reaches_for_os_through_globals(p: Path, t: Path):
    f = p / "prompts" / "system_writer.j2"
    f.write_text("{{ cycler.__init__.__globals__.os.popen('id').read() }}\n")
    return [], [f"{f}:1: template refused by the sandbox:", "'__globals__' is unsafe"]


@case
def template_reaches_for_the_render_context(p: Path, t: Path):
    f = p / "prompts" / "system_writer.j2"
    f.write_text("{{ self._TemplateReference__context }}\n")
    return [], [f"{f}:1: template refused by the sandbox:", "'_TemplateReference__context'"]


@case
def template_reaches_for_internals_by_subscript(p: Path, t: Path):
    f = p / "prompts" / "persona_enrich.j2"
    line = edit(f, "- {{ line }}", "- {{ line['__class__'] }}")
    return [], [f"{f}:{line}: template refused by the sandbox:", "'__class__'"]


@case
def template_modifies_its_data(p: Path, t: Path):
    f = p / "prompts" / "persona_enrich.j2"
    line = edit(f, "{{ fewshot }}", "{{ fields.append(fewshot) }}")
    return [], [f"{f}:{line}: template refused by the sandbox:", ".append()"]


@case
def template_builds_a_huge_range(p: Path, t: Path):
    f = p / "prompts" / "system_writer.j2"
    f.write_text("You are a writer.\n{{ range(10**9) | list | length }}\n")
    return [], [f"{f}:2: template failed: OverflowError"]


@case
def template_divides_by_zero(p: Path, t: Path):
    f = p / "prompts" / "system_writer.j2"
    f.write_text("You are a writer.\n\n{{ 1 / 0 }}\n")
    return [], [f"{f}:3: template failed: ZeroDivisionError"]


@case
def template_includes_a_file_outside_the_prompts_folder(p: Path, t: Path):
    f = p / "prompts" / "system_writer.j2"
    f.write_text("You are a writer.\n{% include '../../../../../etc/passwd' %}\n")
    return [], [f"{f}:2: template includes '../../../../../etc/passwd'", "not a template in"]


@case
def template_file_missing(p: Path, t: Path):
    f = p / "prompts" / "persona_enrich.j2"
    f.unlink()
    return [], [f"{f}: prompt template not found"]


@case
def template_not_utf8(p: Path, t: Path):
    f = p / "prompts" / "system_writer.j2"
    f.write_bytes(b"You are a writer.\nNa\xefve.\n")
    return [], [f"{f}:2: not UTF-8 text"]


# critic settings and plug-ins (validators/)
@case
def critic_settings_unknown_setting(p: Path, t: Path):
    f = p / "validators" / "critics.yaml"
    edit(f, "min_ascii_letter_ratio: 0.9", "min_ascii_letter_ratioo: 0.9")
    return [], [f"{f}: rules.language.min_ascii_letter_ratioo: unknown setting"]


@case
def critic_settings_yaml_syntax_error(p: Path, t: Path):
    f = p / "validators" / "critics.yaml"
    edit(f, "persona: [faithfulness, naturalness, safety]", "persona: [faithfulness: x")
    return [], [re.compile(re.escape(str(f)) + r":\d+: YAML syntax error")]


@case
def critic_plugin_syntax_error(p: Path, t: Path):
    f = p / "validators" / "critics" / "length.py"
    f.write_text('"""A broken plug-in."""\n\ndef check(:\n')
    return [], [f"{f}:3: syntax error in critic plug-in"]


# run configs (--config FILE)
@case
def config_unknown_key(p: Path, t: Path):
    f = t / "run.yaml"
    f.write_text("personas: 3\npersonaz: 4\n")
    return ["--config", str(f)], [f"{f}: personaz: Extra inputs are not permitted"]


@case
def config_yaml_syntax_error(p: Path, t: Path):
    f = t / "run.yaml"
    f.write_text("personas: 3\nseed: [1,\n")
    return ["--config", str(f)], [re.compile(re.escape(str(f)) + r":\d+: invalid YAML")]


@case
def config_value_of_the_wrong_type(p: Path, t: Path):
    f = t / "run.yaml"
    f.write_text("turns: many\n")
    return ["--config", str(f)], [f"{f}: turns: Input should be a valid integer"]


@case
def config_that_is_a_list(p: Path, t: Path):
    f = t / "run.yaml"
    f.write_text("- personas: 3\n")
    return ["--config", str(f)], [f"{f}: expected a mapping of run options"]


@case
def config_probability_above_one(p: Path, t: Path):
    f = t / "run.yaml"
    f.write_text("update_probability: 2\n")
    return ["--config", str(f)], [f"{f}: update_probability: Input should be less than or equal"]


@case
def config_unknown_conversation_mode(p: Path, t: Path):
    f = t / "run.yaml"
    f.write_text("conversation_mode: telepathy\n")
    return ["--config", str(f)], [
        f"{f}: conversation_mode:",
        "Input should be 'turns' or 'one_call'",
    ]


@case
def config_token_budget_too_small(p: Path, t: Path):
    f = t / "run.yaml"
    f.write_text("max_tokens_section: 1\n")
    return ["--config", str(f)], [f"{f}: max_tokens_section: Input should be greater than"]


@case
def config_quota_on_an_unknown_attribute(p: Path, t: Path):
    f = t / "run.yaml"
    f.write_text("quotas: [person.height=uniform]\n")
    return ["--config", str(f)], ["--quota person.height=uniform", "unknown attribute"]


@case
def config_path_is_a_folder(p: Path, t: Path):
    return ["--config", str(t)], [f"--config {t}: no such file"]


@case
def config_shard_out_of_range(p: Path, t: Path):
    f = t / "run.yaml"
    f.write_text("shard: {index: 5, count: 2}\n")
    return ["--config", str(f)], [
        f"{f}: shard: Value error, need count >= 1 and 0 <= index < count"
    ]


@case
def config_not_utf8(p: Path, t: Path):
    f = t / "run.yaml"
    f.write_bytes(b"seed: 1\npersonas: \xff\n")
    return ["--config", str(f)], [f"{f}:2: run config is not UTF-8"]


@case
def project_flow_file_syntax_error(p: Path, t: Path):
    (p / "flows").mkdir(exist_ok=True)
    (p / "flows" / "build_corpus.py").write_text("from prefect import flow\n\ndef broken(:\n")
    return [], [f"{p / 'flows' / 'build_corpus.py'}:3: syntax error in flow file"]


# command-line options
@case
def option_unknown_judge_mode(p: Path, t: Path):
    return ["--judges", "strict"], [
        "--judges: Input should be 'auto', 'filter', 'advisory' or 'off'"
    ]


@case
def option_batch_size_zero(p: Path, t: Path):
    return ["--batch-size", "0"], ["--batch-size: Input should be greater than or equal to 1"]


@case
def option_negative_seed(p: Path, t: Path):
    return ["--seed", "-1"], ["--seed: Input should be greater than or equal to 0"]


@case
def option_too_many_turns(p: Path, t: Path):
    return ["--turns", "21"], ["--turns: Input should be less than or equal to 20"]


@case
def option_too_many_critic_rounds(p: Path, t: Path):
    return ["--critic-rounds", "11"], ["--critic-rounds: Input should be less than or equal"]


@case
def option_negative_sessions(p: Path, t: Path):
    return ["--sessions", "-2"], ["--sessions: Input should be greater than or equal to 0"]


@case
def option_shard_of_zero_workers(p: Path, t: Path):
    return ["--shard", "1/0"], [
        "--shard: Value error, need count >= 1 and 0 <= index < count, got 1/0"
    ]


@case
def option_personas_not_a_number(p: Path, t: Path):
    return ["--personas", "abc"], ["--personas: invalid int value: 'abc'"]


@case
def option_quota_without_shares(p: Path, t: Path):
    return ["--quota", "person.age_band"], ["--quota person.age_band: expected PATH=uniform"]


@case
def option_quota_with_an_unknown_value(p: Path, t: Path):
    return ["--quota", "person.age_band=young:2,ancient:1"], [
        "--quota person.age_band=young:2,ancient:1: 'ancient' is not a value of person.age_band"
    ]


@case
def option_quota_on_a_numeric_attribute(p: Path, t: Path):
    return ["--quota", "person.age=uniform"], ["--quota person.age=uniform: person.age is numeric"]


@case
def option_unknown_taxonomy_name(p: Path, t: Path):
    return ["--taxonomy", "martian"], [
        "--taxonomy martian: unknown taxonomy",
        str(p / "taxonomies"),
    ]


@case
def option_taxonomy_path_is_a_folder(p: Path, t: Path):
    return ["--taxonomy", f"{p / 'taxonomies'}/"], [f"--taxonomy {p / 'taxonomies'}/: no such file"]


@case
def option_project_is_not_a_folder(p: Path, t: Path):
    f = t / "project.txt"
    f.write_text("not a project\n")
    return ["--project", str(f)], [f"--project {f}: not a directory"]


@case
def option_base_url_without_scheme(p: Path, t: Path):
    return ["--base-url", "localhost:8000"], [
        "--base-url localhost:8000: expected an http(s):// URL"
    ]


@case
def option_out_on_a_file_system_that_refuses_writes(p: Path, t: Path):
    out = "/sys/fs/personaloom-catalogue-out"
    return ["--out", out], [f"--out {out}: /sys/fs is not writable"]


@case
def option_out_below_a_file(p: Path, t: Path):
    (t / "blocker").write_text("x")
    out = t / "blocker" / "corpus"
    return ["--out", str(out)], [f"--out {out}: {t / 'blocker'} is not a directory"]


@case
def option_out_is_a_foreign_folder(p: Path, t: Path):
    out = t / "photos"
    out.mkdir()
    (out / "holiday.jpg").write_bytes(b"\xff\xd8")
    return ["--out", str(out)], [f"--out {out}: folder is not empty and holds no personaloom run"]


@pytest.mark.parametrize("name", list(CASES))
def test_bad_generate_input_exits_2_names_the_place_and_writes_nothing(
    name: str, project: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    extra, expect = CASES[name](project, work)
    out = tmp_path / "corpus"
    argv = generate_args(out, project, extra)
    chosen = Path(argv[len(argv) - 1 - argv[::-1].index("--out") + 1])  # the last --out wins
    before = snapshot(chosen) if chosen.is_dir() else None
    project_before = snapshot(project)
    code, err = run_cli(argv, capsys)
    assert code == 2, err
    assert_named(err, expect)
    if before is None:
        assert not chosen.exists(), sorted(p.name for p in chosen.rglob("*"))
    else:
        assert snapshot(chosen) == before
    assert snapshot(project) == project_before


def test_the_unmodified_project_is_valid(project: Path, tmp_path: Path) -> None:
    """The starting point of every case passes all checks of a run's preparation."""
    from personaloom.cli.generate import build_config
    from personaloom.run import pipeline

    args = build_parser().parse_args(
        generate_args(tmp_path / "corpus", project, ["--sessions", "1"])
    )
    run = pipeline.prepare(build_config(args), tmp_path / "corpus", project_dir=args.project)
    assert run.taxonomy_path == project / TAX
    assert run.state.read_manifest()["status"] == "running"


# -- the catalogue: release -----------------------------------------------------------------
@pytest.fixture(scope="module")
def dataset_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dataset") / "corpus"
    make_dataset(out)
    return out


def _mark_unfinished(dataset: Path) -> None:
    path = dataset / ".personaloom" / "manifest.json"
    path.write_text(
        path.read_text().replace(
            '"personaloom_version"', '"status": "finalizing",\n  "personaloom_version"', 1
        )
    )


RELEASE_CASES = {
    # --to that is neither hf://datasets/ORG/NAME nor a usable local path
    "to_hub_with_one_slash": (
        ["--to", "hf:/datasets/acme/personas"],
        ["--to hf:/datasets/acme/personas: expected hf://datasets/ORG/NAME"],
    ),
    "to_hub_space": (
        ["--to", "hf://spaces/acme/demo"],
        ["--to hf://spaces/acme/demo: expected hf://datasets/ORG/NAME"],
    ),
    "to_hub_with_a_revision": (
        ["--to", "hf://datasets/acme/personas@main"],
        ["--to hf://datasets/acme/personas@main:"],
    ),
    "to_hub_with_three_parts": (
        ["--to", "hf://datasets/acme/personas/v2"],
        ["--to hf://datasets/acme/personas/v2:"],
    ),
    "to_hub_dotdot": (
        ["--to", "hf://datasets/acme/per..sonas"],
        ["--to hf://datasets/acme/per..sonas:"],
    ),
    "to_ssh_url": (
        ["--to", "ssh://git@example.com/acme/personas.git"],
        ["--to ssh://git@example.com/acme/personas.git: neither"],
    ),
    "to_unwritable_place": (
        ["--to", "/sys/fs/personaloom-catalogue-repo"],
        ["--to /sys/fs/personaloom-catalogue-repo: cannot create it"],
    ),
    "tag_with_build_metadata": (
        ["--tag", "v1.0.0+build"],
        ["--tag v1.0.0+build: must look like vX.Y.Z"],
    ),
    "empty_message": (["--message", "  "], ["--message: empty"]),
    "unfinished_run": (
        [],
        [
            re.compile(
                r"DIR \S+: its run is not complete \(\S+manifest\.json says status 'finalizing'\)"
            )
        ],
    ),
}


@pytest.mark.parametrize("name", list(RELEASE_CASES))
def test_bad_release_input_exits_2_names_the_option_and_writes_nothing(
    name: str, dataset_template: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dataset = Path(shutil.copytree(dataset_template, tmp_path / "corpus"))
    if name == "unfinished_run":
        _mark_unfinished(dataset)
    options, expect = RELEASE_CASES[name]
    target = tmp_path / "repo"
    argv = ["release", str(dataset), "--to", str(target), *options]
    chosen = Path(argv[len(argv) - 1 - argv[::-1].index("--to") + 1])
    before = snapshot(dataset)
    code, err = run_cli(argv, capsys)
    assert code == 2, err
    assert_named(err, expect)
    assert not target.exists() and not chosen.exists()
    assert snapshot(dataset) == before


def test_release_of_a_missing_folder_names_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = run_cli(["release", str(tmp_path / "nope"), "--to", str(tmp_path / "repo")], capsys)
    assert code == 2
    assert_named(err, [f"DIR {tmp_path / 'nope'}: does not exist"])
    assert not (tmp_path / "repo").exists()


def test_a_secret_inside_an_option_is_refused_and_never_stored(
    project: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    """Run state is stored in the clear, so an option holding HF_TOKEN's value is refused."""
    token = "hf_catalogueSecret0123456789"
    monkeypatch.setenv("HF_TOKEN", token)
    out = tmp_path / "corpus"
    argv = generate_args(out, project, [])
    argv[argv.index("--base-url") + 1] = f"http://user:{token}@127.0.0.1:{_closed_port()}"
    code, err = run_cli(argv, capsys)
    assert code == 2, err
    assert "run options: an option holds the value of a secret" in err
    assert token not in err and not out.exists()
