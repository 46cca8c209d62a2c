"""Engines: one interface (`generate(requests) -> completions`), vLLM offline and HTTP."""

from personaloom.engine.base import Completion, Engine, EngineStats, GenerationRequest
from personaloom.engine.embedded import EMBEDDED_MODEL, embedded_model_dir
from personaloom.engine.registry import EngineSpec, create_engine, get_engine, set_engine
from personaloom.engine.structured import Rejection, generate_structured, parse_json

__all__ = [
    "EMBEDDED_MODEL",
    "Completion",
    "Engine",
    "EngineSpec",
    "EngineStats",
    "GenerationRequest",
    "Rejection",
    "create_engine",
    "embedded_model_dir",
    "generate_structured",
    "get_engine",
    "parse_json",
    "set_engine",
]
