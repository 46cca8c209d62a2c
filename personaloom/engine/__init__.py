"""Engines: one interface (`generate(requests) -> completions`), vLLM offline and HTTP.

Holds the request/completion types (`base`), the embedded SmolLM2-135M model (`embedded`),
the offline vLLM engine (`vllm_engine`), the OpenAI-compatible HTTP engine
(`openai_engine`), one engine per process (`registry`), structured output with bounded
retries (`structured`) and the relay of vLLM's log lines (`vllm_logs`). Guarantees: every
request carries its own seed; an output that fails to parse is retried, then returned as
a rejection, never dropped.

May import: the shared floor only. It knows no stage, no taxonomy and no run.
"""

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
