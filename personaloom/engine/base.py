"""The engine interface every stage talks to: a batch of chat requests in, completions out."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class GenerationRequest:
    """One chat completion to make.

    `json_schema`, when set, constrains the output to that JSON schema (structured outputs).
    `seed` makes the request reproducible for a fixed batch composition. `stage` names the
    pipeline stage it belongs to, for progress reports only (it never reaches the model).
    """

    request_id: str
    messages: list[dict[str, str]]
    max_tokens: int = 256
    temperature: float = 0.8
    top_p: float = 0.95
    seed: int | None = None
    json_schema: dict[str, Any] | None = None
    stop: tuple[str, ...] = ()
    stage: str = ""


@dataclass
class Completion:
    request_id: str
    text: str
    output_tokens: int = 0
    prompt_tokens: int = 0
    finish_reason: str = "stop"
    error: str | None = None  # set when the engine failed on this request
    cached_tokens: int | None = None  # prompt tokens served from the prefix cache (if told)


@dataclass
class EngineStats:
    """Counters an engine keeps over its life (used by benchmarks, artifacts and tests)."""

    calls: int = 0
    requests: int = 0
    output_tokens: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens from the prefix cache, of...
    cache_counted: int = 0  # ...these prompt tokens (requests whose engine reported it)
    seconds: float = 0.0
    batch_sizes: list[int] = field(default_factory=list)

    def add(self, completions: Sequence[Completion], seconds: float) -> None:
        self.calls += 1
        self.requests += len(completions)
        self.batch_sizes.append(len(completions))
        self.output_tokens += sum(c.output_tokens for c in completions)
        self.prompt_tokens += sum(c.prompt_tokens for c in completions)
        told = [c for c in completions if c.cached_tokens is not None]
        self.cached_tokens += sum(c.cached_tokens or 0 for c in told)
        self.cache_counted += sum(c.prompt_tokens for c in told)
        self.seconds += seconds


@runtime_checkable
class Engine(Protocol):
    """`generate` returns one completion per request, in request order."""

    model_name: str
    stats: EngineStats

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Completion]: ...
