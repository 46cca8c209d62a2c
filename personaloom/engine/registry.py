"""One engine per process, created once and reused by every batch.

Prefect tasks and CLI runs call `get_engine(spec)`; the engine is never passed as a task
argument (it is neither hashable nor cheap to serialise).
"""

from __future__ import annotations

import os
import threading
from dataclasses import asdict, dataclass, field
from typing import Any

from personaloom.engine.base import Engine
from personaloom.engine.embedded import EMBEDDED_MODEL, embedded_model_dir
from personaloom.errors import UserError

ENGINES = ("vllm", "openai")


@dataclass(frozen=True)
class EngineSpec:
    engine: str = "vllm"
    model: str = EMBEDDED_MODEL
    base_url: str | None = None
    model_cache: str | None = None
    max_model_len: int = 4096
    compact_json: bool = False
    concurrency: int = 32
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self, option_prefix: str = "--") -> None:
        """UserError naming the option (`--judge-` for the judges' engine) on a bad spec."""
        engine, url, model = (f"{option_prefix}{o}" for o in ("engine", "base-url", "model"))
        if self.engine not in ENGINES:
            raise UserError(f"{engine} {self.engine}: expected one of {', '.join(ENGINES)}")
        if self.engine == "openai" and not self.base_url:
            raise UserError(f"{url} is required with {engine} openai")
        if self.engine == "openai" and self.model == EMBEDDED_MODEL:
            raise UserError(f"{model}: name the served model when using {engine} openai")
        if self.base_url and not self.base_url.startswith(("http://", "https://")):
            raise UserError(f"{url} {self.base_url}: expected an http(s):// URL")

    def key(self) -> tuple:
        return tuple(sorted((k, repr(v)) for k, v in asdict(self).items()))


_lock = threading.Lock()
_engines: dict[tuple, Engine] = {}


def api_key() -> str | None:
    """The key an OpenAI-compatible endpoint gets (from the environment only)."""
    return os.environ.get("PERSONALOOM_API_KEY") or os.environ.get("OPENAI_API_KEY")


def create_engine(spec: EngineSpec | None = None, **overrides: Any) -> Engine:
    """Build a new engine (use `get_engine` to share one per process)."""
    spec = spec or EngineSpec(**overrides)
    spec.validate()
    if spec.engine == "openai":
        from personaloom.engine.openai_engine import OpenAIEngine

        return OpenAIEngine(
            spec.base_url or "",
            spec.model,
            api_key=api_key(),
            concurrency=spec.concurrency,
            **spec.extra,
        )
    from personaloom.engine.vllm_engine import VLLMEngine

    if spec.model == EMBEDDED_MODEL:
        from pathlib import Path

        cache = Path(spec.model_cache) if spec.model_cache else None
        return VLLMEngine(
            str(embedded_model_dir(cache)),
            model_name="HuggingFaceTB/SmolLM2-135M-Instruct (embedded GGUF Q4_1)",
            max_model_len=spec.max_model_len,
            compact_json=spec.compact_json,
            **spec.extra,
        )
    return VLLMEngine(
        spec.model,
        max_model_len=spec.max_model_len,
        compact_json=spec.compact_json,
        **spec.extra,
    )


def get_engine(spec: EngineSpec) -> Engine:
    """The process-wide engine for `spec`, created on first use."""
    key = spec.key()
    with _lock:
        engine = _engines.get(key)
        if engine is None:
            # One engine per process: a different spec replaces the previous one.
            _engines.clear()
            engine = _engines[key] = create_engine(spec)
        return engine


def set_engine(spec: EngineSpec, engine: Engine) -> None:
    """Register an already-built engine for `spec` (tests share one per session)."""
    with _lock:
        _engines.clear()
        _engines[spec.key()] = engine


def close_engines() -> None:
    """Shut down the process engine (vLLM's engine processes exit now, not at exit)."""
    with _lock:
        for engine in _engines.values():
            close = getattr(engine, "close", None)
            if close is not None:
                close()
        _engines.clear()


def is_registered(spec: EngineSpec) -> bool:
    with _lock:
        return spec.key() in _engines
