"""Read a taxonomy YAML file into the model (`model.py`), collecting every problem.

The format is documented in docs/taxonomy.md. `parse_taxonomy` reads the text with line
marks (`yamlmarks`), checks the top-level keys, walks the categories (`_TreeReader`:
names, paths, dotted keys, leaf/category clashes), reads each leaf (`_LeafReader`: kind,
keys, values and weights, ranges and distributions, conditional tables, scales), then
runs the checks that need the whole tree (`checks.py`: references, cycles, anchors, table
rows). Every problem of the file (YAML syntax, duplicate keys, unknown kinds and keys, bad
weights and ranges, unknown or later attribute references, condition cycles...) ends in
one `TaxonomyError` whose message lists them all, one per line, as
`file:line: attribute.path: message`.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from personaloom.errors import read_utf8
from personaloom.taxonomy import checks, identity
from personaloom.taxonomy.checks import SourceLines
from personaloom.taxonomy.model import (
    DISTRIBUTIONS,
    KINDS,
    IdentitySpec,
    Leaf,
    NumericSpec,
    Problems,
    Scale,
    Taxonomy,
)
from personaloom.taxonomy.settings import TaxonomySampling
from personaloom.taxonomy.yamlmarks import (
    MarkedDict,
    MarkedList,
    is_number,
    load_mapping,
)

TOP_KEYS = (
    "name", "version", "description", "anchors", "sampling", "narrative", "categories"
)  # fmt: skip
CATEGORY_KEYS = ("description", "when")
NUMERIC_PARAMS = ("range", "distribution", "mean", "sd", "median", "sigma")
LEAF_KEYS = {
    "categorical": {"kind", "description", "values", "given", "table", "when"},
    "numeric": {"kind", "description", "unit", "integer", "decimals", "step", "given", "table"}
    | {"when", "scale"}
    | set(NUMERIC_PARAMS),
    "generated": {"kind", "description", "when"},
    "identity": {"kind", "description", "country", "gender", "genders", "when"},
}
ALL_LEAF_KEYS = set().union(*LEAF_KEYS.values())
SCALE_KEYS = ("given", "factors", "default")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_TAXONOMY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

Whens = tuple[tuple[str, int], ...]  # `when` expressions in force, with their lines


def load_taxonomy(path: str | Path) -> Taxonomy:
    """Load and validate a taxonomy file; raises TaxonomyError listing all problems.

    A taxonomy with identity leaves also loads the locale map: `locales.yaml` beside the
    file, else the packaged one (its own problems are a TaxonomyError of that file)."""
    path = Path(path)
    return parse_taxonomy(
        read_utf8(path, "taxonomy"), source=str(path), locales=identity.locales_path_for(path)
    )


def parse_taxonomy(
    text: str, source: str = "<memory>", locales: str | Path | None = None
) -> Taxonomy:
    """Parse and validate taxonomy YAML; `source` names the file in every message.
    `locales` is the locale map for identity leaves (default: the packaged one)."""
    problems = Problems(source)
    doc = load_mapping(text, problems, "a taxonomy is a mapping with name, version and categories")
    _report_duplicates(doc, "", problems)
    for key in doc:
        if key not in TOP_KEYS:
            problems.add(
                doc.key_line(key),
                str(key),
                f"unknown top-level key (expected one of {', '.join(TOP_KEYS)})",
            )
    name = _text_field(doc, "name", problems, required=True)
    if name and not _TAXONOMY_NAME.match(name):
        problems.add(doc.key_line("name"), "name", f"{name!r}: use letters, digits, - _ .")
    version = _text_field(doc, "version", problems, required=True)
    description = _text_field(doc, "description", problems) or ""
    sampling = _sampling_block(doc, problems)
    narrative = _narrative_block(doc, problems)

    tree = _TreeReader(problems)
    categories = tree.read_categories(doc)
    if not tree.leaves and not problems:
        problems.add(doc.line, "categories", "no leaves")
    anchors = checks.check_anchors(_anchor_entries(doc, problems), tree.leaves, problems)
    checks.check_category_weights(sampling, categories, problems)
    checks.check_references(tree.leaves, anchors, tree.lines, problems)
    if problems:
        raise problems.error()
    locale_map = None
    if any(leaf.kind == "identity" for leaf in tree.leaves):
        locale_map = identity.load_locales(locales or identity.default_locales_path())
    return Taxonomy(
        name=name or "",
        version=version or "",
        description=description,
        leaves=tree.leaves,
        categories=categories,
        anchors=anchors,
        sampling=sampling,
        source=source,
        category_descriptions=tree.descriptions,
        locales=locale_map,
        narrative=narrative,
    )


# ----------------------------------------------------------------------------- top level


def _report_duplicates(node: Any, prefix: str, problems: Problems) -> None:
    """Duplicate keys anywhere below `node`, named by attribute path (root categories
    start the paths: `categories` is not part of them)."""
    if isinstance(node, MarkedDict):
        _report_duplicate_keys(node, prefix, problems)
        for key, child in node.items():
            if prefix == "" and key == "categories":
                if isinstance(child, MarkedDict):
                    _report_duplicate_keys(child, "", problems)
                    for root, below in child.items():
                        _report_duplicates(below, str(root), problems)
                continue
            _report_duplicates(child, f"{prefix}.{key}" if prefix else str(key), problems)
    elif isinstance(node, MarkedList):
        for item in node:
            _report_duplicates(item, prefix, problems)


def _report_duplicate_keys(node: MarkedDict, prefix: str, problems: Problems) -> None:
    for key, line, first in node.duplicates:
        where = f"{prefix}.{key}" if prefix else str(key)
        problems.add(line, where, f"duplicate key {key!r} (first defined at line {first})")


def _text_field(
    doc: MarkedDict, key: str, problems: Problems, required: bool = False
) -> str | None:
    if key not in doc:
        if required:
            problems.add(doc.line, key, "missing (required)")
        return None
    value = doc[key]
    if not isinstance(value, str) or not value.strip():
        hint = ' (quote it, e.g. "1.0")' if key == "version" and is_number(value) else ""
        problems.add(doc.key_line(key), key, f"must be a non-empty string{hint}")
        return None
    return value.strip()


def _sampling_block(doc: MarkedDict, problems: Problems) -> TaxonomySampling:
    raw = doc.get("sampling")
    if raw is None:
        return TaxonomySampling()
    line = doc.key_line("sampling")
    try:
        sampling = TaxonomySampling.model_validate(raw)
        for preset in sampling.presets:
            sampling.settings(preset)
        return sampling
    except ValidationError as exc:
        for error in exc.errors():
            loc = ".".join(str(part) for part in error["loc"])
            problems.add(_line_at(raw, error["loc"], line), f"sampling.{loc}", error["msg"])
    except ValueError as exc:
        problems.add(line, "sampling", str(exc))
    return TaxonomySampling()


def _narrative_block(doc: MarkedDict, problems: Problems) -> dict[str, str]:
    """`narrative:` maps section names to what each section covers, in writing order
    ({} when absent: the generator's six default sections)."""
    raw = doc.get("narrative")
    if raw is None:
        return {}
    line = doc.key_line("narrative")
    if not isinstance(raw, MarkedDict) or not raw:
        problems.add(line, "narrative", "expected a mapping of section name to what it covers")
        return {}
    sections: dict[str, str] = {}
    for name, guide in raw.items():
        where = f"narrative.{name}"
        if not isinstance(name, str) or not _NAME.match(name):
            problems.add(raw.key_line(name), where, "section names are snake_case")
        elif not isinstance(guide, str) or not guide.strip():
            problems.add(raw.key_line(name), where, "say in a few words what the section covers")
        else:
            sections[name] = " ".join(guide.split())
    return sections


def _anchor_entries(doc: MarkedDict, problems: Problems) -> list[tuple[Any, int]]:
    """The `anchors:` list as (entry, line); checked against the leaves in `checks`."""
    raw = doc.get("anchors")
    if raw is None:
        return []
    if not isinstance(raw, MarkedList):
        problems.add(
            doc.key_line("anchors"), "anchors", "anchors must be a list of attribute paths"
        )
        return []
    return [(anchor, raw.item_line(i)) for i, anchor in enumerate(raw)]


# ----------------------------------------------------------------------------- categories


class _TreeReader:
    """Walks the categories: names, node paths (dotted keys nest), category descriptions
    and `when`s, leaves placed under leaves; hands each leaf to a `_LeafReader`."""

    def __init__(self, problems: Problems) -> None:
        self.problems = problems
        self.lines = SourceLines()
        self.leaves: list[Leaf] = []
        self.descriptions: dict[str, str] = {}  # category path -> description
        self.leaf_lines: dict[str, int] = {}  # leaf path -> line
        self.node_paths: dict[str, int] = {}  # every category and leaf path -> line
        self.leaf_reader = _LeafReader(problems, self.lines)

    def read_categories(self, doc: MarkedDict) -> list[str]:
        """Read `categories:`; return the root categories."""
        categories: list[str] = []
        roots = doc.get("categories")
        if roots is None:
            self.problems.add(
                doc.line, "categories", "missing: a taxonomy needs at least one category"
            )
        elif not isinstance(roots, MarkedDict) or not roots:
            self.problems.add(
                doc.key_line("categories"),
                "categories",
                "must be a non-empty mapping of root categories",
            )
        else:
            for key, node in roots.items():
                line = roots.key_line(key)
                if not self.check_name(key, line, ""):
                    continue
                if not isinstance(node, MarkedDict) or _looks_like_leaf(node):
                    self.problems.add(
                        line,
                        str(key),
                        "a root category must be a mapping of subcategories and leaves (not a leaf)",
                    )
                    continue
                categories.append(key)
                self.category(node, key, line, ())
        return categories

    def check_name(self, key: Any, line: int, prefix: str) -> bool:
        if not isinstance(key, str):
            shown = f"{prefix}.{key}" if prefix else str(key)
            self.problems.add(
                line,
                shown,
                f"key {key!r} is not a name (YAML read it as {type(key).__name__}; quote it)",
            )
            return False
        parts = key.split(".")
        if not all(_NAME.match(part) for part in parts):
            shown = f"{prefix}.{key}" if prefix else key
            self.problems.add(
                line, shown, f"{key!r}: names are lower_snake_case (a-z, 0-9, _), dots nest"
            )
            return False
        full = f"{prefix}.{key}" if prefix else key
        return self.claim(full, line)

    def claim(self, path: str, line: int) -> bool:
        """Record a node path; report paths defined twice (e.g. via dotted keys)."""
        if path in self.node_paths:
            self.problems.add(
                line, path, f"duplicate path (already defined at line {self.node_paths[path]})"
            )
            return False
        self.node_paths[path] = line
        return True

    def category(self, node: MarkedDict, prefix: str, line: int, whens: Whens) -> None:
        description = node.get("description")
        if description is not None:
            if not isinstance(description, str):
                self.problems.add(
                    node.key_line("description"), prefix, "description must be a string"
                )
            else:
                self.descriptions[prefix] = description
        whens = _add_when(node, prefix, whens, self.problems)
        children = [key for key in node if key not in CATEGORY_KEYS]
        if not children:
            self.problems.add(line, prefix, "empty category (no leaves or subcategories)")
        for key in children:
            child = node[key]
            child_line = node.key_line(key)
            if not self.check_name(key, child_line, prefix):
                continue
            path = f"{prefix}.{key}"
            # dotted keys nest: an intermediate path must not be a leaf
            parts = key.split(".")
            for i in range(1, len(parts)):
                intermediate = f"{prefix}.{'.'.join(parts[:i])}"
                if intermediate in self.leaf_lines:
                    self.problems.add(
                        child_line,
                        path,
                        f"{intermediate} is a leaf (line {self.leaf_lines[intermediate]}), "
                        "not a category",
                    )
            if isinstance(child, str) or isinstance(child, MarkedList):
                self.leaf(path, child, child_line, whens)
            elif isinstance(child, MarkedDict):
                if _looks_like_leaf(child):
                    self.leaf(path, child, child_line, whens)
                else:
                    self.category(child, path, child_line, whens)
            else:
                self.problems.add(
                    child_line,
                    path,
                    "expected a category (mapping), a leaf (mapping with kind), a list of values "
                    f"or a description string; found {_type_name(child)}",
                )

    def leaf(self, path: str, node: Any, line: int, whens: Whens) -> None:
        for other, other_line in self.leaf_lines.items():
            if other.startswith(path + "."):
                self.problems.add(
                    line, path, f"is a leaf but {other} (line {other_line}) is below it"
                )
        for i in range(1, path.count(".") + 1):
            prefix = path.rsplit(".", i)[0]
            if prefix in self.leaf_lines:
                self.problems.add(
                    line,
                    path,
                    f"{prefix} is a leaf (line {self.leaf_lines[prefix]}), not a category",
                )
        self.leaf_lines[path] = line
        leaf = self.leaf_reader.read(path, node, line, whens, index=len(self.leaves))
        if leaf is not None:
            self.leaves.append(leaf)


# ----------------------------------------------------------------------------- leaves


class _LeafReader:
    """Reads one leaf (a description string, a list of values or a mapping) into a Leaf,
    recording in `lines` where its `given`, `when`s and table rows were read."""

    def __init__(self, problems: Problems, lines: SourceLines) -> None:
        self.problems = problems
        self.lines = lines

    def read(self, path: str, node: Any, line: int, whens: Whens, index: int) -> Leaf | None:
        """The leaf, or None when its kind cannot be told."""
        if isinstance(node, str):
            self.lines.when[path] = [when_line for _, when_line in whens]
            if not node.strip():
                self.problems.add(line, path, "empty description for a generated leaf")
            texts = tuple(text for text, _ in whens)
            return Leaf(path, "generated", node.strip(), line=line, index=index, when=texts)
        if isinstance(node, MarkedList):
            self.lines.when[path] = [when_line for _, when_line in whens]
            values, weights = self.weights(node, path, line)
            return Leaf(
                path,
                "categorical",
                line=line,
                index=index,
                values=values,
                weights=weights,
                when=tuple(text for text, _ in whens),
            )
        assert isinstance(node, MarkedDict)
        kind = self.kind(node, path)
        if kind is None:
            return None
        description = node.get("description", "")
        if not isinstance(description, str):
            self.problems.add(node.key_line("description"), path, "description must be a string")
            description = ""
        whens = _add_when(node, path, whens, self.problems)
        self.lines.when[path] = [when_line for _, when_line in whens]
        common = {
            "description": description.strip(),
            "line": line,
            "index": index,
            "when": tuple(text for text, _ in whens),
        }
        if kind == "generated":
            if not description.strip():
                self.problems.add(
                    line, path, "a generated leaf needs a description to guide the model"
                )
            return Leaf(path, "generated", **common)
        if kind == "identity":
            return self.identity(node, path, line, common)
        given = self.given(node, path)
        if kind == "categorical":
            return self.categorical(node, path, line, given, common)
        return self.numeric(node, path, line, given, common)

    def identity(self, node: MarkedDict, path: str, line: int, common: dict[str, Any]) -> Leaf:
        """A name drawn for the `country` (and `gender`) attributes; `genders` maps gender
        values to female | male | any. References are checked in `checks`."""
        refs: dict[str, str | None] = {}
        for key in ("country", "gender"):
            raw = node.get(key)
            if raw is None:
                if key == "country":
                    self.problems.add(
                        line,
                        path,
                        "an identity leaf needs country: (the attribute path it follows)",
                    )
                refs[key] = None
            elif not isinstance(raw, str) or "." not in raw:
                self.problems.add(
                    node.key_line(key), path, f"{key} must be an attribute path, got {raw!r}"
                )
                refs[key] = None
            else:
                refs[key] = raw.strip()
                self.lines.given[(path, raw.strip())] = node.key_line(key)
        genders: dict[str, str] = {}
        raw_genders = node.get("genders")
        if raw_genders is not None:
            if refs["gender"] is None and "gender" not in node:
                self.problems.add(node.key_line("genders"), path, "genders: needs gender:")
            raw_genders = self.mapping(
                node,
                "genders",
                path,
                "genders must be a mapping of gender value -> female | male | any",
            )
            if raw_genders is not None:
                for value, cls in raw_genders.items():
                    name = self.value_name(value, f"{path}.genders", raw_genders.key_line(value))
                    if name is None:
                        continue
                    if cls not in identity.GENDER_CLASSES:
                        self.problems.add(
                            raw_genders.key_line(value),
                            f"{path}.genders.{name}",
                            f"{cls!r} is not one of {', '.join(identity.GENDER_CLASSES)}",
                        )
                        continue
                    genders[name] = cls
        spec = IdentitySpec(refs["country"] or "", refs["gender"], genders)
        return Leaf(path, "identity", identity=spec, **common)

    def kind(self, node: MarkedDict, path: str) -> str | None:
        """The leaf's kind (told or guessed from its keys); reports keys it does not take."""
        kind = node.get("kind")
        if kind is None:
            kind = "numeric" if "range" in node or "distribution" in node else "categorical"
            if "values" not in node and "table" not in node and kind == "categorical":
                kind = "generated" if "description" in node else None
        if kind not in KINDS:
            self.problems.add(
                node.key_line("kind"), path, f"unknown kind {kind!r} (expected {', '.join(KINDS)})"
            )
            return None
        for key in node:
            if key not in LEAF_KEYS[kind]:
                if key in ALL_LEAF_KEYS:
                    self.problems.add(
                        node.key_line(key), path, f"{key!r} does not apply to a {kind} leaf"
                    )
                else:
                    self.problems.add(node.key_line(key), path, f"unknown key {key!r}")
        return kind

    def given(self, node: MarkedDict, path: str) -> tuple[str, ...] | None:
        if "given" not in node:
            return None
        raw = node["given"]
        items = list(raw) if isinstance(raw, MarkedList) else [raw]
        if not items or not all(isinstance(item, str) and "." in item for item in items):
            self.problems.add(
                node.key_line("given"),
                path,
                f"given must be an attribute path or a list of them, got {raw!r}",
            )
            return None
        if len(set(items)) != len(items):
            self.problems.add(node.key_line("given"), path, "given lists an attribute twice")
            return None
        for item in items:
            self.lines.given[(path, item)] = node.key_line("given")
        return tuple(items)

    # -- categorical

    def categorical(
        self,
        node: MarkedDict,
        path: str,
        line: int,
        given: tuple[str, ...] | None,
        common: dict[str, Any],
    ) -> Leaf:
        values: tuple[str, ...] = ()
        weights: tuple[float, ...] | None = None
        if "values" in node:
            values, weights = self.weights(node["values"], path, node.key_line("values"))
        table: dict[str, Any] = {}
        if "table" in node:
            if given is None:
                self.problems.add(
                    node.key_line("table"),
                    path,
                    "table needs given: (the attribute its rows are keyed by)",
                )
            table, values = self.categorical_table(node, path, values)
        elif given is not None:
            self.problems.add(
                node.key_line("given"), path, "given: needs a table: of weights per value"
            )
        if "values" not in node and "table" not in node:
            self.problems.add(line, path, "a categorical leaf needs values: (or given: and table:)")
        return Leaf(
            path,
            "categorical",
            values=values,
            weights=weights,
            given=given or (),
            table=table,
            **common,
        )

    def weights(self, raw: Any, path: str, line: int) -> tuple[tuple[str, ...], tuple[float, ...]]:
        """`{value: weight}` or `[value, ...]` -> (values, weights); reports every bad entry."""
        if isinstance(raw, MarkedList):
            if not raw:
                self.problems.add(line, path, "empty list of values")
                return (), ()
            values: list[str] = []
            for i, item in enumerate(raw):
                item_line = raw.item_line(i)
                value = self.value_name(item, path, item_line)
                if value is None:
                    continue
                if value in values:
                    self.problems.add(item_line, path, f"duplicate value {value!r}")
                    continue
                values.append(value)
            return tuple(values), tuple(1.0 for _ in values)
        if isinstance(raw, MarkedDict):
            if not raw:
                self.problems.add(line, path, "empty weight table")
                return (), ()
            values, weights = [], []
            for key, weight in raw.items():
                key_line = raw.key_line(key)
                value = self.value_name(key, path, key_line)
                if value is None:
                    continue
                if not is_number(weight) or (
                    isinstance(weight, float) and not math.isfinite(weight)
                ):
                    self.problems.add(
                        key_line, path, f"weight of {value!r} must be a number, got {weight!r}"
                    )
                    continue
                if weight < 0:
                    self.problems.add(key_line, path, f"weight of {value!r} is negative ({weight})")
                    continue
                if value in values:
                    self.problems.add(key_line, path, f"duplicate value {value!r}")
                    continue
                values.append(value)
                weights.append(float(weight))
            if weights and sum(weights) <= 0:
                self.problems.add(line, path, "all weights are zero")
            return tuple(values), tuple(weights)
        self.problems.add(
            line,
            path,
            f"values must be a list or a mapping of value: weight, got {_type_name(raw)}",
        )
        return (), ()

    def value_name(self, item: Any, path: str, line: int) -> str | None:
        if isinstance(item, bool) or item is None:
            self.problems.add(
                line,
                path,
                f"value {item!r} is not text (YAML reads yes/no/on/off/null specially; quote it)",
            )
            return None
        if is_number(item):
            return str(item)
        if not isinstance(item, str) or not item.strip():
            self.problems.add(
                line, path, f"value must be a non-empty string, got {_type_name(item)}"
            )
            return None
        return item.strip()

    def mapping(self, node: MarkedDict, key: str, path: str, message: str) -> MarkedDict | None:
        """`node[key]` when it is a non-empty mapping; else `message` is reported at the
        key's line and None returned."""
        raw = node[key]
        if not isinstance(raw, MarkedDict) or not raw:
            self.problems.add(node.key_line(key), path, message)
            return None
        return raw

    def table_rows(self, node: MarkedDict, path: str) -> MarkedDict | None:
        return self.mapping(
            node, "table", path, "table must be a non-empty mapping: given value -> row"
        )

    def categorical_table(
        self, node: MarkedDict, path: str, values: tuple[str, ...]
    ) -> tuple[dict[str, Any], tuple[str, ...]]:
        """Rows of weights keyed by `given` values, and the leaf's values (the rows' values
        when the leaf lists none)."""
        raw = self.table_rows(node, path)
        if raw is None:
            return {}, values
        domain = list(values)
        rows: dict[str, dict[str, float]] = {}
        for key, row in raw.items():
            key_line = raw.key_line(key)
            row_key = self.value_name(key, f"{path}.table", key_line)
            if row_key is None:
                continue
            row_path = f"{path}.table[{row_key}]"
            row_values, row_weights = self.weights(row, row_path, key_line)
            if not row_values:
                continue
            for value in row_values:
                if value not in domain:
                    if values:
                        self.problems.add(
                            key_line, row_path, f"{value!r} is not one of the leaf's values"
                        )
                        self.lines.reported_rows.add((path, row_key))
                    else:
                        domain.append(value)
            rows[row_key] = dict(zip(row_values, row_weights, strict=True))
            self.lines.rows[(path, row_key)] = key_line
        table = {key: tuple(row.get(value, 0.0) for value in domain) for key, row in rows.items()}
        return table, tuple(domain)

    # -- numeric

    def numeric(
        self,
        node: MarkedDict,
        path: str,
        line: int,
        given: tuple[str, ...] | None,
        common: dict[str, Any],
    ) -> Leaf:
        whole = node.get("integer", False) is True  # ranges must then hold a whole number
        spec = self.numeric_spec(
            node, path, None, required="table" not in node, where=line, integer=whole
        )
        table = {}
        if "table" in node:
            if given is None:
                self.problems.add(
                    node.key_line("table"),
                    path,
                    "table needs given: (the attribute its rows are keyed by)",
                )
            table = self.numeric_table(node, path, spec, integer=whole)
        elif given is not None:
            self.problems.add(
                node.key_line("given"), path, "given: needs a table: of distributions per value"
            )
        integer = node.get("integer", False)
        if not isinstance(integer, bool):
            self.problems.add(node.key_line("integer"), path, "integer must be true or false")
            integer = False
        step = node.get("step")
        if step is not None and (not is_number(step) or step <= 0):
            self.problems.add(
                node.key_line("step"), path, f"step must be a positive number, got {step!r}"
            )
            step = None
        decimals = node.get(
            "decimals", 0 if integer or (step is not None and float(step).is_integer()) else 1
        )
        if not isinstance(decimals, int) or isinstance(decimals, bool) or not 0 <= decimals <= 6:
            self.problems.add(
                node.key_line("decimals"),
                path,
                f"decimals must be an integer 0..6, got {decimals!r}",
            )
            decimals = 1
        if integer:
            decimals = 0
        unit = node.get("unit")
        if unit is not None and (not isinstance(unit, str) or not unit.strip()):
            self.problems.add(node.key_line("unit"), path, "unit must be a non-empty string")
            unit = None
        scale = self.scales(node, path)
        return Leaf(
            path,
            "numeric",
            unit=unit.strip() if unit else None,
            numeric=spec,
            given=given or (),
            table=table,
            integer=integer,
            decimals=decimals,
            step=float(step) if step is not None else None,
            scale=scale,
            **common,
        )

    def numeric_spec(
        self,
        node: MarkedDict,
        path: str,
        base: NumericSpec | None,
        required: bool,
        where: int,
        integer: bool,
    ) -> NumericSpec | None:
        """Read range/distribution/params, inheriting from `base` (the leaf-level spec)."""
        ok = True
        low, high = (base.low, base.high) if base else (None, None)
        if "range" in node:
            bounds = node["range"]
            range_line = node.key_line("range")
            if (
                not isinstance(bounds, MarkedList)
                or len(bounds) != 2
                or not all(is_number(bound) for bound in bounds)
            ):
                self.problems.add(
                    range_line, path, f"range must be [min, max] with two numbers, got {bounds!r}"
                )
                ok = False
            else:
                low, high = float(bounds[0]), float(bounds[1])
                shown = f"[{bounds[0]}, {bounds[1]}]"
                if low > high:
                    self.problems.add(range_line, path, f"inverted range {shown} (min > max)")
                    ok = False
                elif integer and math.ceil(low) > math.floor(high):
                    self.problems.add(
                        range_line, path, f"empty range {shown} (no whole number in it)"
                    )
                    ok = False
                elif low == high and not integer:
                    self.problems.add(range_line, path, f"empty range {shown} (min == max)")
                    ok = False
        elif low is None:
            if required:
                self.problems.add(where, path, "a numeric leaf needs range: [min, max]")
            return None
        distribution = node.get("distribution", base.distribution if base else "uniform")
        if distribution not in DISTRIBUTIONS:
            self.problems.add(
                node.key_line("distribution"),
                path,
                f"unknown distribution {distribution!r} (expected {', '.join(DISTRIBUTIONS)})",
            )
            return None
        params: dict[str, float | None] = {}
        for key in ("mean", "sd", "median", "sigma"):
            value = node.get(key, getattr(base, key) if base else None)
            if key in node and not is_number(value):
                self.problems.add(
                    node.key_line(key), path, f"{key} must be a number, got {value!r}"
                )
                ok = False
                value = None
            params[key] = float(value) if value is not None else None
        if distribution == "normal":
            if params["mean"] is None or params["sd"] is None:
                self.problems.add(where, path, "a normal distribution needs mean and sd")
                ok = False
            elif params["sd"] <= 0:
                self.problems.add(
                    node.key_line("sd"), path, f"sd must be > 0, got {params['sd']:g}"
                )
                ok = False
        if distribution == "lognormal":
            if params["median"] is None or params["sigma"] is None:
                self.problems.add(where, path, "a lognormal distribution needs median and sigma")
                ok = False
            else:
                if params["median"] <= 0:
                    self.problems.add(
                        node.key_line("median"),
                        path,
                        f"median must be > 0, got {params['median']:g}",
                    )
                    ok = False
                if params["sigma"] <= 0:
                    self.problems.add(
                        node.key_line("sigma"), path, f"sigma must be > 0, got {params['sigma']:g}"
                    )
                    ok = False
            if ok and low is not None and high is not None and high <= 0:
                self.problems.add(
                    node.key_line("range") if "range" in node else where,
                    path,
                    "a lognormal range must reach above 0",
                )
                ok = False
        if not ok or low is None or high is None:
            return None
        return NumericSpec(low, high, distribution, **params)

    def numeric_table(
        self, node: MarkedDict, path: str, base: NumericSpec | None, integer: bool
    ) -> dict[str, Any]:
        """Rows of distributions keyed by `given` values; a row inherits what it leaves
        out from the leaf's own range and distribution."""
        raw = self.table_rows(node, path)
        if raw is None:
            return {}
        table: dict[str, Any] = {}
        for key, row in raw.items():
            key_line = raw.key_line(key)
            row_key = self.value_name(key, f"{path}.table", key_line)
            if row_key is None:
                continue
            row_path = f"{path}.table[{row_key}]"
            if isinstance(row, MarkedList):  # shorthand: a row is just a range
                row = _range_row(row, key_line)
            if not isinstance(row, MarkedDict):
                self.problems.add(
                    key_line,
                    row_path,
                    f"a numeric table row is [min, max] or a mapping of {', '.join(NUMERIC_PARAMS)}",
                )
                continue
            for param in row:
                if param not in NUMERIC_PARAMS:
                    self.problems.add(
                        row.key_line(param),
                        row_path,
                        f"unknown key {param!r} in a numeric table row",
                    )
            spec = self.numeric_spec(
                row, row_path, base, required=True, where=key_line, integer=integer
            )
            if spec is not None:
                table[row_key] = spec
                self.lines.rows[(path, row_key)] = key_line
        return table

    def scales(self, node: MarkedDict, path: str) -> tuple[Scale, ...]:
        if "scale" not in node:
            return ()
        raw = node["scale"]
        items = raw if isinstance(raw, MarkedList) else [raw]
        out = []
        for i, item in enumerate(items):
            scale = self.scale(item, path, _scale_line(node, raw, i))
            if scale is not None:
                out.append(scale)
        return tuple(out)

    def scale(self, item: Any, path: str, line: int) -> Scale | None:
        """One `{given: PATH, factors: {value: factor}, default: 1.0}` entry."""
        if not isinstance(item, MarkedDict) or "given" not in item or "factors" not in item:
            self.problems.add(
                line,
                path,
                "scale entries are {given: PATH, factors: {value: factor}, default: 1.0}",
            )
            return None
        for key in item:
            if key not in SCALE_KEYS:
                self.problems.add(item.key_line(key), path, f"unknown key {key!r} in scale")
        given = item["given"]
        if not isinstance(given, str) or "." not in given:
            self.problems.add(
                item.key_line("given"),
                path,
                f"scale given must be an attribute path, got {given!r}",
            )
            return None
        factors: dict[str, float] = {}
        raw_factors = self.mapping(
            item, "factors", path, "scale factors must be a non-empty mapping value: factor"
        )
        if raw_factors is None:
            return None
        for key, factor in raw_factors.items():
            value = self.value_name(key, path, raw_factors.key_line(key))
            if value is None:
                continue
            if not is_number(factor) or factor <= 0:
                self.problems.add(
                    raw_factors.key_line(key),
                    path,
                    f"scale factor of {value!r} must be a positive number, got {factor!r}",
                )
                continue
            factors[value] = float(factor)
        default = item.get("default", 1.0)
        if not is_number(default) or default <= 0:
            self.problems.add(
                item.key_line("default"),
                path,
                f"scale default must be a positive number, got {default!r}",
            )
            default = 1.0
        return Scale(given, factors, float(default), item.key_line("given"))


# ----------------------------------------------------------------------------- helpers


def _add_when(node: MarkedDict, path: str, whens: Whens, problems: Problems) -> Whens:
    """The `when`s in force below `node`: those above and its own, if it has a valid one."""
    if "when" not in node:
        return whens
    when = node["when"]
    if not isinstance(when, str) or not when.strip():
        problems.add(node.key_line("when"), path, "when must be an expression string")
        return whens
    return (*whens, (when, node.key_line("when")))


def _range_row(bounds: MarkedList, line: int) -> MarkedDict:
    """A numeric table row written as just `[min, max]`, as the mapping `{range: [...]}`."""
    row = MarkedDict(range=bounds)
    row.line, row.lines, row.duplicates = line, {"range": line}, []
    return row


def _scale_line(node: MarkedDict, raw: Any, i: int) -> int:
    return raw.item_line(i) if isinstance(raw, MarkedList) else node.key_line("scale")


def _looks_like_leaf(node: MarkedDict) -> bool:
    return any(key in node for key in ("kind", "values", "range", "distribution", "table"))


def _type_name(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, MarkedDict):
        return "a mapping"
    if isinstance(value, MarkedList):
        return "a list"
    return f"{type(value).__name__} {value!r}"


def _line_at(raw: Any, loc: tuple[Any, ...], default: int) -> int:
    """The line of the YAML node at a pydantic error location (or the nearest above)."""
    node, line = raw, default
    for part in loc:
        if isinstance(node, MarkedDict) and part in node:
            line = node.key_line(part)
            node = node[part]
        elif isinstance(node, MarkedList) and isinstance(part, int) and part < len(node):
            line = node.item_line(part)
            node = node[part]
        else:
            break
    return line
