"""Attribute taxonomies: load a YAML tree, validate all of it, expose its leaves.

The format is documented in docs/taxonomy.md. Loading collects every problem of a file
(YAML syntax, duplicate keys, unknown kinds and keys, bad weights and ranges, unknown or
later attribute references, condition cycles...) and raises one `TaxonomyError` whose
message lists them all, one per line, as `file:line: attribute.path: message`.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from personaloom import expressions as ex
from personaloom.errors import UserError, read_utf8
from personaloom.sampling_settings import SamplingSettings, TaxonomySampling
from personaloom.yamlmarks import MarkedDict, MarkedList, YamlSyntaxError, is_number, load_marked

KINDS = ("categorical", "numeric", "generated")
DISTRIBUTIONS = ("uniform", "normal", "lognormal")
TOP_KEYS = ("name", "version", "description", "anchors", "sampling", "categories")
CATEGORY_KEYS = ("description", "when")
NUMERIC_PARAMS = ("range", "distribution", "mean", "sd", "median", "sigma")
LEAF_KEYS = {
    "categorical": {"kind", "description", "values", "given", "table", "when"},
    "numeric": {"kind", "description", "unit", "integer", "decimals", "step", "given", "table"}
    | {"when", "scale"}
    | set(NUMERIC_PARAMS),
    "generated": {"kind", "description", "when"},
}
ALL_LEAF_KEYS = set().union(*LEAF_KEYS.values())
DEFAULT_ROW = "*"
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class TaxonomyError(UserError):
    """A taxonomy (or rule) file with problems; `problems` holds one line per problem."""

    def __init__(self, file: str, problems: list[str]) -> None:
        self.file = file
        self.problems = problems
        head = f"{file}: {len(problems)} problem{'s' if len(problems) != 1 else ''}"
        super().__init__("\n".join([head, *problems]))


@dataclass(frozen=True)
class NumericSpec:
    """Distribution of a numeric leaf (or of one row of its conditional table)."""

    low: float
    high: float
    distribution: str = "uniform"
    mean: float | None = None
    sd: float | None = None
    median: float | None = None
    sigma: float | None = None


@dataclass(frozen=True)
class Scale:
    """Multiply a numeric value by a factor chosen by another attribute's value."""

    given: str
    factors: dict[str, float]
    default: float = 1.0
    line: int = 0


@dataclass(frozen=True, eq=False)
class Leaf:
    """One attribute of the taxonomy."""

    path: str
    kind: str
    description: str = ""
    unit: str | None = None
    line: int = 0
    index: int = 0  # position in file order
    # categorical
    values: tuple[str, ...] = ()
    weights: tuple[float, ...] | None = None  # the unconditional table (None: table rows only)
    given: tuple[str, ...] = ()  # attributes the table rows are keyed by
    table: dict[str, Any] = field(default_factory=dict)  # row key -> weights | NumericSpec
    # numeric
    numeric: NumericSpec | None = None
    integer: bool = False
    decimals: int = 0
    step: float | None = None
    scale: tuple[Scale, ...] = ()
    # conditions (category `when`s and the leaf's own, and-ed)
    when: tuple[str, ...] = ()

    @property
    def root(self) -> str:
        return self.path.split(".", 1)[0]

    @property
    def parent(self) -> str:
        return self.path.rsplit(".", 1)[0]

    @property
    def name(self) -> str:
        return self.path.rsplit(".", 1)[-1]

    @property
    def depth(self) -> int:
        return self.path.count(".") + 1

    @property
    def sampled(self) -> bool:
        return self.kind != "generated"

    @property
    def depends_on(self) -> tuple[str, ...]:
        """Attributes this leaf's value or condition reads, in order, without repeats."""
        seen: dict[str, None] = {}
        for g in self.given:
            seen.setdefault(g, None)
        for s in self.scale:
            seen.setdefault(s.given, None)
        for text in self.when:
            for p in ex.paths(ex.parse(text)):
                seen.setdefault(p, None)
        return tuple(seen)

    def row_key(self, combo: tuple[str | None, ...]) -> str | None:
        """The table row for values of the `given` attributes (None = absent): the
        matching row with the fewest `*` components, the first in the file on ties."""
        best, best_score = None, -1
        for key in self.table:
            parts = split_row_key(key, len(self.given))
            if len(parts) != len(combo):
                continue
            score = 0
            for part, value in zip(parts, combo, strict=True):
                if part == DEFAULT_ROW:
                    continue
                if part != value:
                    score = -1
                    break
                score += 1
            if score > best_score:
                best, best_score = key, score
        return best

    def row(self, combo: tuple[str | None, ...]) -> Any:
        """Weights (categorical) or NumericSpec (numeric) for the given attributes' values."""
        key = self.row_key(combo)
        if key is not None:
            return self.table[key]
        default = self.weights if self.kind == "categorical" else self.numeric
        return default if default is not None else next(iter(self.table.values()))

    def __repr__(self) -> str:
        return f"Leaf({self.path!r}, {self.kind})"


def split_row_key(key: str, n: int) -> list[str]:
    """`a | b` -> [a, b]; a lone `*` matches everything."""
    if key == DEFAULT_ROW:
        return [DEFAULT_ROW] * n
    return [p.strip() for p in key.split("|")]


@dataclass(frozen=True, eq=False)
class Taxonomy:
    name: str
    version: str
    description: str
    leaves: list[Leaf]
    categories: list[str]
    anchors: list[str]
    sampling: TaxonomySampling
    source: str = "<memory>"
    category_descriptions: dict[str, str] = field(default_factory=dict)

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    @cached_property
    def _by_path(self) -> dict[str, Leaf]:
        return {leaf.path: leaf for leaf in self.leaves}

    def leaf(self, path: str) -> Leaf:
        try:
            return self._by_path[path]
        except KeyError:
            raise KeyError(f"{self.ref}: no attribute {path!r}") from None

    def __contains__(self, path: object) -> bool:
        return path in self._by_path

    @cached_property
    def sampling_order(self) -> list[Leaf]:
        """Sampled (non-generated) leaves in sampling order: anchors, then file order."""
        anchors = [self._by_path[a] for a in self.anchors]
        anchor_set = set(self.anchors)
        rest = [leaf for leaf in self.leaves if leaf.sampled and leaf.path not in anchor_set]
        return anchors + rest

    @property
    def generated_leaves(self) -> list[Leaf]:
        return [leaf for leaf in self.leaves if leaf.kind == "generated"]

    @property
    def depth(self) -> int:
        return max((leaf.depth for leaf in self.leaves), default=0)

    def settings(self, preset: str = "quick", **overrides: Any) -> SamplingSettings:
        """Sampling settings of a preset with this taxonomy's overrides applied."""
        return self.sampling.settings(preset, **overrides)

    def stats(self) -> dict[str, Any]:
        kinds = {k: sum(1 for leaf in self.leaves if leaf.kind == k) for k in KINDS}
        subcategories = {leaf.parent for leaf in self.leaves if leaf.depth > 1}
        return {
            "taxonomy": self.ref,
            "leaves": len(self.leaves),
            **kinds,
            "conditional": sum(1 for leaf in self.leaves if leaf.when or leaf.given or leaf.scale),
            "depth": self.depth,
            "categories": len(self.categories),
            "subcategories": len(subcategories),
            "anchors": list(self.anchors),
            "per_category": {
                c: sum(1 for leaf in self.leaves if leaf.root == c) for c in self.categories
            },
        }


# ----------------------------------------------------------------------------- loading


def load_taxonomy(path: str | Path) -> Taxonomy:
    """Load and validate a taxonomy file; raises TaxonomyError listing all problems."""
    path = Path(path)
    return parse_taxonomy(read_utf8(path, "taxonomy"), source=str(path))


def parse_taxonomy(text: str, source: str = "<memory>") -> Taxonomy:
    return _Loader(source).load(text)


class _Loader:
    def __init__(self, source: str) -> None:
        self.source = source
        self.bad_rows: set[tuple[str, str]] = set()  # rows already reported
        self.integer = False  # is the numeric leaf being read integer-valued?
        self.problems: list[tuple[int, str, str]] = []

    def err(self, line: int | None, path: str, message: str) -> None:
        self.problems.append((line or 0, path, message))

    def fail(self) -> TaxonomyError:
        seen: set[tuple[int, str, str]] = set()
        lines = []
        for line, path, message in sorted(self.problems, key=lambda p: p[0]):
            if (line, path, message) in seen:
                continue
            seen.add((line, path, message))
            where = f"{self.source}:{line}" if line else self.source
            lines.append(f"{where}: {path or '(file)'}: {message}")
        return TaxonomyError(self.source, lines)

    # -- entry point
    def load(self, text: str) -> Taxonomy:
        try:
            doc = load_marked(text)
        except YamlSyntaxError as exc:
            self.err(exc.line, "(yaml)", exc.message)
            raise self.fail() from None
        if not isinstance(doc, MarkedDict):
            self.err(1, "(file)", "a taxonomy is a mapping with name, version and categories")
            raise self.fail()
        self.report_duplicates(doc, "")
        for key in doc:
            if key not in TOP_KEYS:
                self.err(
                    doc.key_line(key),
                    str(key),
                    f"unknown top-level key (expected one of {', '.join(TOP_KEYS)})",
                )
        name = self.text_field(doc, "name", required=True)
        if name and not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", name):
            self.err(doc.key_line("name"), "name", f"{name!r}: use letters, digits, - _ .")
        version = self.text_field(doc, "version", required=True)
        description = self.text_field(doc, "description") or ""
        sampling = self.sampling_block(doc)

        self.leaves: list[Leaf] = []
        self.leaf_lines: dict[str, int] = {}
        self.node_paths: dict[str, int] = {}  # every category path -> line
        self.cat_descriptions: dict[str, str] = {}
        categories: list[str] = []
        cats = doc.get("categories")
        if cats is None:
            self.err(doc.line, "categories", "missing: a taxonomy needs at least one category")
        elif not isinstance(cats, MarkedDict) or not cats:
            self.err(
                doc.key_line("categories"),
                "categories",
                "must be a non-empty mapping of root categories",
            )
        else:
            for key, node in cats.items():
                line = cats.key_line(key)
                if not self.check_name(key, line, ""):
                    continue
                if not isinstance(node, MarkedDict) or _looks_like_leaf(node):
                    self.err(
                        line,
                        str(key),
                        "a root category must be a mapping of subcategories and leaves (not a leaf)",
                    )
                    continue
                categories.append(key)
                self.category(node, key, line, ())
        if not self.leaves and not self.problems:
            self.err(doc.line, "categories", "no leaves")
        anchors = self.anchor_list(doc)
        self.check_references(anchors, categories, sampling)
        if self.problems:
            raise self.fail()
        return Taxonomy(
            name=name or "",
            version=version or "",
            description=description,
            leaves=self.leaves,
            categories=categories,
            anchors=anchors,
            sampling=sampling,
            source=self.source,
            category_descriptions=self.cat_descriptions,
        )

    # -- helpers
    def report_duplicates(self, node: Any, prefix: str) -> None:
        if isinstance(node, MarkedDict):
            for key, line, first in node.duplicates:
                where = f"{prefix}.{key}" if prefix else str(key)
                self.err(line, where, f"duplicate key {key!r} (first defined at line {first})")
            for key, child in node.items():
                if prefix == "" and key == "categories":
                    child_prefix = ""
                    if isinstance(child, MarkedDict):
                        for k, line, first in child.duplicates:
                            self.err(
                                line, str(k), f"duplicate key {k!r} (first defined at line {first})"
                            )
                        for k, grandchild in child.items():
                            self.report_duplicates(grandchild, str(k))
                    continue
                child_prefix = f"{prefix}.{key}" if prefix else str(key)
                self.report_duplicates(child, child_prefix)
        elif isinstance(node, MarkedList):
            for item in node:
                self.report_duplicates(item, prefix)

    def text_field(self, doc: MarkedDict, key: str, required: bool = False) -> str | None:
        if key not in doc:
            if required:
                self.err(doc.line, key, "missing (required)")
            return None
        value = doc[key]
        if not isinstance(value, str) or not value.strip():
            hint = ' (quote it, e.g. "1.0")' if key == "version" and is_number(value) else ""
            self.err(doc.key_line(key), key, f"must be a non-empty string{hint}")
            return None
        return value.strip()

    def sampling_block(self, doc: MarkedDict) -> TaxonomySampling:
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
            for e in exc.errors():
                loc = ".".join(str(p) for p in e["loc"])
                self.err(_line_at(raw, e["loc"], line), f"sampling.{loc}", e["msg"])
        except ValueError as exc:
            self.err(line, "sampling", str(exc))
        return TaxonomySampling()

    def check_name(self, key: Any, line: int, prefix: str) -> bool:
        if not isinstance(key, str):
            shown = f"{prefix}.{key}" if prefix else str(key)
            self.err(
                line,
                shown,
                f"key {key!r} is not a name (YAML read it as {type(key).__name__}; quote it)",
            )
            return False
        parts = key.split(".")
        if not all(_NAME.match(p) for p in parts):
            shown = f"{prefix}.{key}" if prefix else key
            self.err(line, shown, f"{key!r}: names are lower_snake_case (a-z, 0-9, _), dots nest")
            return False
        full = f"{prefix}.{key}" if prefix else key
        return self.claim(full, line)

    def claim(self, path: str, line: int) -> bool:
        """Record a node path; report paths defined twice (e.g. via dotted keys)."""
        if path in self.node_paths:
            self.err(
                line, path, f"duplicate path (already defined at line {self.node_paths[path]})"
            )
            return False
        self.node_paths[path] = line
        return True

    def category(
        self, node: MarkedDict, prefix: str, line: int, whens: tuple[tuple[str, int], ...]
    ) -> None:
        desc = node.get("description")
        if desc is not None:
            if not isinstance(desc, str):
                self.err(node.key_line("description"), prefix, "description must be a string")
            else:
                self.cat_descriptions[prefix] = desc
        if "when" in node:
            w = node["when"]
            if not isinstance(w, str) or not w.strip():
                self.err(node.key_line("when"), prefix, "when must be an expression string")
            else:
                whens = (*whens, (w, node.key_line("when")))
        children = [k for k in node if k not in CATEGORY_KEYS]
        if not children:
            self.err(line, prefix, "empty category (no leaves or subcategories)")
        for key in children:
            child = node[key]
            cline = node.key_line(key)
            if not self.check_name(key, cline, prefix):
                continue
            path = f"{prefix}.{key}"
            # dotted keys nest: claim the intermediate paths so clashes are caught
            parts = key.split(".")
            for i in range(1, len(parts)):
                inter = f"{prefix}.{'.'.join(parts[:i])}"
                if inter in self.leaf_lines:
                    self.err(
                        cline,
                        path,
                        f"{inter} is a leaf (line {self.leaf_lines[inter]}), not a category",
                    )
            if isinstance(child, str) or isinstance(child, MarkedList):
                self.leaf(path, child, cline, whens)
            elif isinstance(child, MarkedDict):
                if _looks_like_leaf(child):
                    self.leaf(path, child, cline, whens)
                else:
                    self.category(child, path, cline, whens)
            else:
                self.err(
                    cline,
                    path,
                    "expected a category (mapping), a leaf (mapping with kind), a list of values "
                    f"or a description string; found {_type_name(child)}",
                )

    @cached_property
    def when_lines(self) -> dict[str, list[int]]:
        return {}

    # -- leaves
    def leaf(self, path: str, node: Any, line: int, whens: tuple[tuple[str, int], ...]) -> None:
        for other, oline in self.leaf_lines.items():
            if other.startswith(path + "."):
                self.err(line, path, f"is a leaf but {other} (line {oline}) is below it")
        for i in range(1, path.count(".") + 1):
            prefix = path.rsplit(".", i)[0]
            if prefix in self.leaf_lines:
                self.err(
                    line,
                    path,
                    f"{prefix} is a leaf (line {self.leaf_lines[prefix]}), not a category",
                )
        self.leaf_lines[path] = line
        self.when_lines[path] = [ln for _, ln in whens]
        index = len(self.leaves)
        texts = tuple(t for t, _ in whens)
        if isinstance(node, str):
            if not node.strip():
                self.err(line, path, "empty description for a generated leaf")
            self.leaves.append(
                Leaf(path, "generated", node.strip(), line=line, index=index, when=texts)
            )
            return
        if isinstance(node, MarkedList):
            values, weights = self.weights(node, path, line)
            self.leaves.append(
                Leaf(
                    path,
                    "categorical",
                    line=line,
                    index=index,
                    values=values,
                    weights=weights,
                    when=texts,
                )
            )
            return
        assert isinstance(node, MarkedDict)
        kind = node.get("kind")
        if kind is None:
            kind = "numeric" if "range" in node or "distribution" in node else "categorical"
            if "values" not in node and "table" not in node and kind == "categorical":
                kind = "generated" if "description" in node else None
        if kind not in KINDS:
            self.err(
                node.key_line("kind"), path, f"unknown kind {kind!r} (expected {', '.join(KINDS)})"
            )
            return
        for key in node:
            if key not in LEAF_KEYS[kind]:
                if key in ALL_LEAF_KEYS:
                    self.err(node.key_line(key), path, f"{key!r} does not apply to a {kind} leaf")
                else:
                    self.err(node.key_line(key), path, f"unknown key {key!r}")
        description = node.get("description", "")
        if not isinstance(description, str):
            self.err(node.key_line("description"), path, "description must be a string")
            description = ""
        if "when" in node:
            w = node["when"]
            if not isinstance(w, str) or not w.strip():
                self.err(node.key_line("when"), path, "when must be an expression string")
            else:
                whens = (*whens, (w, node.key_line("when")))
        self.when_lines[path] = [ln for _, ln in whens]
        common = {
            "description": description.strip(),
            "line": line,
            "index": index,
            "when": tuple(t for t, _ in whens),
        }
        if kind == "generated":
            if not description.strip():
                self.err(line, path, "a generated leaf needs a description to guide the model")
            self.leaves.append(Leaf(path, "generated", **common))
            return
        given = self.given(node, path)
        if kind == "categorical":
            values: tuple[str, ...] = ()
            weights: tuple[float, ...] | None = None
            if "values" in node:
                values, weights = self.weights(node["values"], path, node.key_line("values"))
            table: dict[str, Any] = {}
            if "table" in node:
                if given is None:
                    self.err(
                        node.key_line("table"),
                        path,
                        "table needs given: (the attribute its rows are keyed by)",
                    )
                table, values = self.cat_table(node, path, values)
            elif given is not None:
                self.err(node.key_line("given"), path, "given: needs a table: of weights per value")
            if "values" not in node and "table" not in node:
                self.err(line, path, "a categorical leaf needs values: (or given: and table:)")
            self.leaves.append(
                Leaf(
                    path,
                    "categorical",
                    values=values,
                    weights=weights,
                    given=given or (),
                    table=table,
                    **common,
                )
            )
            return
        # numeric
        self.integer = node.get("integer", False) is True
        spec = self.numeric_spec(node, path, None, required="table" not in node, where=line)
        table = {}
        if "table" in node:
            if given is None:
                self.err(
                    node.key_line("table"),
                    path,
                    "table needs given: (the attribute its rows are keyed by)",
                )
            table = self.num_table(node, path, spec)
        elif given is not None:
            self.err(
                node.key_line("given"), path, "given: needs a table: of distributions per value"
            )
        integer = node.get("integer", False)
        if not isinstance(integer, bool):
            self.err(node.key_line("integer"), path, "integer must be true or false")
            integer = False
        step = node.get("step")
        if step is not None and (not is_number(step) or step <= 0):
            self.err(node.key_line("step"), path, f"step must be a positive number, got {step!r}")
            step = None
        decimals = node.get(
            "decimals", 0 if integer or (step is not None and float(step).is_integer()) else 1
        )
        if not isinstance(decimals, int) or isinstance(decimals, bool) or not 0 <= decimals <= 6:
            self.err(
                node.key_line("decimals"),
                path,
                f"decimals must be an integer 0..6, got {decimals!r}",
            )
            decimals = 1
        if integer:
            decimals = 0
        unit = node.get("unit")
        if unit is not None and (not isinstance(unit, str) or not unit.strip()):
            self.err(node.key_line("unit"), path, "unit must be a non-empty string")
            unit = None
        scale = self.scales(node, path)
        self.leaves.append(
            Leaf(
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
        )

    def given(self, node: MarkedDict, path: str) -> tuple[str, ...] | None:
        if "given" not in node:
            return None
        raw = node["given"]
        items = list(raw) if isinstance(raw, MarkedList) else [raw]
        if not items or not all(isinstance(g, str) and "." in g for g in items):
            self.err(
                node.key_line("given"),
                path,
                f"given must be an attribute path or a list of them, got {raw!r}",
            )
            return None
        if len(set(items)) != len(items):
            self.err(node.key_line("given"), path, "given lists an attribute twice")
            return None
        for g in items:
            self.given_lines[(path, g)] = node.key_line("given")
        return tuple(items)

    @cached_property
    def given_lines(self) -> dict[tuple[str, str], int]:
        return {}

    def weights(self, raw: Any, path: str, line: int) -> tuple[tuple[str, ...], tuple[float, ...]]:
        """`{value: weight}` or `[value, ...]` -> (values, weights); reports every bad entry."""
        if isinstance(raw, MarkedList):
            if not raw:
                self.err(line, path, "empty list of values")
                return (), ()
            values: list[str] = []
            for i, item in enumerate(raw):
                iline = raw.item_line(i)
                v = self.value_name(item, path, iline)
                if v is None:
                    continue
                if v in values:
                    self.err(iline, path, f"duplicate value {v!r}")
                    continue
                values.append(v)
            return tuple(values), tuple(1.0 for _ in values)
        if isinstance(raw, MarkedDict):
            if not raw:
                self.err(line, path, "empty weight table")
                return (), ()
            values, weights = [], []
            for key, w in raw.items():
                kline = raw.key_line(key)
                v = self.value_name(key, path, kline)
                if v is None:
                    continue
                if not is_number(w) or (isinstance(w, float) and not math.isfinite(w)):
                    self.err(kline, path, f"weight of {v!r} must be a number, got {w!r}")
                    continue
                if w < 0:
                    self.err(kline, path, f"weight of {v!r} is negative ({w})")
                    continue
                if v in values:
                    self.err(kline, path, f"duplicate value {v!r}")
                    continue
                values.append(v)
                weights.append(float(w))
            if weights and sum(weights) <= 0:
                self.err(line, path, "all weights are zero")
            return tuple(values), tuple(weights)
        self.err(
            line,
            path,
            f"values must be a list or a mapping of value: weight, got {_type_name(raw)}",
        )
        return (), ()

    def value_name(self, item: Any, path: str, line: int) -> str | None:
        if isinstance(item, bool) or item is None:
            self.err(
                line,
                path,
                f"value {item!r} is not text (YAML reads yes/no/on/off/null specially; quote it)",
            )
            return None
        if is_number(item):
            return str(item)
        if not isinstance(item, str) or not item.strip():
            self.err(line, path, f"value must be a non-empty string, got {_type_name(item)}")
            return None
        return item.strip()

    def table_rows(self, node: MarkedDict, path: str) -> MarkedDict | None:
        raw = node["table"]
        if not isinstance(raw, MarkedDict) or not raw:
            self.err(
                node.key_line("table"),
                path,
                "table must be a non-empty mapping: given value -> row",
            )
            return None
        return raw

    def cat_table(
        self, node: MarkedDict, path: str, values: tuple[str, ...]
    ) -> tuple[dict[str, Any], tuple[str, ...]]:
        raw = self.table_rows(node, path)
        if raw is None:
            return {}, values
        domain = list(values)
        rows: dict[str, dict[str, float]] = {}
        for key, row in raw.items():
            kline = raw.key_line(key)
            k = self.value_name(key, f"{path}.table", kline)
            if k is None:
                continue
            vals, ws = self.weights(row, f"{path}.table[{k}]", kline)
            if not vals:
                continue
            for v in vals:
                if v not in domain:
                    if values:
                        self.err(
                            kline, f"{path}.table[{k}]", f"{v!r} is not one of the leaf's values"
                        )
                        self.bad_rows.add((path, k))
                    else:
                        domain.append(v)
            rows[k] = dict(zip(vals, ws, strict=True))
            self.row_lines[(path, k)] = kline
        table = {k: tuple(row.get(v, 0.0) for v in domain) for k, row in rows.items()}
        return table, tuple(domain)

    @cached_property
    def row_lines(self) -> dict[tuple[str, str], int]:
        return {}

    def numeric_spec(
        self, node: MarkedDict, path: str, base: NumericSpec | None, required: bool, where: int
    ) -> NumericSpec | None:
        """Read range/distribution/params, inheriting from `base` (the leaf-level spec)."""
        ok = True
        low, high = (base.low, base.high) if base else (None, None)
        if "range" in node:
            r = node["range"]
            rline = node.key_line("range")
            if not isinstance(r, MarkedList) or len(r) != 2 or not all(is_number(x) for x in r):
                self.err(rline, path, f"range must be [min, max] with two numbers, got {r!r}")
                ok = False
            else:
                low, high = float(r[0]), float(r[1])
                if low > high:
                    self.err(rline, path, f"inverted range [{r[0]}, {r[1]}] (min > max)")
                    ok = False
                elif self.integer and math.ceil(low) > math.floor(high):
                    self.err(rline, path, f"empty range [{r[0]}, {r[1]}] (no whole number in it)")
                    ok = False
                elif low == high and not self.integer:
                    self.err(rline, path, f"empty range [{r[0]}, {r[1]}] (min == max)")
                    ok = False
        elif low is None:
            if required:
                self.err(where, path, "a numeric leaf needs range: [min, max]")
            return None
        dist = node.get("distribution", base.distribution if base else "uniform")
        if dist not in DISTRIBUTIONS:
            self.err(
                node.key_line("distribution"),
                path,
                f"unknown distribution {dist!r} (expected {', '.join(DISTRIBUTIONS)})",
            )
            return None
        params: dict[str, float | None] = {}
        for key in ("mean", "sd", "median", "sigma"):
            value = node.get(key, getattr(base, key) if base else None)
            if key in node and not is_number(value):
                self.err(node.key_line(key), path, f"{key} must be a number, got {value!r}")
                ok = False
                value = None
            params[key] = float(value) if value is not None else None
        if dist == "normal":
            if params["mean"] is None or params["sd"] is None:
                self.err(where, path, "a normal distribution needs mean and sd")
                ok = False
            elif params["sd"] <= 0:
                self.err(node.key_line("sd"), path, f"sd must be > 0, got {params['sd']:g}")
                ok = False
        if dist == "lognormal":
            if params["median"] is None or params["sigma"] is None:
                self.err(where, path, "a lognormal distribution needs median and sigma")
                ok = False
            else:
                if params["median"] <= 0:
                    self.err(
                        node.key_line("median"),
                        path,
                        f"median must be > 0, got {params['median']:g}",
                    )
                    ok = False
                if params["sigma"] <= 0:
                    self.err(
                        node.key_line("sigma"), path, f"sigma must be > 0, got {params['sigma']:g}"
                    )
                    ok = False
            if ok and low is not None and high is not None and high <= 0:
                self.err(
                    node.key_line("range") if "range" in node else where,
                    path,
                    "a lognormal range must reach above 0",
                )
                ok = False
        if not ok or low is None or high is None:
            return None
        return NumericSpec(low, high, dist, **params)

    def num_table(self, node: MarkedDict, path: str, base: NumericSpec | None) -> dict[str, Any]:
        raw = self.table_rows(node, path)
        if raw is None:
            return {}
        table: dict[str, Any] = {}
        for key, row in raw.items():
            kline = raw.key_line(key)
            k = self.value_name(key, f"{path}.table", kline)
            if k is None:
                continue
            rpath = f"{path}.table[{k}]"
            if isinstance(row, MarkedList):  # shorthand: a row is just a range
                fake = MarkedDict(range=row)
                fake.line, fake.lines, fake.duplicates = kline, {"range": kline}, []
                row = fake
            if not isinstance(row, MarkedDict):
                self.err(
                    kline,
                    rpath,
                    f"a numeric table row is [min, max] or a mapping of {', '.join(NUMERIC_PARAMS)}",
                )
                continue
            bad = [x for x in row if x not in NUMERIC_PARAMS]
            for x in bad:
                self.err(row.key_line(x), rpath, f"unknown key {x!r} in a numeric table row")
            spec = self.numeric_spec(row, rpath, base, required=True, where=kline)
            if spec is not None:
                table[k] = spec
                self.row_lines[(path, k)] = kline
        return table

    def scales(self, node: MarkedDict, path: str) -> tuple[Scale, ...]:
        if "scale" not in node:
            return ()
        raw = node["scale"]
        items = raw if isinstance(raw, MarkedList) else [raw]
        out = []
        for i, item in enumerate(items):
            sline = raw.item_line(i) if isinstance(raw, MarkedList) else node.key_line("scale")
            if not isinstance(item, MarkedDict) or "given" not in item or "factors" not in item:
                self.err(
                    sline,
                    path,
                    "scale entries are {given: PATH, factors: {value: factor}, default: 1.0}",
                )
                continue
            for x in item:
                if x not in ("given", "factors", "default"):
                    self.err(item.key_line(x), path, f"unknown key {x!r} in scale")
            g = item["given"]
            if not isinstance(g, str) or "." not in g:
                self.err(
                    item.key_line("given"),
                    path,
                    f"scale given must be an attribute path, got {g!r}",
                )
                continue
            factors: dict[str, float] = {}
            fraw = item["factors"]
            if not isinstance(fraw, MarkedDict) or not fraw:
                self.err(
                    item.key_line("factors"),
                    path,
                    "scale factors must be a non-empty mapping value: factor",
                )
                continue
            for k, f in fraw.items():
                v = self.value_name(k, path, fraw.key_line(k))
                if v is None:
                    continue
                if not is_number(f) or f <= 0:
                    self.err(
                        fraw.key_line(k),
                        path,
                        f"scale factor of {v!r} must be a positive number, got {f!r}",
                    )
                    continue
                factors[v] = float(f)
            default = item.get("default", 1.0)
            if not is_number(default) or default <= 0:
                self.err(
                    item.key_line("default"),
                    path,
                    f"scale default must be a positive number, got {default!r}",
                )
                default = 1.0
            out.append(Scale(g, factors, float(default), item.key_line("given")))
        return tuple(out)

    def anchor_list(self, doc: MarkedDict) -> list[str]:
        raw = doc.get("anchors")
        if raw is None:
            return []
        line = doc.key_line("anchors")
        if not isinstance(raw, MarkedList):
            self.err(line, "anchors", "anchors must be a list of attribute paths")
            return []
        by_path = {leaf.path: leaf for leaf in self.leaves}
        out: list[str] = []
        for i, a in enumerate(raw):
            aline = raw.item_line(i)
            if not isinstance(a, str) or a not in by_path:
                self.err(aline, f"anchors.{a}", f"unknown attribute {a!r}")
            elif by_path[a].kind == "generated":
                self.err(
                    aline,
                    f"anchors.{a}",
                    "a generated leaf cannot be an anchor (it has no sampled value)",
                )
            elif a in out:
                self.err(aline, f"anchors.{a}", "listed twice")
            else:
                out.append(a)
        return out

    # -- cross-references
    def check_references(
        self, anchors: list[str], categories: list[str], sampling: TaxonomySampling
    ) -> None:
        by_path = {leaf.path: leaf for leaf in self.leaves}
        for cat in sampling.category_weights:
            if cat not in categories:
                self.err(0, f"sampling.category_weights.{cat}", "not a root category")
        anchor_set = set(anchors)
        order = [by_path[a] for a in anchors] + [
            leaf for leaf in self.leaves if leaf.path not in anchor_set
        ]
        position = {leaf.path: i for i, leaf in enumerate(order)}

        def info(ref: str) -> ex.AttrInfo | str:
            leaf = by_path.get(ref)
            if leaf is None:
                return f"unknown attribute {ref!r}"
            if leaf.kind == "generated":
                return f"{ref} is generated (free text filled later); conditions can only read sampled attributes"
            return ex.AttrInfo(leaf.index, leaf.kind, leaf.values)

        edges: dict[str, list[tuple[str, int]]] = {}
        for leaf in self.leaves:
            refs: list[tuple[str, int]] = []
            targets = []
            for g in leaf.given:
                gline = self.given_lines.get((leaf.path, g), leaf.line)
                target = by_path.get(g)
                if target is None:
                    self.err(gline, leaf.path, f"given: unknown attribute {g!r}")
                elif target.kind != "categorical":
                    self.err(
                        gline,
                        leaf.path,
                        f"given: {g} is {target.kind}; tables are keyed by categorical attributes",
                    )
                else:
                    refs.append((g, gline))
                    targets.append(target)
            if leaf.given and len(targets) == len(leaf.given):
                self.check_rows(leaf, targets)
            for s in leaf.scale:
                target = by_path.get(s.given)
                if target is None:
                    self.err(s.line, leaf.path, f"scale: unknown attribute {s.given!r}")
                elif target.kind != "categorical":
                    self.err(
                        s.line, leaf.path, f"scale: {s.given} is {target.kind}, not categorical"
                    )
                else:
                    refs.append((s.given, s.line))
                    for v in s.factors:
                        if v not in target.values:
                            self.err(s.line, leaf.path, f"scale: {v!r} is not a value of {s.given}")
            wlines = self.when_lines.get(leaf.path, [])
            for i, text in enumerate(leaf.when):
                wline = wlines[i] if i < len(wlines) else leaf.line
                try:
                    node = ex.parse(text)
                except ex.ExprError as exc:
                    self.err(wline, leaf.path, f"when: {exc}")
                    continue
                for msg in ex.check(node, info):
                    self.err(wline, leaf.path, f"when: {msg}")
                refs.extend((p, wline) for p in ex.paths(node) if p in by_path)
            edges[leaf.path] = refs
        # cycles first (each reported once), then references to later attributes
        in_cycle: set[tuple[str, str]] = set()
        for cycle in _cycles({k: [r for r, _ in v] for k, v in edges.items()}):
            first = cycle[0]
            line = next(
                (ln for r, ln in edges[first] if r == cycle[1 % len(cycle)]), by_path[first].line
            )
            self.err(line, first, "condition cycle: " + " -> ".join([*cycle, first]))
            for a, b in zip(cycle, [*cycle[1:], cycle[0]], strict=True):
                in_cycle.add((a, b))
        for path, refs in edges.items():
            for ref, line in refs:
                if (path, ref) in in_cycle or ref not in position:
                    continue
                if position[ref] >= position[path]:
                    if ref == path:
                        continue
                    self.err(
                        line,
                        path,
                        f"depends on {ref}, which is sampled later (anchors first, then file order): "
                        "move it above or make it an anchor",
                    )

    def check_rows(self, leaf: Leaf, targets: list[Leaf]) -> None:
        n = len(targets)
        for k in leaf.table:
            line = self.row_lines.get((leaf.path, k), leaf.line)
            parts = split_row_key(k, n)
            if len(parts) != n:
                self.err(
                    line,
                    f"{leaf.path}.table[{k}]",
                    f"row key has {len(parts)} part(s) but given names {n} attribute(s) "
                    "(write 'value_1 | value_2', '*' matches any)",
                )
                continue
            for part, target in zip(parts, targets, strict=True):
                if part != DEFAULT_ROW and part not in target.values:
                    self.err(
                        line, f"{leaf.path}.table[{k}]", f"{part!r} is not a value of {target.path}"
                    )
        has_default = DEFAULT_ROW in leaf.table or (
            leaf.weights is not None if leaf.kind == "categorical" else leaf.numeric is not None
        )
        if not has_default and math.prod(len(t.values) for t in targets) <= 100_000:
            missing = []
            for combo in itertools.product(*(t.values for t in targets)):
                if leaf.row_key(combo) is None:
                    missing.append(" | ".join(combo))
                    if len(missing) > 6:
                        break
            if missing:
                names = ", ".join(t.path for t in targets)
                self.err(
                    leaf.line,
                    leaf.path,
                    f"table has no row for {', '.join(repr(m) for m in missing[:6])}"
                    f"{' ...' if len(missing) > 6 else ''} of {names} and no default "
                    f"(add a '*' row or unconditional {'values' if leaf.kind == 'categorical' else 'range'})",
                )
        if leaf.kind == "categorical":
            for k, row in leaf.table.items():
                if sum(row) <= 0 and (leaf.path, k) not in self.bad_rows:
                    self.err(
                        self.row_lines.get((leaf.path, k), leaf.line),
                        f"{leaf.path}.table[{k}]",
                        "all weights are zero",
                    )


def _looks_like_leaf(node: MarkedDict) -> bool:
    return any(k in node for k in ("kind", "values", "range", "distribution", "table"))


def _type_name(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, MarkedDict):
        return "a mapping"
    if isinstance(value, MarkedList):
        return "a list"
    return f"{type(value).__name__} {value!r}"


def _line_at(raw: Any, loc: tuple[Any, ...], default: int) -> int:
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


def _cycles(graph: dict[str, list[str]]) -> list[list[str]]:
    """Elementary cycles found by DFS (one per back edge), each rotated to start at its min."""
    WHITE, GREY, BLACK = 0, 1, 2
    color = dict.fromkeys(graph, WHITE)
    stack: list[str] = []
    found: dict[tuple[str, ...], None] = {}

    def visit(start: str) -> None:
        # iterative DFS to survive deep chains
        it_stack = [(start, iter(graph.get(start, ())))]
        color[start] = GREY
        stack.append(start)
        while it_stack:
            node, it = it_stack[-1]
            nxt = next(it, None)
            if nxt is None:
                color[node] = BLACK
                stack.pop()
                it_stack.pop()
                continue
            if nxt not in color:
                continue
            if color[nxt] == GREY:
                cyc = stack[stack.index(nxt) :]
                k = cyc.index(min(cyc))
                found.setdefault(tuple(cyc[k:] + cyc[:k]), None)
            elif color[nxt] == WHITE:
                color[nxt] = GREY
                stack.append(nxt)
                it_stack.append((nxt, iter(graph.get(nxt, ()))))

    for node in graph:
        if color[node] == WHITE:
            visit(node)
    return [list(c) for c in found]
