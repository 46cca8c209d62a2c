"""Constraint rules (validators/*.yaml): declarative checks on sampled skeletons.

A rule file names the taxonomy it applies to and lists rules:

    taxonomy: human
    rules:
      - name: minors_do_not_own_homes
        if: demographics.age < 18
        then: finances.housing.tenure in [lives_with_parents, renting_shared]
      - name: no_young_retirees
        forbid: career.employment_status == retired and demographics.age < 45
        resample: career.employment_status

`if`/`then` is violated when `if` is true and `then` is false; `forbid` when its
expression is true. A comparison reading an attribute the persona does not have is
unknown (three-valued logic), and an unknown rule is not a violation. On
a violation the sampler resamples the rule's `resample` attribute (default: the attribute
it names that is sampled last) and everything depending on it, up to `max_rule_retries`
times, then rejects the skeleton with the rule's name. Expressions use the safe language
of `personaloom.taxonomy.expressions` (no eval).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from personaloom.errors import UserError, read_utf8
from personaloom.taxonomy import expressions as ex
from personaloom.taxonomy.yamlmarks import MarkedDict, MarkedList, YamlSyntaxError, load_marked

if TYPE_CHECKING:
    from personaloom.taxonomy.model import Taxonomy

RULE_KEYS = ("name", "description", "if", "then", "forbid", "resample")


class RuleFileError(UserError):
    """Problems in rule files; `problems` holds one `file:line: rule: message` per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        head = f"{len(problems)} problem{'s' if len(problems) != 1 else ''} in rule files"
        super().__init__("\n".join([head, *problems]))


@dataclass(frozen=True)
class Rule:
    name: str
    file: str
    line: int
    taxonomy: str
    condition: str | None = None  # `if`
    then: str | None = None
    forbid: str | None = None
    resample: str | None = None
    description: str = ""
    lines: dict[str, int] = field(default_factory=dict, compare=False, repr=False)

    def paths(self) -> list[str]:
        out: dict[str, None] = {}
        for text in (self.condition, self.then, self.forbid):
            if text:
                for p in ex.paths(ex.parse(text)):
                    out.setdefault(p, None)
        return list(out)

    def where(self, key: str | None = None) -> str:
        return f"{self.file}:{self.lines.get(key, self.line) if key else self.line}: {self.name}"


class _Bound:
    """Rules compiled against one taxonomy: vectorised violation checks."""

    def __init__(self, rules: list[Rule], tax: Taxonomy) -> None:
        from personaloom.taxonomy.plan import compile_taxonomy

        plan = compile_taxonomy(tax)
        problems = check_rules(rules, tax)
        if problems:
            raise RuleFileError(problems)

        def resolve(path: str) -> ex.AttrInfo:
            leaf = tax.leaf(path)
            return ex.AttrInfo(leaf.index, leaf.kind, leaf.values)

        self.names: list[str] = []
        self.targets: list[int] = []
        self.checks: list[ex.Compiled] = []
        for rule in rules:
            self.names.append(rule.name)
            target = rule.resample or max(rule.paths(), key=lambda p: plan.position[plan.col_of[p]])
            self.targets.append(plan.col_of[target])
            if rule.forbid:
                self.checks.append(ex.compile_batch(ex.parse(rule.forbid), resolve)[0])
            else:
                assert rule.condition and rule.then
                f_if = ex.compile_batch(ex.parse(rule.condition), resolve)[0]
                t_then = ex.compile_truth(ex.parse(rule.then), resolve)

                def check(V: np.ndarray, rows: ex.Rows, f_if=f_if, t_then=t_then) -> np.ndarray:
                    return f_if(V, rows) & t_then(V, rows)[1]  # `if` true and `then` false

                self.checks.append(check)

    def first_violation(self, V: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Index of the first violated rule per row, -1 when none."""
        out = np.full(len(rows), -1, dtype=np.intp)
        for r in range(len(self.checks) - 1, -1, -1):
            out[self.checks[r](V, rows)] = r
        return out


class RuleSet:
    """An ordered collection of rules (possibly for several taxonomies)."""

    def __init__(self, rules: Iterable[Rule] = ()) -> None:
        self.rules = list(rules)
        self._bound: dict[int, tuple[Taxonomy, _Bound]] = {}

    @classmethod
    def empty(cls) -> RuleSet:
        return cls()

    def __len__(self) -> int:
        return len(self.rules)

    def __iter__(self):
        return iter(self.rules)

    def for_taxonomy(self, name: str) -> RuleSet:
        return RuleSet(r for r in self.rules if r.taxonomy == name)

    def bind(self, tax: Taxonomy) -> _Bound:
        """Compile the rules that apply to `tax`; raises RuleFileError on unknown paths etc."""
        cached = self._bound.get(id(tax))
        if cached is not None and cached[0] is tax:
            return cached[1]
        bound = _Bound([r for r in self.rules if r.taxonomy == tax.name], tax)
        self._bound[id(tax)] = (tax, bound)
        return bound

    def violations(self, values: dict[str, str | float], taxonomy: str | None = None) -> list[str]:
        """Names of the rules one persona ({path: value}) violates (scalar check)."""
        out = []
        for rule in self.rules:
            if taxonomy is not None and rule.taxonomy != taxonomy:
                continue
            if rule.forbid:
                if ex.evaluate(ex.parse(rule.forbid), values):
                    out.append(rule.name)
            else:
                assert rule.condition and rule.then
                cond = ex.evaluate(ex.parse(rule.condition), values)
                then = ex.evaluate(ex.parse(rule.then), values)
                if cond and then is False:
                    out.append(rule.name)
        return out


def check_rules(rules: list[Rule], tax: Taxonomy) -> list[str]:
    """Problems of rules against a taxonomy (unknown paths, bad values, resample target)."""
    problems: list[str] = []

    def resolve(path: str) -> ex.AttrInfo | str:
        if path not in tax:
            return f"unknown attribute {path!r}"
        leaf = tax.leaf(path)
        if leaf.kind == "generated":
            return f"{path} is generated (free text); rules can only read sampled attributes"
        if leaf.kind == "identity":
            return f"{path} is an identity (a name); rules read categorical and numeric attributes"
        return ex.AttrInfo(leaf.index, leaf.kind, leaf.values)

    for rule in rules:
        for key, text in (("if", rule.condition), ("then", rule.then), ("forbid", rule.forbid)):
            if text:
                for msg in ex.check(ex.parse(text), resolve):
                    problems.append(f"{rule.where(key)}: {key}: {msg}")
        if rule.resample:
            got = resolve(rule.resample)
            if isinstance(got, str):
                problems.append(f"{rule.where('resample')}: resample: {got}")
            elif rule.resample not in rule.paths():
                problems.append(
                    f"{rule.where('resample')}: resample: {rule.resample} is not named by the rule"
                )
    return problems


def _rule_files(source: str | Path | Iterable[str | Path]) -> list[tuple[Path, bool]]:
    """(file, named explicitly) for every YAML file of the sources, folders expanded."""
    items = [Path(source)] if isinstance(source, str | Path) else [Path(s) for s in source]
    files: list[tuple[Path, bool]] = []
    for item in items:
        if item.is_dir():
            found = sorted(
                p for p in item.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file()
            )
            files.extend((p, False) for p in found)
        elif item.is_file():
            files.append((item, True))
        else:
            raise UserError(f"{item}: no such rule file or folder")
    return files


_TAXONOMY_KEY = re.compile(r"^taxonomy\s*:\s*['\"]?([^'\"#\s]+)", re.MULTILINE)


def _declared_taxonomy(text: str) -> str | None:
    """The top-level `taxonomy:` of a rule file, read without parsing (None if absent)."""
    m = _TAXONOMY_KEY.search(text)
    return m.group(1) if m else None


def parse_rules(text: str, source: str = "<memory>") -> tuple[list[Rule], list[str]]:
    """Rules of one file and the problems found (syntax, structure, expression syntax)."""
    problems: list[str] = []
    try:
        doc = load_marked(text)
    except YamlSyntaxError as exc:
        return [], [f"{source}:{exc.line or 0}: (yaml): {exc.message}"]
    if not isinstance(doc, MarkedDict):
        return [], [f"{source}:1: (file): a rule file is a mapping with taxonomy: and rules:"]
    for key, line, first in doc.duplicates:
        problems.append(f"{source}:{line}: {key}: duplicate key (first at line {first})")
    for key in doc:
        if key not in ("taxonomy", "description", "rules"):
            problems.append(
                f"{source}:{doc.key_line(key)}: {key}: unknown key (expected taxonomy, description, rules)"
            )
    taxonomy = doc.get("taxonomy")
    if not isinstance(taxonomy, str) or not taxonomy.strip():
        problems.append(
            f"{source}:{doc.key_line('taxonomy')}: taxonomy: missing or not a name (the taxonomy these rules apply to)"
        )
        taxonomy = ""
    raw = doc.get("rules")
    if not isinstance(raw, MarkedList):
        problems.append(f"{source}:{doc.key_line('rules')}: rules: must be a list of rules")
        return [], problems
    rules: list[Rule] = []
    names: dict[str, int] = {}
    for i, item in enumerate(raw):
        line = raw.item_line(i)
        if not isinstance(item, MarkedDict):
            problems.append(
                f"{source}:{line}: rules[{i}]: a rule is a mapping with name and if/then or forbid"
            )
            continue
        name = item.get("name")
        if not isinstance(name, str) or not name.strip():
            problems.append(f"{source}:{line}: rules[{i}]: missing name")
            name = f"rules[{i}]"
        elif name in names:
            problems.append(
                f"{source}:{item.key_line('name')}: {name}: duplicate rule name (first at line {names[name]})"
            )
        else:
            names[name] = item.key_line("name")
        for key, kline, first in item.duplicates:
            problems.append(
                f"{source}:{kline}: {name}: duplicate key {key!r} (first at line {first})"
            )
        for key in item:
            if key not in RULE_KEYS:
                problems.append(
                    f"{source}:{item.key_line(key)}: {name}: unknown key {key!r} (expected {', '.join(RULE_KEYS)})"
                )
        has_if, has_then, has_forbid = "if" in item, "then" in item, "forbid" in item
        if has_forbid and (has_if or has_then):
            problems.append(f"{source}:{line}: {name}: use either forbid: or if:/then:, not both")
            continue
        if not has_forbid and not (has_if and has_then):
            problems.append(f"{source}:{line}: {name}: needs if: and then: (or forbid:)")
            continue
        ok = True
        texts: dict[str, str] = {}
        for key in ("if", "then", "forbid"):
            if key not in item:
                continue
            text = item[key]
            if isinstance(text, bool | int | float):
                problems.append(
                    f"{source}:{item.key_line(key)}: {name}: {key}: expected an expression, got {text!r}"
                )
                ok = False
                continue
            try:
                ex.parse(text)
            except ex.ExprError as exc:
                problems.append(f"{source}:{item.key_line(key)}: {name}: {key}: {exc}")
                ok = False
                continue
            texts[key] = text
        resample = item.get("resample")
        if resample is not None and not isinstance(resample, str):
            problems.append(
                f"{source}:{item.key_line('resample')}: {name}: resample: must be an attribute path"
            )
            ok = False
        if not ok:
            continue
        rules.append(
            Rule(
                name=name,
                file=source,
                line=line,
                taxonomy=taxonomy,
                condition=texts.get("if"),
                then=texts.get("then"),
                forbid=texts.get("forbid"),
                resample=resample,
                description=str(item.get("description", "")),
                lines={k: item.key_line(k) for k in item},
            )
        )
    return rules, problems


def load_rules(
    source: str | Path | Iterable[str | Path], taxonomy: Taxonomy | None = None
) -> RuleSet:
    """Rules from files and/or folders.

    In a folder, a YAML file is a rule file when it declares a top-level `taxonomy:` or its
    name starts with `rules`; other files (critic settings, `critics/*.py`) are left alone.
    With `taxonomy`, only rule files declaring its name are kept and every rule is checked
    against it. Raises RuleFileError listing all problems, each `file:line: rule: message`.
    """
    problems: list[str] = []
    rules: list[Rule] = []
    for path, explicit in _rule_files(source):
        text = read_utf8(path, "rule file")
        declared = _declared_taxonomy(text)
        if not explicit and declared is None and not path.name.startswith("rules"):
            continue  # another validator config (e.g. critics.yaml), not a rule file
        if taxonomy is not None and declared is not None and declared != taxonomy.name:
            continue  # rules for another taxonomy
        got, errs = parse_rules(text, str(path))
        problems.extend(errs)
        rules.extend(got)
    if taxonomy is not None and not problems:
        problems.extend(check_rules(rules, taxonomy))
    if problems:
        raise RuleFileError(problems)
    return RuleSet(rules)
