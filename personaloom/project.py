"""Where a corpus project's user-editable content lives.

`flows/`, `taxonomies/`, `prompts/` and `validators/` are found under `--project DIR`
(default: the current directory). Each folder missing there falls back to the defaults
packaged with personaloom, so `pip install personaloom && personaloom generate` works
outside a checkout.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from personaloom.errors import UserError

CONTENT_DIRS = ("flows", "taxonomies", "prompts", "validators")


def is_topics_file(path: str | Path) -> bool:
    """Whether a YAML file in `taxonomies/` holds topics (`topics.yaml`, `NAME.topics.yaml`;
    see `personaloom.generate.topics`) rather than a taxonomy."""
    name = Path(path).name
    return name in ("topics.yaml", "topics.yml") or name.endswith((".topics.yaml", ".topics.yml"))


def is_locales_file(path: str | Path) -> bool:
    """Whether a YAML file in `taxonomies/` is the country -> name locale map
    (`locales.yaml`; see `personaloom.taxonomy.identity`) rather than a taxonomy."""
    return Path(path).name in ("locales.yaml", "locales.yml")


def packaged_root() -> Path:
    """Root holding the default content: the checkout in development, `_defaults/` in a wheel."""
    here = Path(__file__).resolve().parent
    checkout = here.parent
    if (checkout / "pyproject.toml").is_file() and (checkout / "taxonomies").is_dir():
        return checkout
    return here / "_defaults"


@dataclass(frozen=True)
class Project:
    root: Path
    flows: Path
    taxonomies: Path
    prompts: Path
    validators: Path

    @classmethod
    def locate(cls, project_dir: str | Path | None = None) -> Project:
        root = Path(project_dir) if project_dir is not None else Path.cwd()
        if project_dir is not None and not root.is_dir():
            raise UserError(f"--project {project_dir}: not a directory")
        fallback = packaged_root()
        dirs = {}
        for name in CONTENT_DIRS:
            candidate = root / name
            dirs[name] = candidate if candidate.is_dir() else fallback / name
        return cls(root=root.resolve(), **dirs)

    def taxonomy_path(self, name_or_path: str) -> Path:
        """A taxonomy given as a path to a YAML file, or as a name in `taxonomies/`."""
        as_path = Path(name_or_path)
        if is_topics_file(f"{as_path}.yaml") or is_topics_file(as_path):
            raise UserError(
                f"--taxonomy {name_or_path}: a topics file (conversation topics and "
                f"preferences), not a taxonomy"
            )
        if is_locales_file(f"{as_path}.yaml") or is_locales_file(as_path):
            raise UserError(
                f"--taxonomy {name_or_path}: the locale map (which Faker locales name the "
                f"people of each country), not a taxonomy"
            )
        if as_path.suffix in {".yaml", ".yml"} or as_path.parent != Path("."):
            if not as_path.is_file():
                raise UserError(f"--taxonomy {name_or_path}: no such file")
            return as_path
        for folder in (self.taxonomies, packaged_root() / "taxonomies"):
            for suffix in (".yaml", ".yml"):
                candidate = folder / f"{name_or_path}{suffix}"
                if candidate.is_file():
                    return candidate
        known = sorted(
            p.stem
            for p in self.taxonomies.glob("*.y*ml")
            if not is_topics_file(p) and not is_locales_file(p)
        )
        raise UserError(
            f"--taxonomy {name_or_path}: unknown taxonomy (known in {self.taxonomies}: "
            f"{', '.join(known) or 'none'})"
        )
