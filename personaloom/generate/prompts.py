"""Prompt templates: Jinja2 files in `prompts/`, rendered in a sandbox.

A template cannot reach Python internals (the sandbox refuses `__class__`, `mro` and the
like) and an undefined variable is an error, never an empty string. Both are also checked
statically when a template is rendered, so a mistake in a branch that the sample variables
of a pre-flight check do not take is still caught before any work. Every error names the
template file and, where Jinja knows it, the line: `prompts/x.j2:12: ...`.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import jinja2
from jinja2 import meta, nodes
from jinja2.sandbox import (
    UNSAFE_ASYNC_GENERATOR_ATTRIBUTES,
    UNSAFE_COROUTINE_ATTRIBUTES,
    UNSAFE_FUNCTION_ATTRIBUTES,
    UNSAFE_GENERATOR_ATTRIBUTES,
    UNSAFE_METHOD_ATTRIBUTES,
    ImmutableSandboxedEnvironment,
    SecurityError,
)

from personaloom.errors import UserError

# Attributes the sandbox refuses whatever the object (besides any name starting with `_`).
UNSAFE_ATTRIBUTES = frozenset(
    {"mro"}
    | UNSAFE_FUNCTION_ATTRIBUTES
    | UNSAFE_METHOD_ATTRIBUTES
    | UNSAFE_GENERATOR_ATTRIBUTES
    | UNSAFE_COROUTINE_ATTRIBUTES
    | UNSAFE_ASYNC_GENERATOR_ATTRIBUTES
)
# Methods that modify a list, dict or set in place: the immutable sandbox refuses them (the
# variables a template receives are plain lists, dicts and strings).
MUTATING_METHODS = frozenset(
    {
        "append",
        "extend",
        "insert",
        "pop",
        "popitem",
        "remove",
        "clear",
        "update",
        "setdefault",
        "add",
        "discard",
        "sort",
        "reverse",
        "difference_update",
        "intersection_update",
        "symmetric_difference_update",
    }
)


class PromptError(UserError):
    pass


@functools.lru_cache(maxsize=8)
def _environment(folder: str) -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        loader=jinja2.FileSystemLoader(folder),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=False,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["tojson"] = lambda value: json.dumps(value, ensure_ascii=False)
    return env


def _template_line(exc: BaseException, folder: Path) -> tuple[Path | None, int | None]:
    """(template file, line) of the innermost template frame in `exc`'s traceback."""
    found: tuple[Path | None, int | None] = (None, None)
    root = str(folder.resolve())
    tb = exc.__traceback__
    while tb is not None:
        name = tb.tb_frame.f_code.co_filename
        if name.startswith(root) and name.endswith(".j2"):
            found = (Path(name), tb.tb_lineno)
        tb = tb.tb_next
    return found


@functools.lru_cache(maxsize=256)
def _static_facts(
    filename: str, mtime: float, source: str
) -> tuple[dict[str, int], list[tuple[int, str]]]:
    """({free variable: first line}, [(line, why the sandbox refuses it)]) of a template."""
    env = _environment(str(Path(filename).parent))
    ast = env.parse(source)
    free = meta.find_undeclared_variables(ast) - set(env.globals)
    # `x is defined` and `x | default(...)` are the ways to use an optional variable.
    optional = {
        n.node.name
        for n in ast.find_all(nodes.Test)
        if n.name in ("defined", "undefined") and isinstance(n.node, nodes.Name)
    } | {
        n.node.name
        for n in ast.find_all(nodes.Filter)
        if n.name in ("default", "d") and isinstance(n.node, nodes.Name)
    }
    lines: dict[str, int] = {}
    for name in ast.find_all(nodes.Name):
        if name.ctx == "load" and name.name in free - optional:
            lines.setdefault(name.name, name.lineno)
    refused: list[tuple[int, str]] = []
    for node in ast.find_all((nodes.Getattr, nodes.Getitem)):
        attr = node.attr if isinstance(node, nodes.Getattr) else None
        if isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
            attr = node.arg.value if isinstance(node.arg.value, str) else None
        if attr is not None and (attr.startswith("_") or attr in UNSAFE_ATTRIBUTES):
            refused.append((node.lineno, f"access to attribute {attr!r} is unsafe"))
    for call in ast.find_all(nodes.Call):
        if isinstance(call.node, nodes.Getattr) and call.node.attr in MUTATING_METHODS:
            refused.append(
                (call.lineno, f"calling .{call.node.attr}() would modify the template's data")
            )
    return lines, sorted(refused)


class PromptLibrary:
    """Renders `prompts/<name>.j2` with keyword variables."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise PromptError(f"{self.folder}: prompt folder does not exist")

    def template(self, name: str) -> jinja2.Template:
        env = _environment(str(self.folder.resolve()))
        file = self.folder / f"{name}.j2"
        try:
            return env.get_template(f"{name}.j2")
        except jinja2.TemplateNotFound:
            raise PromptError(f"{file}: prompt template not found") from None
        except jinja2.TemplateSyntaxError as exc:
            raise PromptError(
                f"{file}:{exc.lineno}: template syntax error: {exc.message}"
            ) from None
        except UnicodeDecodeError as exc:
            line = bytes(exc.object[: exc.start]).count(b"\n") + 1
            raise PromptError(
                f"{file}:{line}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset "
                f"{exc.start}); save it as UTF-8"
            ) from None
        except OSError as exc:
            raise PromptError(f"{file}: cannot read template ({exc.strerror or exc})") from None

    def _check_static(self, name: str, template: jinja2.Template, variables: dict) -> None:
        filename = template.filename or str(self.folder / f"{name}.j2")
        path = Path(filename)
        try:
            source = path.read_text(encoding="utf-8")
            mtime = path.stat().st_mtime
        except (OSError, UnicodeDecodeError):
            return  # loaded already, so readable; nothing more to learn here
        lines, refused = _static_facts(filename, mtime, source)
        file = self.folder / f"{name}.j2"
        if refused:
            line, why = refused[0]
            raise PromptError(f"{file}:{line}: template refused by the sandbox: {why}")
        missing = sorted((line, var) for var, line in lines.items() if var not in variables)
        if missing:
            line, var = missing[0]
            raise PromptError(
                f"{file}:{line}: undefined variable in template: {var!r} "
                f"(available: {', '.join(sorted(variables)) or 'none'})"
            )

    def render(self, name: str, **variables: Any) -> str:
        template = self.template(name)
        self._check_static(name, template, variables)
        file = self.folder / f"{name}.j2"
        try:
            return template.render(**variables).strip()
        except Exception as exc:  # anything a template does wrong is the template's fault
            where, line = _template_line(exc, self.folder)
            shown = where if where is not None else file
            prefix = f"{shown}:{line}" if line is not None else f"{shown}"
            if isinstance(exc, jinja2.UndefinedError):
                raise PromptError(
                    f"{prefix}: undefined variable in template: {exc.message}"
                ) from None
            if isinstance(exc, SecurityError):
                raise PromptError(f"{prefix}: template refused by the sandbox: {exc}") from None
            if isinstance(exc, jinja2.TemplateNotFound):
                raise PromptError(
                    f"{prefix}: template includes {exc.name!r}, which is not a template in "
                    f"{self.folder}"
                ) from None
            if isinstance(exc, jinja2.TemplateSyntaxError):
                raise PromptError(
                    f"{exc.filename or shown}:{exc.lineno}: template syntax error: {exc.message}"
                ) from None
            raise PromptError(f"{prefix}: template failed: {type(exc).__name__}: {exc}") from None

    def check(self, names: list[str], **variables: Any) -> None:
        """Render every named template once with sample variables: fail before any work."""
        for name in names:
            self.render(name, **variables)
