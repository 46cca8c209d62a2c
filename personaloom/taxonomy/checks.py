"""Checks that need the whole taxonomy: references between attributes and their order.

The loader (`loader.py`) reads one node at a time; once every leaf is read it runs these
on the model it built: anchors that name no sampled attribute (or twice),
`sampling.category_weights` for unknown root categories, `given`, `scale` and `when`
references (unknown, generated or not categorical attributes, expression types),
conditional table rows (unknown values, wrong arity, uncovered combinations, all-zero
weights), condition cycles and references to attributes sampled later. Each problem is
added to the file's `Problems` at the line the loader recorded in `SourceLines`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from personaloom.taxonomy import expressions as ex
from personaloom.taxonomy.model import DEFAULT_ROW, Leaf, Problems, split_row_key
from personaloom.taxonomy.settings import TaxonomySampling

MAX_COMBINATIONS = 100_000  # tables with more given combinations are not checked for gaps
MAX_MISSING_SHOWN = 6


@dataclass
class SourceLines:
    """Where the loader read what these checks report on (a Leaf keeps only its own line)."""

    given: dict[tuple[str, str], int] = field(default_factory=dict)  # (leaf, given) -> line
    when: dict[str, list[int]] = field(default_factory=dict)  # leaf -> line of each `when`
    rows: dict[tuple[str, str], int] = field(default_factory=dict)  # (leaf, row key) -> line
    reported_rows: set[tuple[str, str]] = field(default_factory=set)  # already reported bad


References = list[tuple[str, int]]  # (attribute read, line that reads it)


def check_anchors(
    entries: list[tuple[Any, int]], leaves: list[Leaf], problems: Problems
) -> list[str]:
    """The valid anchors among `(anchor, line)` entries, in order; reports the others."""
    by_path = {leaf.path: leaf for leaf in leaves}
    anchors: list[str] = []
    for anchor, line in entries:
        where = f"anchors.{anchor}"
        if not isinstance(anchor, str) or anchor not in by_path:
            problems.add(line, where, f"unknown attribute {anchor!r}")
        elif by_path[anchor].kind == "generated":
            problems.add(
                line, where, "a generated leaf cannot be an anchor (it has no sampled value)"
            )
        elif anchor in anchors:
            problems.add(line, where, "listed twice")
        else:
            anchors.append(anchor)
    return anchors


def check_category_weights(
    sampling: TaxonomySampling, categories: list[str], problems: Problems
) -> None:
    for category in sampling.category_weights:
        if category not in categories:
            problems.add(0, f"sampling.category_weights.{category}", "not a root category")


def check_references(
    leaves: list[Leaf], anchors: list[str], lines: SourceLines, problems: Problems
) -> None:
    """Every `given`, `scale` and `when` of every leaf; then condition cycles (each once)
    and references to attributes sampled later (anchors first, then file order)."""
    by_path = {leaf.path: leaf for leaf in leaves}
    info = _attribute_info(by_path)
    edges: dict[str, References] = {}
    for leaf in leaves:
        edges[leaf.path] = _leaf_references(leaf, by_path, info, lines, problems)
    in_cycle = _check_cycles(edges, by_path, problems)
    anchor_set = set(anchors)
    order = [by_path[anchor] for anchor in anchors] + [
        leaf for leaf in leaves if leaf.path not in anchor_set
    ]
    position = {leaf.path: i for i, leaf in enumerate(order)}
    for path, refs in edges.items():
        for ref, line in refs:
            if (path, ref) in in_cycle or ref not in position or ref == path:
                continue
            if position[ref] >= position[path]:
                problems.add(
                    line,
                    path,
                    f"depends on {ref}, which is sampled later (anchors first, then file order): "
                    "move it above or make it an anchor",
                )


def _attribute_info(by_path: dict[str, Leaf]) -> Callable[[str], ex.AttrInfo | str]:
    """What a `when` condition may know of an attribute, or why it cannot read it."""

    def info(ref: str) -> ex.AttrInfo | str:
        leaf = by_path.get(ref)
        if leaf is None:
            return f"unknown attribute {ref!r}"
        if leaf.kind == "generated":
            return f"{ref} is generated (free text filled later); conditions can only read sampled attributes"
        if leaf.kind == "identity":
            return f"{ref} is an identity (a name); conditions can only read categorical and numeric attributes"
        return ex.AttrInfo(leaf.index, leaf.kind, leaf.values)

    return info


def _categorical_ref(
    ref: str,
    key: str,
    why: str,
    line: int,
    leaf: Leaf,
    by_path: dict[str, Leaf],
    problems: Problems,
) -> Leaf | None:
    """The categorical attribute `ref` that `leaf`'s `key` names; else the problem (unknown,
    or not categorical: `why`) is reported at `line` and None returned."""
    target = by_path.get(ref)
    if target is None:
        problems.add(line, leaf.path, f"{key}: unknown attribute {ref!r}")
    elif target.kind != "categorical":
        problems.add(line, leaf.path, f"{key}: {ref} is {target.kind}; {why}")
    else:
        return target
    return None


def _leaf_references(
    leaf: Leaf,
    by_path: dict[str, Leaf],
    info: Callable[[str], ex.AttrInfo | str],
    lines: SourceLines,
    problems: Problems,
) -> References:
    """Check the leaf's `given` (and its table rows), `scale` and `when`; return the
    attributes they read that exist, with the line that reads each."""
    refs: References = []
    targets = []
    for given in leaf.given:
        given_line = lines.given.get((leaf.path, given), leaf.line)
        target = _categorical_ref(
            given,
            "given",
            "tables are keyed by categorical attributes",
            given_line,
            leaf,
            by_path,
            problems,
        )
        if target is not None:
            refs.append((given, given_line))
            targets.append(target)
    if leaf.given and len(targets) == len(leaf.given):
        _check_table_rows(leaf, targets, lines, problems)
    if leaf.identity is not None:
        refs += _identity_references(leaf, by_path, lines, problems)
    for scale in leaf.scale:
        target = by_path.get(scale.given)
        if target is None:
            problems.add(scale.line, leaf.path, f"scale: unknown attribute {scale.given!r}")
        elif target.kind != "categorical":
            problems.add(
                scale.line, leaf.path, f"scale: {scale.given} is {target.kind}, not categorical"
            )
        else:
            refs.append((scale.given, scale.line))
            for value in scale.factors:
                if value not in target.values:
                    problems.add(
                        scale.line, leaf.path, f"scale: {value!r} is not a value of {scale.given}"
                    )
    when_lines = lines.when.get(leaf.path, [])
    for i, text in enumerate(leaf.when):
        when_line = when_lines[i] if i < len(when_lines) else leaf.line
        try:
            condition = ex.parse(text)
        except ex.ExprError as exc:
            problems.add(when_line, leaf.path, f"when: {exc}")
            continue
        for message in ex.check(condition, info):
            problems.add(when_line, leaf.path, f"when: {message}")
        refs.extend((path, when_line) for path in ex.paths(condition) if path in by_path)
    return refs


def _identity_references(
    leaf: Leaf, by_path: dict[str, Leaf], lines: SourceLines, problems: Problems
) -> References:
    """An identity leaf's `country` and `gender`: categorical attributes; `genders` keys
    are values of the gender attribute."""
    assert leaf.identity is not None
    refs: References = []
    spec = leaf.identity
    for key, ref in (("country", spec.country), ("gender", spec.gender)):
        if not ref:
            continue
        line = lines.given.get((leaf.path, ref), leaf.line)
        target = _categorical_ref(
            ref, key, "an identity follows a categorical attribute", line, leaf, by_path, problems
        )
        if target is not None:
            refs.append((ref, line))
            if key == "gender":
                for value in spec.genders:
                    if value not in target.values:
                        problems.add(
                            line, f"{leaf.path}.genders", f"{value!r} is not a value of {ref}"
                        )
    return refs


def _check_table_rows(
    leaf: Leaf, targets: list[Leaf], lines: SourceLines, problems: Problems
) -> None:
    """Row keys against the values of the `given` attributes, combinations no row covers
    (without a default), and categorical rows whose weights are all zero."""
    count = len(targets)
    for key in leaf.table:
        line = lines.rows.get((leaf.path, key), leaf.line)
        parts = split_row_key(key, count)
        if len(parts) != count:
            problems.add(
                line,
                f"{leaf.path}.table[{key}]",
                f"row key has {len(parts)} part(s) but given names {count} attribute(s) "
                "(write 'value_1 | value_2', '*' matches any)",
            )
            continue
        for part, target in zip(parts, targets, strict=True):
            if part != DEFAULT_ROW and part not in target.values:
                problems.add(
                    line, f"{leaf.path}.table[{key}]", f"{part!r} is not a value of {target.path}"
                )
    has_default = DEFAULT_ROW in leaf.table or (
        leaf.weights is not None if leaf.kind == "categorical" else leaf.numeric is not None
    )
    if not has_default and math.prod(len(target.values) for target in targets) <= MAX_COMBINATIONS:
        missing = []
        for combo in itertools.product(*(target.values for target in targets)):
            if leaf.row_key(combo) is None:
                missing.append(" | ".join(combo))
                if len(missing) > MAX_MISSING_SHOWN:
                    break
        if missing:
            names = ", ".join(target.path for target in targets)
            shown = ", ".join(repr(row) for row in missing[:MAX_MISSING_SHOWN])
            more = " ..." if len(missing) > MAX_MISSING_SHOWN else ""
            fallback = "values" if leaf.kind == "categorical" else "range"
            problems.add(
                leaf.line,
                leaf.path,
                f"table has no row for {shown}{more} of {names} and no default "
                f"(add a '*' row or unconditional {fallback})",
            )
    if leaf.kind == "categorical":
        for key, row in leaf.table.items():
            if sum(row) <= 0 and (leaf.path, key) not in lines.reported_rows:
                problems.add(
                    lines.rows.get((leaf.path, key), leaf.line),
                    f"{leaf.path}.table[{key}]",
                    "all weights are zero",
                )


def _check_cycles(
    edges: dict[str, References], by_path: dict[str, Leaf], problems: Problems
) -> set[tuple[str, str]]:
    """Report each condition cycle once; return its edges (not reported again as 'later')."""
    in_cycle: set[tuple[str, str]] = set()
    for cycle in _cycles({path: [ref for ref, _ in refs] for path, refs in edges.items()}):
        first = cycle[0]
        second = cycle[1 % len(cycle)]
        line = next(
            (ref_line for ref, ref_line in edges[first] if ref == second), by_path[first].line
        )
        problems.add(line, first, "condition cycle: " + " -> ".join([*cycle, first]))
        for source, target in zip(cycle, [*cycle[1:], cycle[0]], strict=True):
            in_cycle.add((source, target))
    return in_cycle


def _cycles(graph: dict[str, list[str]]) -> list[list[str]]:
    """Elementary cycles found by DFS (one per back edge), each rotated to start at its min."""
    white, grey, black = 0, 1, 2
    color = dict.fromkeys(graph, white)
    stack: list[str] = []
    found: dict[tuple[str, ...], None] = {}

    def visit(start: str) -> None:
        # iterative DFS to survive deep chains
        it_stack = [(start, iter(graph.get(start, ())))]
        color[start] = grey
        stack.append(start)
        while it_stack:
            node, successors = it_stack[-1]
            successor = next(successors, None)
            if successor is None:
                color[node] = black
                stack.pop()
                it_stack.pop()
                continue
            if successor not in color:
                continue
            if color[successor] == grey:
                cycle = stack[stack.index(successor) :]
                lowest = cycle.index(min(cycle))
                found.setdefault(tuple(cycle[lowest:] + cycle[:lowest]), None)
            elif color[successor] == white:
                color[successor] = grey
                stack.append(successor)
                it_stack.append((successor, iter(graph.get(successor, ()))))

    for node in graph:
        if color[node] == white:
            visit(node)
    return [list(cycle) for cycle in found]
