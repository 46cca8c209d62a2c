"""The CLI's adapter to the flows in `flows/`: runs them in-process (quiet, offline),
loaded by path from the corpus project, and borrows the Prefect Secret block lookup from
`flows/release.py`. Only the CLI uses this module; nothing here imports Prefect itself
(the flow files do, when they are loaded)."""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import sys
from pathlib import Path
from types import ModuleType

from personaloom.errors import UserError
from personaloom.project import Project
from personaloom.secrets import RedactingFilter

QUIET_ENV = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_UI_ENABLED": "false",
    "PREFECT_UI_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "TOKENIZERS_PARALLELISM": "false",
    # Prefect's temporary API server creates its database on first use; on a busy machine
    # that takes longer than Prefect's default 20 s and the run died before it started.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
}


def quiet_environment() -> None:
    """QUIET_ENV's defaults. Prefect reads its settings once, when it is first imported (by
    a flow file): set later, they are ignored (the server start timeout was then Prefect's
    20 s, and a run on a busy machine died before it started)."""
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)


def configure_environment(verbose: bool = False) -> None:
    """Before any flow file is loaded: QUIET_ENV, the console's log levels, redaction."""
    quiet_environment()
    if not verbose:
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO")
    redacting = RedactingFilter()
    for handler in logging.getLogger().handlers:
        handler.addFilter(redacting)
    logging.getLogger().addFilter(redacting)


def load_flow_module(project: Project, name: str = "build_corpus") -> ModuleType:
    path = project.flows / f"{name}.py"
    if not path.is_file():
        raise UserError(f"--project {project.root}: flow file {path} not found")
    # One module per file: two projects' flows in one process must not shadow each other.
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:10]
    module_name = f"personaloom_flows_{name}_{digest}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    quiet_environment()  # before the flow file imports Prefect
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        del sys.modules[module_name]
        raise UserError(f"{path}:{exc.lineno}: syntax error in flow file: {exc.msg}") from None
    return module


def prefect_configured() -> bool:
    """Whether a Prefect API is configured (so a Secret block can exist at all)."""
    if os.environ.get("PREFECT_API_URL"):
        return True
    home = Path(os.environ.get("PREFECT_HOME") or Path.home() / ".prefect")
    try:
        return "PREFECT_API_URL" in (home / "profiles.toml").read_text()
    except OSError:
        return False


def hub_token_source(project_dir: str | None):
    """The Prefect Secret block as a Hub token source, or None without a Prefect API or
    with the token already in the environment (then Prefect is not even imported)."""
    if os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN"):
        return None
    if not prefect_configured():
        return None
    return load_flow_module(Project.locate(project_dir), "release").TOKEN_SOURCE


def attach_redaction() -> None:
    """Add the secret filter to every handler Prefect installed."""
    redacting = RedactingFilter()
    for name in ("", "prefect", "prefect.flow_runs", "prefect.task_runs", "personaloom", "vllm"):
        logger = logging.getLogger(name)
        for handler in logger.handlers:
            handler.addFilter(redacting)


def _resolve(path: str | Path) -> Path:
    return Path(path).expanduser().resolve()
