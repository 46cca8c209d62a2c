"""Rule critics: deterministic checks of generated records, loaded as plug-ins by path.

A plug-in is a Python file in `validators/critics/` (not an importable package: PyPI has a
package named `validators`). It defines critics with the `rule_critic` decorator:

    from personaloom.critic.rule_critics import rule_critic

    @rule_critic("length", kinds=("persona",), defaults={"min_words": 60})
    def length(record, ctx):
        n = len(ctx.words(record["narrative"]))
        if n < ctx.settings["min_words"]:
            return ctx.fail(f"too_short: {n} words < {ctx.settings['min_words']}")
        return ctx.ok()

Settings are merged in three layers: the decorator's `defaults`, the `rules:` section of
`validators/critics.yaml`, then the `settings` given to `load_critics`. Every setting
must exist in the defaults (a typo is an error naming the file, not a silent no-op).
Every critic also takes `enabled` (true) and `mode`: `filter` (a failure rejects the
record), `advisory` (a failure is counted, never rejects) or `auto` (advisory for the
embedded demo model, filter for any other: `critic.rounds.resolve_rule_modes`).

A failing result's reason starts with a stable snake_case code (`too_short: ...`) so the
run report can group reasons.
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from personaloom.errors import UserError, read_utf8

KINDS = ("persona", "conversation")
RULE_MODES = ("filter", "advisory", "auto")
SETTINGS_FILE = "critics.yaml"
SETTINGS_SECTIONS = ("rules", "judges", "decision")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class CriticResult:
    critic: str
    passed: bool
    reason: str = ""
    score: float | None = None


@dataclass(frozen=True)
class CriticContext:
    """What a critic's check sees besides the record: its settings and shared data."""

    critic: str
    kind: str
    settings: Mapping[str, Any]
    shared: Mapping[str, Any] = field(default_factory=dict)

    def ok(self, score: float | None = None) -> CriticResult:
        return CriticResult(self.critic, True, "", score)

    def fail(self, reason: str, score: float | None = None) -> CriticResult:
        return CriticResult(self.critic, False, reason, score)

    def persona(self, persona_id: str | None) -> dict[str, Any] | None:
        """The persona a conversation belongs to, when the caller supplied personas."""
        personas = self.shared.get("personas") or {}
        return personas.get(persona_id) if persona_id is not None else None

    def words(self, text: str | None) -> list[str]:
        return words(text)

    def sentences(self, text: str | None) -> list[str]:
        return sentences(text)


CheckFn = Callable[[dict[str, Any], CriticContext], CriticResult]


@dataclass(frozen=True)
class RuleCritic:
    name: str
    kinds: tuple[str, ...]
    check_fn: CheckFn
    defaults: Mapping[str, Any] = field(default_factory=dict)
    settings: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""
    source: str = ""
    shared: Mapping[str, Any] = field(default_factory=dict)  # set by load_critics
    mode: str = "filter"  # filter | advisory | auto (set by load_critics)

    def applies_to(self, kind: str) -> bool:
        return kind in self.kinds

    def check(self, record: dict[str, Any], context: CriticContext) -> CriticResult:
        return self.check_fn(record, context)


def rule_critic(
    name: str,
    *,
    kinds: Sequence[str] = KINDS,
    defaults: Mapping[str, Any] | None = None,
    description: str = "",
) -> Callable[[CheckFn], RuleCritic]:
    """Declare a rule critic in a plug-in file (the decorated function becomes a RuleCritic)."""

    def wrap(fn: CheckFn) -> RuleCritic:
        doc_lines = (fn.__doc__ or "").strip().splitlines()
        return RuleCritic(
            name=name,
            kinds=tuple(kinds),
            check_fn=fn,
            defaults=dict(defaults or {}),
            settings=dict(defaults or {}),
            description=description or (doc_lines[0] if doc_lines else ""),
        )

    return wrap


# -- loading -------------------------------------------------------------------------------
def load_critic_settings(path: Path) -> dict[str, Any]:
    """Read `validators/critics.yaml` ({} when absent); sections: rules, judges, decision."""
    path = Path(path)
    if not path.exists():
        return {}
    try:
        data = yaml.safe_load(read_utf8(path, "critic settings"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise UserError(f"{where}: YAML syntax error: {getattr(exc, 'problem', exc)}") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read: {exc.strerror}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping with sections {', '.join(SETTINGS_SECTIONS)}")
    unknown = sorted(set(data) - set(SETTINGS_SECTIONS))
    if unknown:
        raise UserError(
            f"{path}: unknown section {', '.join(map(str, unknown))} "
            f"(known: {', '.join(SETTINGS_SECTIONS)})"
        )
    for section, value in data.items():
        if value is not None and not isinstance(value, dict):
            raise UserError(f"{path}: {section}: expected a mapping")
    return {k: v or {} for k, v in data.items()}


def load_critics(
    folder: Path,
    settings: Mapping[str, Any] | None = None,
    *,
    settings_file: Path | None = None,
    prompts_dir: Path | None = None,
) -> list[RuleCritic]:
    """Load every `*.py` plug-in in `folder` (sorted; `_*.py` skipped), settings applied.

    `settings` maps critic name -> overrides, merged over the `rules:` section of
    `settings_file` (default: `critics.yaml` beside the folder), merged over each critic's
    defaults. A critic whose merged settings say `enabled: false` is left out.
    `prompts_dir` (default: `prompts/` of the project holding `folder`, when it exists)
    supplies the template sentences the leakage critic looks for (`shared["prompt_phrases"]`).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: critic plug-in folder does not exist")
    settings_file = (
        Path(settings_file) if settings_file is not None else folder.parent / SETTINGS_FILE
    )
    from_file = load_critic_settings(settings_file).get("rules", {})
    critics: dict[str, RuleCritic] = {}
    for path in sorted(folder.glob("*.py")):
        if path.name.startswith("_"):
            continue
        for critic in _load_plugin(path):
            if critic.name in critics:
                raise UserError(
                    f"{path}: critic {critic.name!r} is already defined in {critics[critic.name].source}"
                )
            critics[critic.name] = critic
    layers = [(from_file, str(settings_file)), (settings or {}, "critic settings")]
    for overrides, where in layers:
        for name in overrides:
            if name not in critics:
                raise UserError(
                    f"{where}: rules.{name}: no such critic (loaded from {folder}: "
                    f"{', '.join(sorted(critics)) or 'none'})"
                )
    if prompts_dir is None:
        prompts_dir = folder.parent.parent / "prompts"
    shared = {"prompt_phrases": template_phrases(prompts_dir)}
    loaded = []
    for name, critic in critics.items():
        merged: dict[str, Any] = {"enabled": True, "mode": "filter", **critic.defaults}
        mode_from = f"{critic.source}: {name}"
        for overrides, where in layers:
            if name in overrides:
                merged = _merge(merged, overrides[name], f"{where}: rules.{name}")
                if "mode" in (overrides[name] or {}):
                    mode_from = f"{where}: rules.{name}"
        mode = merged.pop("mode")
        if mode not in RULE_MODES:
            raise UserError(
                f"{mode_from}.mode: expected one of {', '.join(RULE_MODES)}, got {mode!r}"
            )
        if merged.pop("enabled"):
            loaded.append(replace(critic, settings=merged, shared=shared, mode=mode))
    return loaded


def _load_plugin(path: Path) -> list[RuleCritic]:
    read_utf8(path, "critic plug-in")  # a clear error (file:line) for a non-UTF-8 file
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
    module_name = f"personaloom_critic_plugins.{re.sub(r'[^0-9a-zA-Z_]', '_', path.stem)}_{digest}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise UserError(f"{path}: cannot load as a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses and pickling look modules up here
    dont_write = sys.dont_write_bytecode
    sys.dont_write_bytecode = True  # never litter a user's project with __pycache__
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        sys.modules.pop(module_name, None)
        raise UserError(f"{path}:{exc.lineno}: syntax error in critic plug-in: {exc.msg}") from None
    except Exception as exc:
        sys.modules.pop(module_name, None)
        line = _plugin_line(exc, path)
        where = f"{path}:{line}" if line else str(path)
        raise UserError(
            f"{where}: critic plug-in failed to load: {type(exc).__name__}: {exc}"
        ) from None
    finally:
        sys.dont_write_bytecode = dont_write
    found = [v for v in vars(module).values() if isinstance(v, RuleCritic)]
    if not found:
        raise UserError(
            f"{path}: defines no critic (decorate a check function with "
            f"@personaloom.critic.rule_critics.rule_critic)"
        )
    critics = []
    for critic in found:
        if not _NAME.match(critic.name):
            raise UserError(f"{path}: critic name {critic.name!r}: use lower_snake_case")
        bad = [k for k in critic.kinds if k not in KINDS]
        if bad or not critic.kinds:
            raise UserError(
                f"{path}: critic {critic.name!r}: unknown record kind {', '.join(bad) or '(none)'} "
                f"(known: {', '.join(KINDS)})"
            )
        if not callable(critic.check_fn):
            raise UserError(f"{path}: critic {critic.name!r}: check is not callable")
        critics.append(replace(critic, source=str(path)))
    return critics


def _plugin_line(exc: BaseException, path: Path) -> int | None:
    line = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if Path(frame.filename) == path:
            line = frame.lineno
    return line


def _merge(base: Mapping[str, Any], overrides: Any, where: str) -> dict[str, Any]:
    if not isinstance(overrides, Mapping):
        raise UserError(f"{where}: expected a mapping of settings, got {type(overrides).__name__}")
    merged = dict(base)
    for key, value in overrides.items():
        if key not in base:
            raise UserError(f"{where}.{key}: unknown setting (known: {', '.join(sorted(base))})")
        current = base[key]
        if isinstance(current, Mapping):
            merged[key] = _merge(current, value, f"{where}.{key}")
        elif not _same_type(current, value):
            raise UserError(
                f"{where}.{key}: expected {type(current).__name__}, got {type(value).__name__} ({value!r})"
            )
        else:
            merged[key] = value
    return merged


def _same_type(current: Any, value: Any) -> bool:
    if isinstance(current, bool) or isinstance(value, bool):
        return isinstance(current, bool) and isinstance(value, bool)
    if isinstance(current, (int, float)):
        return isinstance(value, (int, float)) and (
            isinstance(current, float) or isinstance(value, int)
        )
    if current is None:
        return True
    return isinstance(value, type(current))


# -- running ---------------------------------------------------------------------------------
def run_rule_critics(
    critics: Sequence[RuleCritic],
    records: Sequence[dict[str, Any]],
    kind: str,
    *,
    personas: Mapping[str, dict[str, Any]] | None = None,
    shared: Mapping[str, Any] | None = None,
) -> list[list[CriticResult]]:
    """Results of every critic that applies to `kind`, per record (in record order).

    `personas` (persona_id -> persona record) lets conversation critics compare the user's
    words with the persona. A critic that raises is recorded as a failure with the error,
    never a crash of the run.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown record kind {kind!r}")
    active = [
        (
            c,
            CriticContext(
                c.name, kind, c.settings, {**c.shared, **(shared or {}), "personas": personas or {}}
            ),
        )
        for c in critics
        if c.applies_to(kind)
    ]
    results: list[list[CriticResult]] = []
    for record in records:
        row = []
        for critic, context in active:
            try:
                result = critic.check(record, context)
                if not isinstance(result, CriticResult):
                    raise TypeError(f"check returned {type(result).__name__}, not CriticResult")
            except Exception as exc:
                result = context.fail(
                    f"critic_error: {type(exc).__name__}: {exc} ({critic.source})"
                )
            row.append(result)
        results.append(row)
    return results


# -- text helpers for plug-ins ---------------------------------------------------------------
_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*", re.UNICODE)
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"'”’)]*\s+|\n+")


def words(text: str | None) -> list[str]:
    """Lower-case word tokens (letters and digits; inner apostrophes kept)."""
    return [w.replace("’", "'") for w in _WORD.findall((text or "").lower())]


def sentences(text: str | None) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(text or "") if s and s.strip()]


def record_id(record: Mapping[str, Any], kind: str) -> str:
    key = "persona_id" if kind == "persona" else "conversation_id"
    return str(record.get(key) or "")


def text_units(
    record: Mapping[str, Any], kind: str, role: str | None = None
) -> list[tuple[str, str]]:
    """(label, text) pieces of a record: a persona's sections (or narrative), a conversation's turns."""
    if kind == "persona":
        sections = record.get("sections") or {}
        if isinstance(sections, list):  # Arrow map read back as pairs
            sections = dict(sections)
        if sections:
            return [(f"sections.{name}", text or "") for name, text in sections.items()]
        return [("narrative", record.get("narrative") or "")]
    units = []
    for i, turn in enumerate(record.get("turns") or []):
        if role is None or turn.get("role") == role:
            units.append((f"turns[{i}].{turn.get('role')}", turn.get("content") or ""))
    return units


def full_text(record: Mapping[str, Any], kind: str, role: str | None = None) -> str:
    if kind == "persona":
        narrative = record.get("narrative") or ""
        if narrative.strip():
            return narrative
    return "\n\n".join(text for _, text in text_units(record, kind, role))


def attribute_values(record: Mapping[str, Any] | None, *leaf_names: str) -> list[tuple[str, str]]:
    """(path, value) of attributes whose last path component is one of `leaf_names`."""
    if not record:
        return []
    wanted = set(leaf_names)
    found = []
    for attribute in record.get("attributes") or []:
        path = str(attribute.get("path") or "")
        if path.rsplit(".", 1)[-1] in wanted and attribute.get("value") not in (None, ""):
            found.append((path, str(attribute["value"])))
    return found


def template_phrases(folder: Path, min_words: int = 4) -> list[str]:
    """Literal sentences of the prompt templates in `folder`, normalized (for leakage checks)."""
    phrases: set[str] = set()
    folder = Path(folder)
    if not folder.is_dir():
        return []
    for path in sorted(folder.glob("*.j2")):
        text = read_utf8(path, "prompt template")
        text = re.sub(r"\{#.*?#\}|\{%.*?%\}", "\n", text, flags=re.S)
        for chunk in re.split(r"\{\{.*?\}\}|\n", text, flags=re.S):
            for sentence in re.split(r"(?<=[.!?:])\s+", chunk):
                normalized = normalize_phrase(sentence)
                if len(normalized.split()) >= min_words:
                    phrases.add(normalized)
    return sorted(phrases)


def normalize_phrase(text: str) -> str:
    """Lower-case words joined by single spaces (punctuation dropped)."""
    return " ".join(words(text))
