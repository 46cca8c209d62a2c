"""Taxonomy format: loading, validation errors (file, line, attribute path), default taxonomies."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from personaloom.cli import main
from personaloom.errors import UserError
from personaloom.taxonomy import Taxonomy, TaxonomyError, load_taxonomy, parse_taxonomy

REPO = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data" / "taxonomies"

HEADER = 'name: bad\nversion: "1"\n'


def _case(body: str) -> tuple[str, int]:
    """Full YAML text of a case and the 1-based line marked with `#!`."""
    text = HEADER + textwrap.dedent(body).lstrip("\n")
    marked = [i + 1 for i, line in enumerate(text.splitlines()) if line.rstrip().endswith("#!")]
    assert len(marked) == 1, "each case marks exactly one line with #!"
    return text, marked[0]


# (id, body with the offending line marked `#!`, attribute path expected, message fragment)
MALFORMED = [
    (
        "yaml_syntax",
        """
        categories:
          a:
            b: [x, y
            c: [z]  #!
        """,
        "(yaml)",
        "YAML syntax error",
    ),
    (
        "duplicate_category_key",
        """
        categories:
          a:
            b: [x, y]
            b: [z]  #!
        """,
        "a.b",
        "duplicate key",
    ),
    (
        "duplicate_value_key",
        """
        categories:
          a:
            b:
              values:
                x: 1
                x: 2  #!
        """,
        "a.b.values.x",
        "duplicate key",
    ),
    (
        "duplicate_root_category",
        """
        categories:
          a:
            b: [x]
          a:  #!
            c: [y]
        """,
        "a",
        "duplicate key",
    ),
    (
        "unknown_reference_in_when",
        """
        categories:
          a:
            b: [x, y]
            c:
              when: a.nope == x  #!
              values: [p, q]
        """,
        "a.c",
        "unknown attribute 'a.nope'",
    ),
    (
        "unknown_reference_in_given",
        """
        categories:
          a:
            c:
              given: a.missing  #!
              table:
                x: [p, q]
        """,
        "a.c",
        "unknown attribute 'a.missing'",
    ),
    (
        "condition_cycle",
        """
        categories:
          a:
            b:
              when: a.c == p  #!
              values: [x, y]
            c:
              when: a.b == x
              values: [p, q]
        """,
        "a.b",
        "condition cycle: a.b -> a.c -> a.b",
    ),
    (
        "self_reference",
        """
        categories:
          a:
            b:
              when: a.b == x  #!
              values: [x, y]
        """,
        "a.b",
        "condition cycle: a.b -> a.b",
    ),
    (
        "empty_weights",
        """
        categories:
          a:
            b:
              values: {}  #!
        """,
        "a.b",
        "empty weight table",
    ),
    (
        "negative_weight",
        """
        categories:
          a:
            b:
              values:
                x: 3
                y: -1  #!
        """,
        "a.b",
        "weight of 'y' is negative",
    ),
    (
        "non_numeric_weight",
        """
        categories:
          a:
            b:
              values:
                x: lots  #!
                y: 1
        """,
        "a.b",
        "weight of 'x' must be a number",
    ),
    (
        "all_zero_weights",
        """
        categories:
          a:
            b:
              values: {x: 0, y: 0}  #!
        """,
        "a.b",
        "all weights are zero",
    ),
    (
        "inverted_range",
        """
        categories:
          a:
            n:
              kind: numeric
              range: [10, 2]  #!
        """,
        "a.n",
        "inverted range",
    ),
    (
        "empty_range",
        """
        categories:
          a:
            n:
              kind: numeric
              range: [3.5, 3.5]  #!
        """,
        "a.n",
        "empty range",
    ),
    (
        "integer_range_without_whole_number",
        """
        categories:
          a:
            n:
              kind: numeric
              integer: true
              range: [1.2, 1.8]  #!
        """,
        "a.n",
        "no whole number",
    ),
    (
        "range_not_two_numbers",
        """
        categories:
          a:
            n:
              kind: numeric
              range: [1, two]  #!
        """,
        "a.n",
        "range must be [min, max]",
    ),
    (
        "duplicate_path_via_dotted_key",
        """
        categories:
          a:
            b:
              c: [x]
            b.c: [y]  #!
        """,
        "a.b.c",
        "duplicate path",
    ),
    (
        "unknown_kind",
        """
        categories:
          a:
            b:
              kind: ordinal  #!
              values: [x, y]
        """,
        "a.b",
        "unknown kind 'ordinal'",
    ),
    (
        "condition_on_later_attribute",
        """
        categories:
          a:
            b:
              when: a.c == p  #!
              values: [x, y]
            c: [p, q]
        """,
        "a.b",
        "depends on a.c, which is sampled later",
    ),
    (
        "given_on_later_attribute",
        """
        categories:
          a:
            b:
              given: a.c  #!
              table:
                p: [x]
                q: [y]
            c: [p, q]
        """,
        "a.b",
        "sampled later",
    ),
    (
        "unknown_leaf_key",
        """
        categories:
          a:
            n:
              kind: numeric
              range: [1, 2]
              rnage: [1, 3]  #!
        """,
        "a.n",
        "unknown key 'rnage'",
    ),
    (
        "key_not_for_kind",
        """
        categories:
          a:
            b:
              kind: categorical
              values: [x, y]
              unit: cm  #!
        """,
        "a.b",
        "'unit' does not apply to a categorical leaf",
    ),
    (
        "generated_without_description",
        """
        categories:
          a:
            b:  #!
              kind: generated
        """,
        "a.b",
        "needs a description",
    ),
    (
        "normal_without_sd",
        """
        categories:
          a:
            n:  #!
              kind: numeric
              range: [0, 10]
              distribution: normal
              mean: 5
        """,
        "a.n",
        "needs mean and sd",
    ),
    (
        "non_positive_sd",
        """
        categories:
          a:
            n:
              kind: numeric
              range: [0, 10]
              distribution: normal
              mean: 5
              sd: 0  #!
        """,
        "a.n",
        "sd must be > 0",
    ),
    (
        "non_positive_lognormal_median",
        """
        categories:
          a:
            n:
              kind: numeric
              range: [0, 10]
              distribution: lognormal
              median: -2  #!
              sigma: 1
        """,
        "a.n",
        "median must be > 0",
    ),
    (
        "unknown_distribution",
        """
        categories:
          a:
            n:
              kind: numeric
              range: [0, 10]
              distribution: poisson  #!
        """,
        "a.n",
        "unknown distribution 'poisson'",
    ),
    (
        "table_row_for_unknown_value",
        """
        categories:
          a:
            b: [x, y]
            c:
              given: a.b
              values: [p, q]
              table:
                z: [p]  #!
        """,
        "a.c.table[z]",
        "'z' is not a value of a.b",
    ),
    (
        "table_missing_row_without_default",
        """
        categories:
          a:
            b: [x, y]
            c:  #!
              given: a.b
              table:
                x: [p, q]
        """,
        "a.c",
        "no row for 'y'",
    ),
    (
        "given_numeric_attribute",
        """
        categories:
          a:
            n: {kind: numeric, range: [0, 1]}
            c:
              given: a.n  #!
              table:
                x: [p]
        """,
        "a.c",
        "a.n is numeric",
    ),
    (
        "when_reads_generated_leaf",
        """
        categories:
          a:
            g: a free-text note
            c:
              when: a.g == x  #!
              values: [p, q]
        """,
        "a.c",
        "a.g is generated",
    ),
    (
        "when_syntax_error",
        """
        categories:
          a:
            b: [x, y]
            c:
              when: a.b == == x  #!
              values: [p, q]
        """,
        "a.c",
        "when: expected a value",
    ),
    (
        "when_unknown_value",
        """
        categories:
          a:
            b: [x, y]
            c:
              when: a.b == zz  #!
              values: [p, q]
        """,
        "a.c",
        "'zz' is not a value of a.b",
    ),
    (
        "when_orders_categories",
        """
        categories:
          a:
            b: [x, y]
            c:
              when: a.b < x  #!
              values: [p, q]
        """,
        "a.c",
        "categorical values take == != or in",
    ),
    (
        "unquoted_yes_value",
        """
        categories:
          a:
            b:
              values:
                yes: 2  #!
                maybe: 1
        """,
        "a.b",
        "quote it",
    ),
    (
        "unknown_anchor",
        """
        anchors:
          - a.nope  #!
        categories:
          a:
            b: [x]
        """,
        "anchors.a.nope",
        "unknown attribute",
    ),
    (
        "generated_anchor",
        """
        anchors:
          - a.g  #!
        categories:
          a:
            g: a note
        """,
        "anchors.a.g",
        "cannot be an anchor",
    ),
    (
        "uppercase_name",
        """
        categories:
          a:
            Eye Colour: [brown, blue]  #!
        """,
        "a.Eye Colour",
        "lower_snake_case",
    ),
    (
        "empty_category",
        """
        categories:
          a:
            b:  #!
              description: nothing under here
        """,
        "a.b",
        "empty category",
    ),
    (
        "multi_given_row_arity",
        """
        categories:
          a:
            b: [x, y]
            c: [p, q]
            d:
              given: [a.b, a.c]
              values: [m, n]
              table:
                "x": [m]  #!
        """,
        "a.d.table[x]",
        "row key has 1 part(s) but given names 2",
    ),
    (
        "unknown_top_level_key",
        """
        categorie:  #!
          a:
            b: [x]
        """,
        "categorie",
        "unknown top-level key",
    ),
    (
        "negative_scale_factor",
        """
        categories:
          a:
            b: [x, y]
            n:
              kind: numeric
              range: [1, 2]
              scale:
                given: a.b
                factors:
                  x: -2  #!
        """,
        "a.n",
        "scale factor of 'x' must be a positive number",
    ),
    (
        "values_of_wrong_type",
        """
        categories:
          a:
            b:
              values: 12  #!
        """,
        "a.b",
        "values must be a list or a mapping",
    ),
    (
        "duplicate_list_value",
        """
        categories:
          a:
            b:
              - x
              - y
              - x  #!
        """,
        "a.b",
        "duplicate value 'x'",
    ),
    (
        "bad_sampling_mix",
        """
        sampling:
          mix:
            near: -1  #!
        categories:
          a:
            b: [x]
        """,
        "sampling.mix.near",
        "greater than or equal to 0",
    ),
    (
        "narrative_section_without_guide",
        """
        narrative:
          story: what happened
          habits: ""  #!
        categories:
          a:
            b: [x]
        """,
        "narrative.habits",
        "what the section covers",
    ),
    (
        "narrative_section_name_not_snake_case",
        """
        narrative:
          Daily Life: a day  #!
        categories:
          a:
            b: [x]
        """,
        "narrative.Daily Life",
        "snake_case",
    ),
    (
        "narrative_not_a_mapping",
        """
        narrative: [story, habits]  #!
        categories:
          a:
            b: [x]
        """,
        "narrative",
        "mapping of section name",
    ),
    (
        "leaf_of_wrong_type",
        """
        categories:
          a:
            b: 42  #!
        """,
        "a.b",
        "expected a category",
    ),
]


@pytest.mark.parametrize(
    ("body", "path", "fragment"), [c[1:] for c in MALFORMED], ids=[c[0] for c in MALFORMED]
)
def test_malformed_file_names_file_line_and_path(
    tmp_path: Path, body: str, path: str, fragment: str
) -> None:
    text, line = _case(body)
    file = tmp_path / "bad.yaml"
    file.write_text(text)
    with pytest.raises(TaxonomyError) as info:
        load_taxonomy(file)
    problems = info.value.problems
    expected_prefix = f"{file}:{line}: {path}: "
    assert any(p.startswith(expected_prefix) and fragment in p for p in problems), (
        f"wanted {expected_prefix}...{fragment}... in:\n" + "\n".join(problems)
    )


def test_version_must_be_a_string(tmp_path: Path) -> None:
    file = tmp_path / "v.yaml"
    file.write_text("name: v\nversion: 1.10\ncategories:\n  a:\n    b: [x]\n")
    with pytest.raises(
        TaxonomyError, match=r"v\.yaml:2: version: must be a non-empty string \(quote it"
    ):
        load_taxonomy(file)


def test_missing_name_is_reported(tmp_path: Path) -> None:
    file = tmp_path / "n.yaml"
    file.write_text('version: "1"\ncategories:\n  a:\n    b: [x]\n')
    with pytest.raises(TaxonomyError, match=r"n\.yaml:1: name: missing"):
        load_taxonomy(file)


def test_all_problems_of_a_file_are_reported_at_once(tmp_path: Path) -> None:
    text, _ = _case(
        """
        categories:
          a:
            b: {values: {x: -1, y: 1}}
            n: {kind: numeric, range: [5, 1]}
            c:
              when: a.zzz == 1
              values: [p]
            d:
              kind: wibble  #!
        """
    )
    file = tmp_path / "many.yaml"
    file.write_text(text)
    with pytest.raises(TaxonomyError) as info:
        load_taxonomy(file)
    problems = info.value.problems
    assert len(problems) == 4
    assert [p.split(":")[1] for p in problems] == ["5", "6", "8", "11"]  # sorted by line
    assert str(info.value).startswith(f"{file}: 4 problems")


def test_narrative_sections_are_the_taxonomys_own_in_file_order() -> None:
    text, _ = _case(
        """
        narrative:
          story: where they come from  #!
          habits: "a day,   a week"
        categories:
          a:
            b: [x]
        """
    )
    assert parse_taxonomy(text).narrative == {
        "story": "where they come from",
        "habits": "a day, a week",
    }
    assert parse_taxonomy(HEADER + "categories:\n  a:\n    b: [x]\n").narrative == {}


def test_taxonomy_error_is_a_user_error() -> None:
    assert issubclass(TaxonomyError, UserError)


def test_mini_fixture_loads_with_all_features() -> None:
    tax = load_taxonomy(DATA / "mini.yaml")
    assert isinstance(tax, Taxonomy)
    assert tax.ref == "mini@0.1"
    assert tax.categories == ["person", "work", "taste"]
    assert [leaf.path for leaf in tax.sampling_order[:3]] == [
        "person.age_band",
        "person.age",
        "person.role",
    ]
    age = tax.leaf("person.age")
    assert (age.kind, age.unit, age.root, age.integer) == ("numeric", "years", "person", True)
    salary = tax.leaf("work.salary")
    assert salary.given == ("person.age_band", "person.role")
    assert salary.when == ("person.role == worker",)  # inherited from the category
    assert tax.leaf("work.pet_peeve").kind == "generated"
    assert tax.leaf("work.pet_peeve").description.startswith("a small thing")
    assert tax.leaf("taste.colour").values == ("red", "green", "blue")
    assert tax.depth == 3
    with pytest.raises(KeyError):
        tax.leaf("person.nope")


def test_multi_given_rows_pick_the_most_specific_match() -> None:
    salary = load_taxonomy(DATA / "mini.yaml").leaf("work.salary")
    assert salary.row(("old", "worker")).median == 40000
    assert salary.row(("young", "worker")).median == 22000
    assert salary.row(("middle", "worker")).median == 30000  # unconditional default


def test_leaves_are_in_file_order() -> None:
    tax = load_taxonomy(DATA / "mini.yaml")
    paths = [leaf.path for leaf in tax.leaves]
    assert paths[:4] == ["person.age_band", "person.age", "person.role", "person.home.city"]
    assert [leaf.index for leaf in tax.leaves] == list(range(len(paths)))


def test_default_human_taxonomy_is_deep() -> None:
    tax = load_taxonomy(REPO / "taxonomies" / "human.yaml")
    stats = tax.stats()
    assert tax.name == "human"
    assert len(tax.categories) >= 12
    for root in (
        "demographics",
        "career",
        "education",
        "health_and_body",
        "psychology_and_personality",
        "values_and_beliefs",
        "relationships_and_family",
        "lifestyle_and_routine",
        "hobbies_and_interests",
        "media_and_technology",
        "finances",
        "culture_and_language",
    ):
        assert root in tax.categories
    assert stats["leaves"] >= 600
    assert tax.depth >= 3
    assert stats["generated"] >= 100  # plenty for the model to enrich...
    assert stats["categorical"] + stats["numeric"] > 2 * stats["generated"]  # ...most are sampled
    assert stats["conditional"] >= 60
    assert all(n >= 15 for n in stats["per_category"].values())
    assert "demographics.age" in tax.anchors and "career.status.occupation" in tax.anchors


def test_k12_taxonomy_loads() -> None:
    tax = load_taxonomy(REPO / "taxonomies" / "k12_student.yaml")
    assert tax.name == "k12_student"
    assert tax.leaf("identity.age").given == ("identity.grade",)
    assert tax.depth >= 3


@pytest.mark.parametrize("name", ["human", "k12_student"])
def test_cli_check_passes_for_shipped_taxonomies(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(
            [
                "taxonomy",
                "check",
                str(REPO / "taxonomies" / f"{name}.yaml"),
                "--rules",
                str(REPO / "validators"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert f"{name}@" in out and "leaves:" in out and "depth:" in out and "categories:" in out


def test_cli_check_resolves_a_name_in_the_project(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["taxonomy", "check", "human", "--project", str(REPO)]) == 0
    assert "human@" in capsys.readouterr().out


def test_cli_check_prints_problems_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / "bad.yaml"
    file.write_text('name: bad\nversion: "1"\ncategories:\n  a:\n    b: {values: {x: -3}}\n')
    assert main(["taxonomy", "check", str(file), "--rules", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"{file}:5: a.b: weight of 'x' is negative" in err


def test_cli_check_unknown_taxonomy_name_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["taxonomy", "check", "no_such_taxonomy", "--project", str(REPO)]) == 2
    assert "unknown taxonomy" in capsys.readouterr().err


def test_parse_from_text_reports_memory_source() -> None:
    with pytest.raises(TaxonomyError, match=r"<memory>:3: categories: must be a non-empty mapping"):
        parse_taxonomy('name: x\nversion: "1"\ncategories: []\n')


@pytest.mark.parametrize("name", ["human", "k12_student"])
def test_shipped_taxonomies_have_unique_leaf_names(name: str) -> None:
    """The enrich stage keys model output by a leaf's last name: keep them unique."""
    tax = load_taxonomy(REPO / "taxonomies" / f"{name}.yaml")
    names = [leaf.name for leaf in tax.leaves]
    assert len(names) == len(set(names))
    assert all(leaf.description for leaf in tax.generated_leaves)
