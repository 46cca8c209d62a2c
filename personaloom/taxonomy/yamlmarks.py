"""YAML loading that keeps line numbers and reports duplicate keys instead of dropping them.

PyYAML silently keeps the last of two equal keys. Taxonomy and rule files are edited by
hand, so the loader records every duplicate (with both lines) on the mapping it found it in
and lets the caller report it with the attribute path. Mappings come back as `MarkedDict`
(a dict with `line` and per-key `lines`), sequences as `MarkedList` (with per-item `lines`).
Lines are 1-based.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from personaloom.taxonomy.model import Problems

_Base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class MarkedDict(dict):
    """A mapping read from YAML: `line` of the mapping, `lines[key]` of each key."""

    line: int
    lines: dict[Any, int]
    duplicates: list[tuple[Any, int, int]]  # (key, line, first line)

    def key_line(self, key: Any) -> int:
        return self.lines.get(key, self.line)


class MarkedList(list):
    """A sequence read from YAML: `line` of the sequence, `lines[i]` of each item."""

    line: int
    lines: list[int]

    def item_line(self, i: int) -> int:
        return self.lines[i] if i < len(self.lines) else self.line


class _MarkedLoader(_Base):  # type: ignore[misc, valid-type]
    pass


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> MarkedDict:
    loader.flatten_mapping(node)
    result = MarkedDict()
    result.line = node.start_mark.line + 1
    result.lines = {}
    result.duplicates = []
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            key = str(key)
        line = key_node.start_mark.line + 1
        if key in result.lines:
            result.duplicates.append((key, line, result.lines[key]))
            continue  # keep the first occurrence; the duplicate is reported
        result.lines[key] = line
        result[key] = loader.construct_object(value_node, deep=True)
    return result


def _construct_sequence(loader: yaml.SafeLoader, node: yaml.SequenceNode) -> MarkedList:
    result = MarkedList(loader.construct_object(child, deep=True) for child in node.value)
    result.line = node.start_mark.line + 1
    result.lines = [child.start_mark.line + 1 for child in node.value]
    return result


_MarkedLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_MarkedLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)


class YamlSyntaxError(Exception):
    def __init__(self, line: int | None, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


def load_marked(text: str) -> Any:
    """Parse YAML text; raises `YamlSyntaxError` with the 1-based line of the problem."""
    try:
        return yaml.load(text, Loader=_MarkedLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        context = exc.context or ""
        if exc.context and exc.context_mark is not None and exc.context_mark is not mark:
            context = f"{exc.context} (started at line {exc.context_mark.line + 1})"
        problem = " ".join(p for p in (context, exc.problem) if p)
        raise YamlSyntaxError(line, f"YAML syntax error: {problem}") from None
    except yaml.YAMLError as exc:
        raise YamlSyntaxError(None, f"YAML error: {exc}") from None


def load_mapping(text: str, problems: Problems, expected: str) -> MarkedDict:
    """The file's top-level mapping; a syntax error or any other top-level value is added
    to `problems` and raised as its error (`expected` says what the file should be)."""
    try:
        doc = load_marked(text)
    except YamlSyntaxError as exc:
        problems.add(exc.line, "(yaml)", exc.message)
        raise problems.error() from None
    if not isinstance(doc, MarkedDict):
        problems.add(1, "(file)", expected)
        raise problems.error()
    return doc


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
