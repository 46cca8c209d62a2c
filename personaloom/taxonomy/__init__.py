"""Taxonomy: the attribute tree, its sampling, rules and quotas (no model involved).

Holds the tree's data classes (`model`), its YAML loader (`loader`, reading line-marked
YAML from `yamlmarks`) and the whole-tree reference checks the loader runs (`checks`), the
safe expression language used by `when:` conditions and rules (`expressions`), sampling
settings and presets (`settings`), the compiled sampling plan (`plan`), deterministic
skeleton sampling (`sampling`), declarative constraint rules (`rules`) and quota plans
(`quotas`). Guarantees: a malformed file is reported with `file:line: path:`;
persona i of seed s is the same skeleton whatever the batch, shard or restart point.

May import: the shared floor (`personaloom.errors`, `schema`, `seeds`, ...). Never the
engine, a stage, the run layer or Prefect.

Public API (docs/taxonomy.md): `load_taxonomy`, `parse_taxonomy`, `Taxonomy`, `Leaf`,
`NumericSpec`, `TaxonomyError`.
"""

from personaloom.taxonomy.loader import load_taxonomy, parse_taxonomy
from personaloom.taxonomy.model import Leaf, NumericSpec, Taxonomy, TaxonomyError

__all__ = ["Leaf", "NumericSpec", "Taxonomy", "TaxonomyError", "load_taxonomy", "parse_taxonomy"]
