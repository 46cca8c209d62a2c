"""Rules: the safe expression language, rule files, resampling, and zero violations at scale."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from personaloom.errors import UserError
from personaloom.taxonomy import expressions as ex
from personaloom.taxonomy import load_taxonomy, parse_taxonomy
from personaloom.taxonomy.rules import RuleFileError, RuleSet, load_rules, parse_rules
from personaloom.taxonomy.sampling import sample_batch, sample_skeletons

REPO = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data" / "taxonomies"


# ----------------------------------------------------------------------------- expressions


@pytest.mark.parametrize(
    ("text", "values", "expected"),
    [
        ("a.x < 18", {"a.x": 16.0}, True),
        ("a.x - 14 >= a.y", {"a.x": 30.0, "a.y": 16.0}, True),
        ("(a.x + 1) * 2 > 10", {"a.x": 4.0}, False),
        ("a.s in [p, 'q-r']", {"a.s": "q-r"}, True),
        ("a.s not in [p, q]", {"a.s": "p"}, False),
        ("not a.s == p or a.x > 1", {"a.s": "p", "a.x": 0.0}, False),
        ("a.s == p and (a.x > 1 or a.x < -1)", {"a.s": "p", "a.x": -3.0}, True),
        ("a.s == p", {"a.t": "p"}, None),  # unknown: a.s absent
        ("a.s == p or a.t == p", {"a.t": "p"}, True),  # three-valued logic
        ("a.s == p and a.t == q", {"a.t": "p"}, False),
        ("not a.s == p", {}, None),
    ],
)
def test_expressions_evaluate(text: str, values: dict, expected: bool | None) -> None:
    assert ex.evaluate(ex.parse(text), values) is expected


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("a.x <", "expected a value"),
        ("a.x == 1 and", "expected a value"),
        ("a.x === 1", "unexpected character '='"),
        ("a.x in [1, 2", "expected ',' or ']'"),
        ("__import__('os').system('true')", "unexpected character '.'"),
        ("__import__('os')", "expected a comparison"),
        ("a.x == 1; b.y == 2", "unexpected character ';'"),
        ("1 == 2", "names no attribute"),
        ("", "empty expression"),
    ],
)
def test_expression_syntax_errors(text: str, fragment: str) -> None:
    with pytest.raises(ex.ExprError) as info:
        ex.parse(text)
    assert fragment in str(info.value)


def test_expressions_compile_to_vectorised_checks() -> None:
    info = {
        "a.x": ex.AttrInfo(0, "numeric"),
        "a.c": ex.AttrInfo(1, "categorical", ("p", "q")),
        "a.d": ex.AttrInfo(2, "categorical", ("p", "q")),
    }
    fn, cols = ex.compile_batch(ex.parse("a.x >= 18 and a.c != a.d"), info.__getitem__)
    V = np.array([[20, 0, 1], [20, 0, 0], [10, 0, 1], [np.nan, 0, 1]], dtype=float)
    assert fn(V, slice(None)).tolist() == [True, False, False, False]  # NaN: not applicable
    assert cols == [0, 1, 2]


def test_expression_type_errors() -> None:
    info = {"a.x": ex.AttrInfo(0, "numeric"), "a.c": ex.AttrInfo(1, "categorical", ("p", "q"))}
    errors = ex.check(
        ex.parse("a.c < p or a.x == foo or a.c == r or a.x + a.c > 1"), info.__getitem__
    )
    assert len(errors) == 4
    assert any("categorical values take" in e for e in errors)
    assert any("'r' is not a value of a.c" in e for e in errors)


# ----------------------------------------------------------------------------- rule files


@pytest.fixture(scope="module")
def mini():
    return load_taxonomy(DATA / "mini.yaml")


RULE_ERRORS = [
    (
        "syntax",
        "taxonomy: mini\nrules:\n  - name: r\n    forbid: [unclosed\n",
        5,
        "(yaml)",
        "started at line 4",
    ),
    (
        "unknown_path",
        "taxonomy: mini\nrules:\n  - name: r1\n    forbid: person.agee < 3\n",
        4,
        "r1",
        "unknown attribute 'person.agee'",
    ),
    (
        "bad_value",
        "taxonomy: mini\nrules:\n  - name: r2\n    if: person.age < 18\n    then: person.role == pilot\n",
        5,
        "r2",
        "'pilot' is not a value of person.role",
    ),
    (
        "expression_syntax",
        "taxonomy: mini\nrules:\n  - name: r3\n    forbid: person.age <\n",
        4,
        "r3",
        "forbid: expected a value",
    ),
    (
        "if_without_then",
        "taxonomy: mini\nrules:\n  - name: r4\n    if: person.age < 18\n",
        3,
        "r4",
        "needs if: and then:",
    ),
    (
        "forbid_and_if",
        "taxonomy: mini\nrules:\n  - name: r5\n    forbid: person.age < 1\n    if: person.age < 2\n    then: person.age < 3\n",
        3,
        "r5",
        "either forbid: or if:/then:",
    ),
    (
        "unknown_key",
        "taxonomy: mini\nrules:\n  - name: r6\n    forbid: person.age < 1\n    severity: high\n",
        5,
        "r6",
        "unknown key 'severity'",
    ),
    (
        "duplicate_name",
        "taxonomy: mini\nrules:\n  - name: r7\n    forbid: person.age < 1\n  - name: r7\n    forbid: person.age < 2\n",
        5,
        "r7",
        "duplicate rule name",
    ),
    (
        "resample_not_named",
        "taxonomy: mini\nrules:\n  - name: r8\n    forbid: person.age < 1\n    resample: taste.colour\n",
        5,
        "r8",
        "is not named by the rule",
    ),
    (
        "generated_path",
        "taxonomy: mini\nrules:\n  - name: r9\n    forbid: work.pet_peeve == x\n",
        4,
        "r9",
        "is generated",
    ),
    (
        "missing_name",
        "taxonomy: mini\nrules:\n  - forbid: person.age < 1\n",
        3,
        "rules[0]",
        "missing name",
    ),
]


@pytest.mark.parametrize(
    ("text", "line", "rule", "fragment"),
    [c[1:] for c in RULE_ERRORS],
    ids=[c[0] for c in RULE_ERRORS],
)
def test_rule_file_errors_name_file_line_and_rule(
    tmp_path: Path, mini, text: str, line: int, rule: str, fragment: str
) -> None:
    file = tmp_path / "rules_bad.yaml"
    file.write_text(text)
    with pytest.raises(RuleFileError) as info:
        load_rules(file, taxonomy=mini)
    assert isinstance(info.value, UserError)
    prefix = f"{file}:{line}: {rule}: "
    assert any(p.startswith(prefix) and fragment in p for p in info.value.problems), (
        info.value.problems
    )


def test_folder_keeps_only_rule_files_for_the_taxonomy(tmp_path: Path, mini) -> None:
    (tmp_path / "rules_mini.yaml").write_text((DATA / "rules_mini.yaml").read_text())
    (tmp_path / "rules_other.yaml").write_text(
        "taxonomy: other\nrules:\n  - name: x\n    forbid: nowhere.at_all == 1\n"
    )
    (tmp_path / "critics.yaml").write_text(
        "rules:\n  length: {max_words: 10}\njudges: {persona: [safety]}\n"
    )
    (tmp_path / "critics").mkdir()
    (tmp_path / "critics" / "length.py").write_text("x = 1\n")
    rules = load_rules(tmp_path, taxonomy=mini)
    assert [r.name for r in rules] == [
        "young_are_not_retired",
        "students_are_young",
        "no_rich_teens",
    ]
    assert len(load_rules(tmp_path).for_taxonomy("other")) == 1


def test_missing_rule_source_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no such rule file or folder"):
        load_rules(tmp_path / "nope")


def test_empty_ruleset_changes_nothing(mini) -> None:
    a = list(sample_skeletons(mini, 1, range(50), "deep"))
    b = list(sample_skeletons(mini, 1, range(50), "deep", RuleSet.empty()))
    assert a == b and len(RuleSet.empty()) == 0


def test_violation_resamples_the_target_and_its_dependents() -> None:
    tax = parse_taxonomy(
        """
name: dep
version: "1"
categories:
  a:
    x: [p, q]
    y:
      given: a.x
      table:
        p: [from_p]
        q: [from_q]
    z: [u, v]
"""
    )
    rules, problems = parse_rules(
        "taxonomy: dep\nrules:\n  - name: no_p\n    forbid: a.x == p\n    resample: a.x\n"
    )
    assert not problems
    settings = tax.settings("deep", attributes_per_persona=3)
    plain = list(sample_skeletons(tax, 0, range(400), settings))
    fixed = list(sample_skeletons(tax, 0, range(400), settings, RuleSet(rules)))
    assert any(sk.values["a.x"] == "p" for sk in plain)
    for before, after in zip(plain, fixed, strict=True):
        if after.rejected:
            continue
        assert after.values["a.x"] == "q" and after.values["a.y"] == "from_q"
        assert after.values["a.z"] == before.values["a.z"]  # untouched by the resample
    assert sum(sk.rejected is not None for sk in fixed) < 5  # 2^-9 chance each


def _count_violations(skeletons, rules: RuleSet, name: str) -> tuple[int, int, int]:
    checked = rejected = violations = 0
    for sk in skeletons:
        if sk.rejected:
            rejected += 1
            continue
        checked += 1
        violations += len(rules.violations(sk.values, taxonomy=name))
    return checked, rejected, violations


def test_no_rule_violations_across_10k_human_skeletons() -> None:
    tax = load_taxonomy(REPO / "taxonomies" / "human.yaml")
    rules = load_rules(REPO / "validators", taxonomy=tax)
    assert len(rules) >= 25
    batch = sample_batch(tax, 2024, range(10_000), "deep", rules)
    checked, rejected, violations = _count_violations(batch.skeletons(), rules, "human")
    assert checked + rejected == 10_000
    assert violations == 0
    assert rejected / 10_000 < 0.02, f"{rejected} rejected"
    # the rules do bite: without them the same skeletons contain contradictions
    unruled = sample_batch(tax, 2024, range(10_000), "deep")
    assert (rules.bind(tax).first_violation(unruled.V, np.arange(10_000)) >= 0).sum() > 50


def test_no_rule_violations_across_10k_k12_skeletons() -> None:
    tax = load_taxonomy(REPO / "taxonomies" / "k12_student.yaml")
    rules = load_rules(REPO / "validators", taxonomy=tax)
    batch = sample_batch(tax, 7, range(10_000), "deep", rules)
    checked, rejected, violations = _count_violations(batch.skeletons(), rules, "k12_student")
    assert checked + rejected == 10_000
    assert violations == 0 and rejected / 10_000 < 0.01
    for sk in batch.skeletons():
        if sk.rejected:
            continue
        subjects = [
            sk.values.get(f"academics.subjects.{k}")
            for k in (
                "strongest_subject",
                "second_strongest_subject",
                "weakest_subject",
                "second_weakest_subject",
            )
        ]
        present = [s for s in subjects if s is not None]
        assert len(present) == len(set(present))
        grade = sk.values["identity.grade"]
        g = 0 if grade == "K" else int(grade)
        assert 5 <= sk.values["identity.age"] - g <= 6
