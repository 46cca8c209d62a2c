"""Topics and changing preferences for conversations: data of the corpus project.

A *topic* is a kind of task a user brings to an assistant (homework help, a repeat
prescription, travel planning...), each with a few concrete requests; a topic and a task
may carry a `when:` condition on the persona's attributes (the taxonomy's expression
language, `personaloom.taxonomy.expressions`). A *changing preference* is something a user
states in conversation and may change between sessions: it names its taxonomy path (a
categorical leaf, or an extra path of its own), its values or transitions, the reasons a
change happens, the reasons a change is undone, and what an assistant would suggest to
someone holding each value. The timeline (`personaloom.generate.timeline`) draws from a
`Catalogue` with a seeded RNG; probes ask only about these preferences.

The catalogue of taxonomy `NAME` is `taxonomies/NAME.topics.yaml` beside it:

    taxonomy: clinic                  # optional: the taxonomy this file serves (checked)
    description: what this file is for
    topics:                           # name (the `topic` column) -> tasks, at least two
      repeat prescriptions:           # short form: a list of tasks
        - renew a regular prescription before it runs out
      sleep:                          # long form: when + tasks
        when: patient.age >= 16
        tasks:
          - get to sleep earlier on weeknights
          - text: cope with night shifts     # a task with a condition of its own
            when: patient.works_nights == 'yes'
    preferences:                      # name (lower_snake_case) -> its fields
      exercise:
        path: lifestyle.activity      # a categorical leaf of the taxonomy
        label: preferred kind of exercise     # reads in "the user's <label>"
        values: [walking, swimming, yoga, cycling]   # optional for a leaf: a subset of its
                                      # values (default: all); at least 4
        reasons:                      # at least 4; "... because <reason>"; {old} and {new}
          - a friend got them into {new}
        revert_reasons:               # why a change was undone; {old} and {new}
          - "{old} never became a habit, so they went back to {new}"
        suggestion: a weekly {value} plan     # must use {value}
        topics: [sleep]               # names under `topics:`
        when: patient.age >= 16       # optional: only personas for whom this holds
      reminder:
        path: reminders.medication    # outside the taxonomy's root categories:
        extra: true                   # a declared extra, with its own values
        values: [phone alarm, pill box, a note on the fridge, a relative reminds them]
        ...

`transitions:` (value -> the values it may change to, e.g. `smokes daily: [trying to
quit]`) restricts the changes, and a change is undone only along one; for an extra its
values default to those the transitions name. A path that is not a leaf of the taxonomy
is an error unless the preference says `extra: true` (and an extra path must lie outside
the taxonomy's root categories). At least one topic (with a task) and one preference must
apply to every persona, i.e. carry no `when:` (nor, for a leaf, a `when:` of the
taxonomy's).

Which file serves a taxonomy (`catalogue_path`): `<stem>.topics.yaml`, where `<stem>` is
the taxonomy file's name without `.yaml`, looked up in the project's `taxonomies/` folder,
then beside the taxonomy file, then in the defaults packaged with personaloom. A taxonomy
without one gets the generic `topics.yaml` (same lookup; the packaged one holds everyday
assistant tasks and preferences about the assistant's answers, all extras) and a one-line
notice (`catalogue_notice`). Such files are not taxonomies
(`personaloom.project.is_topics_file`; `--taxonomy topics` is refused).

`load_catalogue(path, taxonomy)` checks the whole file, and its paths and conditions
against the taxonomy, and reports every problem as one `file:line: path: problem` line
(`CatalogueError`, a `UserError`: exit code 2). Parsing is cached by (path, modification
time, size), so batches reuse the parsed file. Order matters: the RNG draws from the lists
in file order, so reordering changes the timelines of a seed.
"""

from __future__ import annotations

import difflib
import functools
import re
import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from personaloom.errors import UserError, read_utf8
from personaloom.project import Project, packaged_root
from personaloom.taxonomy import expressions as ex
from personaloom.taxonomy.model import Taxonomy
from personaloom.taxonomy.yamlmarks import MarkedDict, MarkedList, YamlSyntaxError, load_marked

CATALOGUE_FILE = "topics.yaml"
CATALOGUE_SUFFIX = ".topics.yaml"
TOP_KEYS = ("taxonomy", "description", "topics", "preferences")
TOPIC_KEYS = ("when", "tasks")
TASK_KEYS = ("text", "when")
REQUIRED_KEYS = ("path", "label", "reasons", "revert_reasons", "suggestion", "topics")
OPTIONAL_KEYS = ("values", "transitions", "when", "extra")
PREFERENCE_KEYS = REQUIRED_KEYS + OPTIONAL_KEYS
REPLACED_KEYS = {
    "aliases": "preferences name their taxonomy path explicitly (path:)",
    "categories": "preferences name their taxonomy path explicitly (path:)",
}
MIN_CHOICES = 4  # a probe offers 4 choices: values and reasons to draw them from
# Placeholders each text field may use; fields not listed take none.
PLACEHOLDERS: dict[str, frozenset[str]] = {
    "reasons": frozenset({"old", "new"}),
    "revert_reasons": frozenset({"old", "new"}),
    "suggestion": frozenset({"value"}),
}
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")
_PLACEHOLDER = re.compile(r"\{[^{}]*\}")
_NUMBER = re.compile(r"^\s*(-?\d+(?:\.\d+)?)")


@dataclass(frozen=True)
class Topic:
    name: str  # what the `topic` column holds
    tasks: tuple[str, ...]  # concrete requests, phrased as what the user wants
    when: str | None = None  # the topic comes up only for personas for whom this holds
    task_when: tuple[str | None, ...] = ()  # per task (parallel to `tasks`), None: always
    line: int = field(default=0, compare=False)
    when_lines: tuple[int, ...] = field(default=(), compare=False)  # topic's, then each task's

    def tasks_for(self, values: Mapping[str, str | float]) -> tuple[str, ...]:
        """The tasks that apply to a persona ({path: value}); none when the topic does not."""
        if not holds(self.when, values):
            return ()
        conditions = self.task_when or (None,) * len(self.tasks)
        return tuple(t for t, w in zip(self.tasks, conditions, strict=True) if holds(w, values))

    @property
    def always(self) -> bool:
        return self.when is None and any(w is None for w in self.task_when or (None,))


@dataclass(frozen=True)
class PreferenceKind:
    """A preference a user can state and change, at taxonomy path `path`.

    `reasons` and `revert_reasons` are clauses completing "... because <reason>"; they may
    use `{old}` and `{new}`. `suggestion` is what an assistant would recommend to someone
    with that value (`{value}`). `transitions` (value -> values it may change to) restricts
    changes; without it any value may change to any other. `leaf` says whether `path` is a
    leaf of the taxonomy (False: an extra path declared by the topics file; None: not
    checked against a taxonomy yet), `leaf_when` the taxonomy's conditions on that leaf.
    """

    name: str
    path: str
    label: str  # "favourite cuisine": reads in "the user's favourite cuisine"
    values: tuple[str, ...]
    reasons: tuple[str, ...]
    revert_reasons: tuple[str, ...]
    suggestion: str
    topics: tuple[str, ...]
    transitions: tuple[tuple[str, tuple[str, ...]], ...] | None = None
    when: str | None = None
    extra: bool = False  # declared outside the taxonomy (`extra: true`)
    leaf: bool | None = None
    leaf_when: tuple[str, ...] = ()
    line: int = field(default=0, compare=False)
    lines: Mapping[str, int] = field(default_factory=dict, compare=False)  # of its keys

    def at(self, key: str) -> int:
        """The line of one of its keys in the topics file (of its name when absent)."""
        return self.lines.get(key, self.line)

    def targets(self, value: str) -> tuple[str, ...]:
        """The values `value` may change to."""
        key = value.strip().lower()
        if self.transitions is None:
            return tuple(v for v in self.values if v.strip().lower() != key)
        for source, targets in self.transitions:
            if source.strip().lower() == key:
                return targets
        return ()

    def may_change(self, old: str, new: str) -> bool:
        return new.strip().lower() in {t.strip().lower() for t in self.targets(old)}

    @property
    def always(self) -> bool:
        """Applies to every persona: no condition of its own nor of its taxonomy leaf."""
        return self.when is None and not self.leaf_when


@dataclass(frozen=True)
class Catalogue:
    """The topics and preference kinds of one topics file, in file order.

    `taxonomy` is the ref (`name@version`) of the taxonomy it was checked against (None:
    parsed only); `numeric` the numeric attributes its conditions read (their values are
    compared as numbers)."""

    topics: tuple[Topic, ...]
    preferences: tuple[PreferenceKind, ...]
    source: str = field(default="<memory>", compare=False)
    taxonomy: str | None = None
    numeric: frozenset[str] = frozenset()
    declared_taxonomy: str | None = field(default=None, compare=False)
    lines: Mapping[str, int] = field(default_factory=dict, compare=False)  # of top-level keys
    by_name: Mapping[str, PreferenceKind] = field(
        init=False, repr=False, compare=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_name", {k.name: k for k in self.preferences})

    @property
    def topic_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.topics)

    def preference(self, name: str) -> PreferenceKind:
        return self.by_name[name]

    def persona_values(self, persona: Mapping[str, Any]) -> dict[str, str | float]:
        """A persona record's attributes as {path: value} for conditions: the numeric ones
        read by a condition as numbers ("34 years" -> 34.0), the rest as their text."""
        values: dict[str, str | float] = {}
        for attribute in persona.get("attributes") or ():
            path, value = str(attribute["path"]), attribute["value"]
            if path in values:
                continue
            if path in self.numeric:
                match = _NUMBER.match(str(value))
                if match is None:
                    continue  # unreadable: unknown, as if absent
                values[path] = float(match.group(1))
            else:
                values[path] = str(value)
        return values


def holds(condition: str | None, values: Mapping[str, str | float]) -> bool:
    """Whether a `when:` condition is definitely true for a persona (None: always)."""
    if condition is None:
        return True
    return ex.evaluate(ex.parse(condition), values) is True


class CatalogueError(UserError):
    """A topics file with problems; `problems` holds one `file:line: path: problem` each."""

    def __init__(self, file: str, problems: list[str]) -> None:
        self.file = file
        self.problems = problems
        head = f"{file}: {len(problems)} problem{'s' if len(problems) != 1 else ''}"
        super().__init__("\n".join([head, *problems]))


# -- which file ------------------------------------------------------------------------------
def _folders(project: Project, taxonomy_path: Path) -> list[Path]:
    folders: list[Path] = []
    for folder in (project.taxonomies, taxonomy_path.parent, packaged_root() / "taxonomies"):
        if folder.resolve() not in {f.resolve() for f in folders}:
            folders.append(folder)
    return folders


def own_names(taxonomy_path: str | Path) -> tuple[str, ...]:
    stem = Path(taxonomy_path).stem
    return (f"{stem}{CATALOGUE_SUFFIX}", f"{stem}.topics.yml")


def catalogue_path(project: Project, taxonomy_path: str | Path) -> Path:
    """The topics file serving a taxonomy (see the module docstring for the order)."""
    taxonomy_path = Path(taxonomy_path)
    folders = _folders(project, taxonomy_path)
    for name in (*own_names(taxonomy_path), CATALOGUE_FILE, "topics.yml"):
        for folder in folders:
            candidate = folder / name
            if candidate.is_file():
                return candidate
    raise UserError(
        f"{project.taxonomies / CATALOGUE_FILE}: no topics file for taxonomy {taxonomy_path} "
        f"(looked for {own_names(taxonomy_path)[0]} and {CATALOGUE_FILE} in "
        f"{', '.join(str(f) for f in folders)})"
    )


def catalogue_notice(path: str | Path, taxonomy_path: str | Path) -> str | None:
    """One line saying that a taxonomy declares no topics of its own and which generic file
    serves it instead (None when the taxonomy's own `<stem>.topics.yaml` serves it)."""
    if Path(path).name in own_names(taxonomy_path):
        return None
    stem = Path(taxonomy_path).stem
    return (
        f"notice: taxonomy {stem} declares no topics or changing preferences "
        f"({stem}{CATALOGUE_SUFFIX}); conversations use the generic {path} "
        f"(see docs/taxonomy.md, 'Topics and changing preferences')"
    )


# -- loading ---------------------------------------------------------------------------------
def load_catalogue(path: str | Path, taxonomy: Taxonomy | None = None) -> Catalogue:
    """The catalogue in a topics file, checked against `taxonomy` when given (its paths
    and conditions); raises `CatalogueError` listing every problem."""
    path = Path(path)
    try:
        stat = path.stat()
    except OSError as exc:
        raise UserError(f"{path}: cannot read topics file ({exc.strerror or exc})") from None
    catalogue = _load(str(path), stat.st_mtime_ns, stat.st_size)
    return catalogue if taxonomy is None else bind_catalogue(catalogue, taxonomy)


@functools.lru_cache(maxsize=8)
def _load(path: str, mtime_ns: int, size: int) -> Catalogue:
    return parse_catalogue(read_utf8(path, "topics file"), source=path)


def parse_catalogue(
    text: str, source: str = "<memory>", taxonomy: Taxonomy | None = None
) -> Catalogue:
    """A catalogue from YAML text; raises `CatalogueError` listing every problem."""
    checker = _Checker(source)
    catalogue = checker.catalogue(text)
    if checker.problems:
        raise CatalogueError(source, checker.problems)
    assert catalogue is not None
    return catalogue if taxonomy is None else bind_catalogue(catalogue, taxonomy)


def bind_catalogue(catalogue: Catalogue, taxonomy: Taxonomy) -> Catalogue:
    """The catalogue checked against a taxonomy: preference paths (a categorical leaf, or an
    extra path outside the taxonomy's root categories), values, conditions; a leaf's values
    filled in where the file declares none. Raises `CatalogueError` listing every problem."""
    if catalogue.taxonomy == taxonomy.ref:
        return catalogue
    return _bind(catalogue, taxonomy)


def _bind(catalogue: Catalogue, taxonomy: Taxonomy) -> Catalogue:
    problems: list[str] = []
    source = catalogue.source

    def add(line: int, path: str, message: str) -> None:
        problems.append(f"{source}:{line}: {path}: {message}")

    declared = catalogue.declared_taxonomy
    if declared is not None and declared != taxonomy.name:
        add(
            catalogue.lines.get("taxonomy", 1),
            "taxonomy",
            f"this file is for taxonomy {declared!r}, not {taxonomy.name!r}",
        )

    numeric: set[str] = set()

    def resolve(path: str) -> ex.AttrInfo | str:
        if path not in taxonomy:
            near = difflib.get_close_matches(path, [leaf.path for leaf in taxonomy.leaves], 1)
            hint = f" (did you mean {near[0]}?)" if near else ""
            return f"unknown attribute {path!r} in taxonomy {taxonomy.name}{hint}"
        leaf = taxonomy.leaf(path)
        if leaf.kind == "generated":
            return f"{path} is generated (free text); a condition can only read sampled attributes"
        if leaf.kind == "numeric":
            numeric.add(path)
        return ex.AttrInfo(leaf.index, leaf.kind, leaf.values)

    def check_when(condition: str | None, line: int, path: str) -> None:
        if condition is not None:
            for message in ex.check(ex.parse(condition), resolve):
                add(line, f"{path}.when", message)

    for topic in catalogue.topics:
        lines = topic.when_lines or (topic.line,) * (len(topic.tasks) + 1)
        check_when(topic.when, lines[0], f"topics.{topic.name}")
        for i, condition in enumerate(topic.task_when):
            check_when(condition, lines[i + 1], f"topics.{topic.name}.tasks[{i}]")
    if catalogue.topics and not any(t.always for t in catalogue.topics):
        add(
            catalogue.lines.get("topics", 1),
            "topics",
            "every topic (or each of its tasks) has a when: condition; at least one must "
            "apply to every persona",
        )

    roots = set(taxonomy.categories)
    kinds = []
    before = len(problems)
    for kind in catalogue.preferences:
        where = f"preferences.{kind.name}"
        check_when(kind.when, kind.at("when"), where)
        inside = kind.path.split(".", 1)[0] in roots or kind.path in taxonomy
        if kind.extra and inside:
            add(
                kind.at("path"),
                f"{where}.path",
                f"{kind.path} is inside taxonomy {taxonomy.name} (root category "
                f"{kind.path.split('.', 1)[0]}); an extra path lies outside its root categories",
            )
            continue
        if kind.path in taxonomy:
            leaf = taxonomy.leaf(kind.path)
            if leaf.kind != "categorical":
                add(
                    kind.at("path"),
                    f"{where}.path",
                    f"{kind.path} is a {leaf.kind} leaf; a changing preference needs a "
                    "categorical leaf (or an extra path outside the taxonomy)",
                )
                continue
            leaf_values = {v.strip().lower() for v in leaf.values}
            shown = ", ".join(leaf.values[:12]) + (", ..." if len(leaf.values) > 12 else "")
            for key, listed in (
                ("values", kind.values),
                ("transitions", _Checker.named(kind.transitions)),
            ):
                for value in listed:
                    if value.strip().lower() not in leaf_values:
                        add(
                            kind.at(key),
                            f"{where}.{key}",
                            f"{value!r} is not a value of {kind.path} ({shown})",
                        )
            values = kind.values or leaf.values
            if len({v.strip().lower() for v in values}) < MIN_CHOICES:
                add(
                    kind.at("values" if kind.values else "path"),
                    f"{where}.values",
                    f"{kind.path} has {len(values)} values; a changing preference needs at "
                    f"least {MIN_CHOICES} (a probe offers {MIN_CHOICES} choices)",
                )
            kinds.append(replace(kind, values=values, leaf=True, leaf_when=tuple(leaf.when)))
            for condition in leaf.when:  # numbers its conditions read, for persona_values
                ex.check(ex.parse(condition), resolve)
            continue
        if not kind.extra:
            near = difflib.get_close_matches(
                kind.path, [leaf.path for leaf in taxonomy.leaves], 1, 0.6
            )
            hint = f" (did you mean {near[0]}?)" if near else ""
            add(
                kind.at("path"),
                f"{where}.path",
                f"{kind.path} is not a leaf of taxonomy {taxonomy.name}{hint}; a preference "
                "outside the taxonomy says extra: true",
            )
            continue
        values = kind.values or _Checker.named(kind.transitions)
        if not values:
            add(
                kind.at("path"),
                f"{where}.values",
                f"{kind.path} is an extra path (not in taxonomy {taxonomy.name}): declare "
                "its values or transitions",
            )
            continue
        if len({v.strip().lower() for v in values}) < MIN_CHOICES:
            add(
                kind.at("transitions"),
                f"{where}.transitions",
                f"names {len(values)} values; needs at least {MIN_CHOICES} (a probe offers "
                f"{MIN_CHOICES} choices)",
            )
            continue
        kinds.append(replace(kind, values=values, leaf=False, leaf_when=()))
    if len(problems) == before and kinds and not any(k.always for k in kinds):
        add(
            catalogue.lines.get("preferences", 1),
            "preferences",
            "every preference has a when: condition (its own or its taxonomy leaf's); at "
            "least one must apply to every persona",
        )
    if problems:
        raise CatalogueError(source, problems)
    return replace(
        catalogue, preferences=tuple(kinds), taxonomy=taxonomy.ref, numeric=frozenset(numeric)
    )


class _Checker:
    def __init__(self, source: str) -> None:
        self.source = source
        self.problems: list[str] = []

    def add(self, line: int, path: str, message: str) -> None:
        self.problems.append(f"{self.source}:{line}: {path}: {message}")

    def duplicates(self, mapping: MarkedDict, path: str, what: str = "key") -> None:
        for key, line, first in mapping.duplicates:
            where = f"{path}.{key}" if path else str(key)
            self.add(line, where, f"duplicate {what} {key!r} (first at line {first})")

    def unknown(self, mapping: MarkedDict, path: str, allowed: Iterable[str]) -> None:
        allowed = tuple(allowed)
        for key in mapping:
            if key not in allowed:
                hint = REPLACED_KEYS.get(str(key))
                message = (
                    f"no longer supported: {hint}"
                    if hint
                    else f"unknown key (expected {', '.join(allowed)})"
                )
                where = f"{path}.{key}" if path else str(key)
                self.add(mapping.key_line(key), where, message)

    # -- the file --------------------------------------------------------------------------
    def catalogue(self, text: str) -> Catalogue | None:
        try:
            doc = load_marked(text)
        except YamlSyntaxError as exc:
            self.add(exc.line or 0, "(yaml)", exc.message)
            return None
        if not isinstance(doc, MarkedDict):
            self.add(1, "(file)", "a topics file is a mapping with topics: and preferences:")
            return None
        self.duplicates(doc, "")
        self.unknown(doc, "", TOP_KEYS)
        for key in ("description", "taxonomy"):
            if key in doc and not isinstance(doc[key], str):
                self.add(doc.key_line(key), key, "must be text")
        declared = doc.get("taxonomy") if isinstance(doc.get("taxonomy"), str) else None
        topics = self.topics(doc)
        known = {t.name for t in topics}
        preferences = self.preferences(doc, known)
        return Catalogue(
            tuple(topics),
            tuple(preferences),
            source=self.source,
            declared_taxonomy=declared,
            lines={str(key): doc.key_line(key) for key in doc},
        )

    def section(self, doc: MarkedDict, key: str, what: str) -> MarkedDict | None:
        if key not in doc or doc[key] is None:
            self.add(doc.key_line(key) if key in doc else doc.line, key, f"missing ({what})")
            return None
        value = doc[key]
        if not isinstance(value, MarkedDict) or not value:
            self.add(doc.key_line(key), key, f"must be a non-empty mapping ({what})")
            return None
        return value

    def condition(self, value: Any, line: int, path: str) -> str | None:
        if not isinstance(value, str) or not value.strip():
            self.add(line, path, f"a condition is text, got {_kind_of(value)}")
            return None
        try:
            ex.parse(value)
        except ex.ExprError as exc:
            self.add(line, path, f"{exc}")
            return None
        return value

    # -- topics ----------------------------------------------------------------------------
    def topics(self, doc: MarkedDict) -> list[Topic]:
        section = self.section(doc, "topics", "topic name -> list of tasks")
        if section is None:
            return []
        self.duplicates(section, "topics", "topic")
        found: list[Topic] = []
        for name, body in section.items():
            line = section.key_line(name)
            path = f"topics.{name}"
            if not isinstance(name, str) or not name.strip():
                self.add(line, path, "a topic name must be text (quote it)")
                continue
            topic = self.topic(name, body, line, path)
            if topic is not None:
                found.append(topic)
        if len(section) == 1:
            self.add(
                doc.key_line("topics"),
                "topics",
                "needs at least two topics (consecutive sessions have different topics)",
            )
        return found

    def topic(self, name: str, body: Any, line: int, path: str) -> Topic | None:
        when = None
        when_line = line
        tasks_value = body
        tasks_line = line
        tasks_path = path
        if isinstance(body, MarkedDict):
            self.duplicates(body, path)
            self.unknown(body, path, TOPIC_KEYS)
            if "when" in body:
                when_line = body.key_line("when")
                when = self.condition(body["when"], when_line, f"{path}.when")
            if body.get("tasks") is None:
                self.add(
                    body.key_line("tasks") if "tasks" in body else line, f"{path}.tasks", "missing"
                )
                return None
            tasks_value, tasks_line, tasks_path = (
                body["tasks"],
                body.key_line("tasks"),
                f"{path}.tasks",
            )
        before = len(self.problems)
        if not isinstance(tasks_value, MarkedList):
            self.add(
                tasks_line, tasks_path, f"must be a list of tasks, got {_kind_of(tasks_value)}"
            )
            return None
        if not tasks_value:
            self.add(tasks_line, tasks_path, "empty list")
            return None
        texts: list[str] = []
        lines: list[int] = []
        conditions: list[str | None] = []
        seen: dict[str, int] = {}
        for i, item in enumerate(tasks_value):
            item_line = tasks_value.item_line(i)
            item_path = f"{tasks_path}[{i}]"
            condition = None
            condition_line = item_line
            if isinstance(item, MarkedDict):
                self.duplicates(item, item_path)
                self.unknown(item, item_path, TASK_KEYS)
                if item.get("text") is None:
                    self.add(item_line, f"{item_path}.text", "missing")
                    continue
                if "when" in item:
                    condition_line = item.key_line("when")
                    condition = self.condition(item["when"], condition_line, f"{item_path}.when")
                text = self.text(item["text"], item.key_line("text"), f"{item_path}.text", "tasks")
            else:
                text = self.text(item, item_line, item_path, "tasks")
            if text is None:
                continue
            if self.repeated(seen, text, i, item_line, item_path, tasks_path):
                continue
            texts.append(text)
            lines.append(condition_line)
            conditions.append(condition)
        if len(self.problems) > before or not texts:
            return None
        return Topic(name, tuple(texts), when, tuple(conditions), line, (when_line, *lines))

    # -- preferences -------------------------------------------------------------------------
    def preferences(self, doc: MarkedDict, topics: set[str]) -> list[PreferenceKind]:
        section = self.section(doc, "preferences", "preference name -> its fields")
        if section is None:
            return []
        self.duplicates(section, "preferences", "preference")
        found: list[PreferenceKind] = []
        paths: dict[str, str] = {}
        for name, item in section.items():
            line = section.key_line(name)
            path = f"preferences.{name}"
            if not isinstance(name, str) or not _NAME.match(name):
                self.add(line, path, "a preference name is lower_snake_case (e.g. music_genre)")
                continue
            kind = self.preference(name, item, line, path, topics)
            if kind is None:
                continue
            if kind.path in paths:
                self.add(
                    item.key_line("path"),
                    f"{path}.path",
                    f"{kind.path} is already the path of preference {paths[kind.path]}",
                )
                continue
            paths[kind.path] = name
            found.append(kind)
        return found

    def preference(
        self, name: str, item: Any, line: int, path: str, topics: set[str]
    ) -> PreferenceKind | None:
        if not isinstance(item, MarkedDict):
            self.add(line, path, f"must be a mapping with {', '.join(REQUIRED_KEYS)}")
            return None
        before = len(self.problems)
        self.duplicates(item, path)
        self.unknown(item, path, PREFERENCE_KEYS)
        for key in REQUIRED_KEYS:
            if key not in item or item[key] is None:
                where = item.key_line(key) if key in item else line
                self.add(where, f"{path}.{key}", "missing")
        fields: dict[str, Any] = {}
        for key in ("label", "suggestion", "path"):
            if item.get(key) is not None:
                fields[key] = self.text(item[key], item.key_line(key), f"{path}.{key}", key)
        attribute = fields.get("path")
        if attribute and not _PATH.match(attribute):
            self.add(
                item.key_line("path"),
                f"{path}.path",
                f"{attribute!r} is not an attribute path (dotted names, e.g. lifestyle.diet)",
            )
        for key in ("reasons", "revert_reasons", "topics"):
            if item.get(key) is not None:
                fields[key] = self.texts(item[key], item.key_line(key), f"{path}.{key}", key)
        reasons = fields.get("reasons") or ()
        if reasons and len(reasons) < MIN_CHOICES:
            self.add(
                item.key_line("reasons"),
                f"{path}.reasons",
                f"needs at least {MIN_CHOICES} reasons (change_reason probes offer "
                f"{MIN_CHOICES} choices)",
            )
        if "when" in item:
            fields["when"] = self.condition(item["when"], item.key_line("when"), f"{path}.when")
        if "extra" in item:
            if not isinstance(item["extra"], bool):
                self.add(item.key_line("extra"), f"{path}.extra", "must be true or false")
            fields["extra"] = item["extra"] is True
        values, transitions = self.values(item, path)
        suggestion = fields.get("suggestion")
        if suggestion and "{value}" not in suggestion:
            self.add(
                item.key_line("suggestion"),
                f"{path}.suggestion",
                "must use {value} (what is suggested depends on the value)",
            )
        self.references(item, path, fields.get("topics") or (), topics)
        if len(self.problems) > before:
            return None
        return PreferenceKind(
            name=name,
            path=fields["path"],
            label=fields["label"],
            values=values,
            reasons=fields["reasons"],
            revert_reasons=fields["revert_reasons"],
            suggestion=fields["suggestion"],
            topics=fields["topics"],
            transitions=transitions,
            when=fields.get("when"),
            extra=fields.get("extra", False),
            line=line,
            lines={str(key): item.key_line(key) for key in item},
        )

    def values(
        self, item: MarkedDict, path: str
    ) -> tuple[tuple[str, ...], tuple[tuple[str, tuple[str, ...]], ...] | None]:
        """(declared values, transitions); the values default to the taxonomy leaf's, or
        for an extra path to those the transitions name (filled in when bound)."""
        values: tuple[str, ...] = ()
        if item.get("values") is not None:
            values = self.texts(item["values"], item.key_line("values"), f"{path}.values", "values")
            if values and len({v.strip().lower() for v in values}) < MIN_CHOICES:
                self.add(
                    item.key_line("values"),
                    f"{path}.values",
                    f"needs at least {MIN_CHOICES} values (a probe offers {MIN_CHOICES} choices)",
                )
        if item.get("transitions") is None:
            return values, None
        mapping = item["transitions"]
        where = f"{path}.transitions"
        line = item.key_line("transitions")
        if not isinstance(mapping, MarkedDict) or not mapping:
            self.add(line, where, "must be a mapping: value -> list of values it may change to")
            return values, None
        self.duplicates(mapping, where, "value")
        declared = {v.strip().lower() for v in values}
        found: list[tuple[str, tuple[str, ...]]] = []
        for source, targets in mapping.items():
            key_line = mapping.key_line(source)
            if not isinstance(source, str) or not source.strip():
                self.add(key_line, f"{where}.{source}", "a value is text (quote it)")
                continue
            listed = self.texts(targets, key_line, f"{where}.{source}", "values")
            for value in (source, *listed):
                if declared and value.strip().lower() not in declared:
                    self.add(key_line, f"{where}.{source}", f"{value!r} is not one of values:")
            for target in listed:
                if target.strip().lower() == source.strip().lower():
                    self.add(key_line, f"{where}.{source}", f"{target!r} cannot change to itself")
            found.append((source, listed))
        return values, tuple(found)

    @staticmethod
    def named(transitions: tuple[tuple[str, tuple[str, ...]], ...] | None) -> tuple[str, ...]:
        order: dict[str, str] = {}
        for source, targets in transitions or ():
            for value in (source, *targets):
                order.setdefault(value.strip().lower(), value)
        return tuple(order.values())

    def references(self, item: MarkedDict, path: str, names: tuple[str, ...], known: set[str]):
        listed = item.get("topics")
        for i, topic in enumerate(names):
            if topic not in known:
                line = listed.item_line(i) if isinstance(listed, MarkedList) else item.line
                self.add(
                    line,
                    f"{path}.topics[{i}]",
                    f"unknown topic {topic!r} (topics: {', '.join(sorted(known)) or 'none'})",
                )

    # -- texts ---------------------------------------------------------------------------
    def texts(
        self, value: Any, line: int, path: str, key: str, *, empty: bool = False
    ) -> tuple[str, ...]:
        if not isinstance(value, MarkedList):
            self.add(line, path, f"must be a list of texts, got {_kind_of(value)}")
            return ()
        if not value and not empty:
            self.add(line, path, "empty list")
            return ()
        out: list[str] = []
        seen: dict[str, int] = {}
        for i, item in enumerate(value):
            item_line = value.item_line(i)
            text = self.text(item, item_line, f"{path}[{i}]", key)
            if text is None:
                continue
            if self.repeated(seen, text, i, item_line, f"{path}[{i}]", path):
                continue
            out.append(text)
        return tuple(out)

    def repeated(
        self, seen: dict[str, int], text: str, index: int, line: int, path: str, list_path: str
    ) -> bool:
        """Whether `text` repeats an earlier item of its list (case-insensitive; reported at
        `path`); else it is recorded in `seen` as item `index`."""
        folded = text.strip().lower()
        if folded in seen:
            self.add(line, path, f"duplicate {text!r} (first at {list_path}[{seen[folded]}])")
            return True
        seen[folded] = index
        return False

    def text(self, value: Any, line: int, path: str, key: str) -> str | None:
        if not isinstance(value, str):
            hint = " (quote a text that starts with '{')" if isinstance(value, dict) else ""
            if isinstance(value, bool | int | float):
                hint = " (quote it)"
            self.add(line, path, f"expected text, got {_kind_of(value)}{hint}")
            return None
        if not value.strip():
            self.add(line, path, "empty text")
            return None
        self.placeholders(value, line, path, key)
        return value

    def placeholders(self, text: str, line: int, path: str, key: str) -> None:
        allowed = PLACEHOLDERS.get(key)
        if allowed is None:
            used = _PLACEHOLDER.findall(text)
            if used:
                self.add(line, path, f"{used[0]} is not filled in here (no placeholders)")
            return
        shown = ", ".join("{" + a + "}" for a in sorted(allowed))
        try:
            parts = list(string.Formatter().parse(text))
        except ValueError as exc:
            self.add(line, path, f"{exc} (write {{{{ or }}}} for a literal brace)")
            return
        for _, field_name, spec, conversion in parts:
            if field_name is None:
                continue
            if field_name not in allowed or spec or conversion:
                placeholder = "{" + field_name + (f"!{conversion}" if conversion else "")
                placeholder += (f":{spec}" if spec else "") + "}"
                self.add(line, path, f"placeholder {placeholder} not allowed here (use {shown})")
                return


def _kind_of(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return repr(value)
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, int | float):
        return f"the number {value!r}"
    return repr(value)
