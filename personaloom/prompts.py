"""Prompt templates: Jinja2 files in `prompts/`, rendered in a sandbox.

A template cannot reach Python internals (the sandbox refuses `__class__`, `mro` and the
like) and an undefined variable is an error, never an empty string.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from personaloom.errors import UserError


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

    def render(self, name: str, **variables: Any) -> str:
        template = self.template(name)
        file = self.folder / f"{name}.j2"
        try:
            return template.render(**variables).strip()
        except jinja2.UndefinedError as exc:
            raise PromptError(f"{file}: undefined variable in template: {exc.message}") from None
        except SecurityError as exc:
            raise PromptError(f"{file}: template refused by the sandbox: {exc}") from None

    def check(self, names: list[str], **variables: Any) -> None:
        """Render every named template once with sample variables: fail before any work."""
        for name in names:
            self.render(name, **variables)
