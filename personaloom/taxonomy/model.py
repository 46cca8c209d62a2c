"""The taxonomy model: attributes (`Leaf`), their distributions and the whole tree.

What the loader (`loader.py`) builds from a YAML file and what sampling, rules and quotas
read: a `Taxonomy` holds its leaves in file order, its root categories, anchors and
sampling settings; a `Leaf` is one categorical, numeric or generated attribute with its
weights or distribution, its conditional table (rows keyed by `given` attributes, `*`
matches any value), `scale` factors and `when` conditions. No YAML here. Problems of a
file are collected in `Problems` and raised as one `TaxonomyError`, one line each, as
`file:line: attribute.path: message`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from personaloom.errors import UserError
from personaloom.taxonomy import expressions as ex
from personaloom.taxonomy.settings import SamplingSettings, TaxonomySampling

KINDS = ("categorical", "numeric", "generated", "identity")
DISTRIBUTIONS = ("uniform", "normal", "lognormal")
DEFAULT_ROW = "*"


class TaxonomyError(UserError):
    """A taxonomy (or rule) file with problems; `problems` holds one line per problem."""

    def __init__(self, file: str, problems: list[str]) -> None:
        self.file = file
        self.problems = problems
        head = f"{file}: {len(problems)} problem{'s' if len(problems) != 1 else ''}"
        super().__init__("\n".join([head, *problems]))


class Problems:
    """The problems found in one file, each `(line, attribute path, message)`; line 0 (or
    None) stands for the file as a whole."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.found: list[tuple[int, str, str]] = []

    def add(self, line: int | None, path: str, message: str) -> None:
        self.found.append((line or 0, path, message))

    def __len__(self) -> int:
        return len(self.found)

    def error(self) -> TaxonomyError:
        """One TaxonomyError listing every problem once, sorted by line (stable), as
        `file:line: path: message` (`file: path: message` without a line)."""
        seen: set[tuple[int, str, str]] = set()
        lines = []
        for line, path, message in sorted(self.found, key=lambda problem: problem[0]):
            if (line, path, message) in seen:
                continue
            seen.add((line, path, message))
            where = f"{self.source}:{line}" if line else self.source
            lines.append(f"{where}: {path or '(file)'}: {message}")
        return TaxonomyError(self.source, lines)


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


@dataclass(frozen=True)
class IdentitySpec:
    """What an identity leaf (a name) follows: the country attribute, and optionally the
    gender attribute with its values mapped to female | male | any (`identity.py`)."""

    country: str
    gender: str | None = None
    genders: dict[str, str] = field(default_factory=dict)


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
    # identity (a name drawn from Faker for the country and gender it follows)
    identity: IdentitySpec | None = None

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
        for given in self.given:
            seen.setdefault(given, None)
        for scale in self.scale:
            seen.setdefault(scale.given, None)
        if self.identity is not None:
            seen.setdefault(self.identity.country, None)
            if self.identity.gender:
                seen.setdefault(self.identity.gender, None)
        for text in self.when:
            for path in ex.paths(ex.parse(text)):
                seen.setdefault(path, None)
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


def split_row_key(key: str, count: int) -> list[str]:
    """`a | b` -> [a, b]; a lone `*` matches everything."""
    if key == DEFAULT_ROW:
        return [DEFAULT_ROW] * count
    return [part.strip() for part in key.split("|")]


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
    locales: Any = None  # identity.LocaleMap when the taxonomy has identity leaves
    # narrative sections (name -> what it covers) in writing order; {}: the default six
    narrative: dict[str, str] = field(default_factory=dict)

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
        anchors = [self._by_path[anchor] for anchor in self.anchors]
        anchor_set = set(self.anchors)
        rest = [leaf for leaf in self.leaves if leaf.sampled and leaf.path not in anchor_set]
        return anchors + rest

    @property
    def identity_leaves(self) -> list[Leaf]:
        return [leaf for leaf in self.leaves if leaf.kind == "identity"]

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
        kinds = {kind: sum(1 for leaf in self.leaves if leaf.kind == kind) for kind in KINDS}
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
                category: sum(1 for leaf in self.leaves if leaf.root == category)
                for category in self.categories
            },
        }
