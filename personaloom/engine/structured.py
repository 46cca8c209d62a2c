"""Structured generation: parse and validate outputs, retry the failures, record the rest.

Every output that fails to parse or validate is retried with a fresh seed (bounded), then
returned as a rejection with its raw text and reason: never dropped, never a crash.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import jsonschema

from personaloom.engine.base import Completion, Engine, GenerationRequest
from personaloom.engine.flows import run_flows
from personaloom.seeds import retry_seed


@dataclass
class Rejection:
    request_id: str
    reason: str
    raw: str


def parse_json(text: str) -> Any:
    """Parse the first JSON value in `text` (models sometimes wrap it in prose or fences)."""
    text = text.strip()
    if text.startswith("```"):
        text = text.strip("`")
        text = text[text.find("\n") + 1 :] if "\n" in text else text
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        start = min((i for i in (text.find("{"), text.find("[")) if i >= 0), default=-1)
        if start < 0:
            raise
        value, _ = json.JSONDecoder().raw_decode(text[start:])
        return value


def validate_against(schema: dict[str, Any]) -> Callable[[str], Any]:
    validator = _validator(json.dumps(schema, sort_keys=True))

    def parse(text: str) -> Any:
        value = parse_json(text)
        errors = sorted(validator.iter_errors(value), key=lambda e: list(e.path))
        if errors:
            where = "/".join(str(p) for p in errors[0].path) or "<root>"
            raise ValueError(f"schema violation at {where}: {errors[0].message[:160]}")
        return value

    return parse


@functools.lru_cache(maxsize=256)
def _validator(schema: str) -> jsonschema.Draft202012Validator:
    """One compiled validator per schema (every persona's section k has the same one)."""
    return jsonschema.Draft202012Validator(json.loads(schema))


def parser_for(request: GenerationRequest, parse: Callable[[str], Any] | None) -> Callable:
    """`parse`, else JSON validation against the request's schema, else the text itself."""
    if parse is not None:
        return parse
    if request.json_schema is not None:
        return validate_against(request.json_schema)
    return lambda text: text


def _failure_reason(completion: Completion, parse: Callable[[str], Any]) -> tuple[Any, str]:
    """(parsed value, "") or (None, why the output is not usable)."""
    if completion.error:
        return None, f"engine error: {completion.error}"
    try:
        return parse(completion.text), ""
    except (ValueError, json.JSONDecodeError) as exc:
        return None, f"unparseable output ({completion.finish_reason}): {exc}"


def structured_batch_flow(
    requests: Sequence[GenerationRequest],
    parse: Callable[[str], Any] | None = None,
    *,
    retries: int = 2,
) -> Generator[list[GenerationRequest], list[Completion], tuple[dict[str, Any], list[Rejection]]]:
    """`requests` as one flow step (`personaloom.engine.flows`), parsed; the failed ones are
    asked again as one smaller step, at most `retries` times.

    `parse` defaults to JSON validation against each request's `json_schema`. Retry k (1,
    2, ...) of a request first seeded `s` is seeded `seeds.retry_seed(s, k)`, a hash that
    cannot equal any first-attempt seed except by hash collision. Returns (parsed values by
    request id, rejections)."""
    parsers = {r.request_id: parser_for(r, parse) for r in requests}
    first_seed = {r.request_id: r.seed for r in requests}
    results: dict[str, Any] = {}
    failures: dict[str, Rejection] = {}
    pending = list(requests)
    for attempt in range(retries + 1):
        if not pending:
            break
        completions = yield pending
        retry: list[GenerationRequest] = []
        for request, completion in zip(pending, completions, strict=True):
            value, reason = _failure_reason(completion, parsers[request.request_id])
            if not reason:
                results[request.request_id] = value
                failures.pop(request.request_id, None)
                continue
            failures[request.request_id] = Rejection(request.request_id, reason, completion.text)
            seed = first_seed[request.request_id]
            retry.append(
                replace(request, seed=None if seed is None else retry_seed(seed, attempt + 1))
            )
        pending = retry
    return results, list(failures.values())


def structured_flow(
    request: GenerationRequest,
    parse: Callable[[str], Any] | None = None,
    *,
    retries: int = 2,
) -> Generator[list[GenerationRequest], list[Completion], tuple[Any, Rejection | None]]:
    """One request of `structured_batch_flow`: (value, None) or (None, rejection)."""
    values, failures = yield from structured_batch_flow([request], parse, retries=retries)
    if failures:
        return None, failures[0]
    return values[request.request_id], None


def generate_structured(
    engine: Engine,
    requests: Sequence[GenerationRequest],
    parse: Callable[[str], Any] | None = None,
    *,
    retries: int = 2,
) -> tuple[dict[str, Any], list[Rejection]]:
    """Run `requests` on `engine` (`structured_batch_flow`, the failed ones retried as one
    smaller batch); (parsed values by request id, rejections)."""
    (result,) = run_flows(engine, [structured_batch_flow(requests, parse, retries=retries)])
    return result
