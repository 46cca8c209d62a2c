"""Structured generation: parse and validate outputs, retry the failures, record the rest.

Every output that fails to parse or validate is retried with a fresh seed (bounded), then
returned as a rejection with its raw text and reason: never dropped, never a crash.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import jsonschema

from personaloom.engine.base import Completion, Engine, GenerationRequest
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
    validator = jsonschema.Draft202012Validator(schema)

    def parse(text: str) -> Any:
        value = parse_json(text)
        errors = sorted(validator.iter_errors(value), key=lambda e: list(e.path))
        if errors:
            where = "/".join(str(p) for p in errors[0].path) or "<root>"
            raise ValueError(f"schema violation at {where}: {errors[0].message[:160]}")
        return value

    return parse


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


def structured_flow(
    request: GenerationRequest,
    parse: Callable[[str], Any] | None = None,
    *,
    retries: int = 2,
) -> Generator[list[GenerationRequest], list[Completion], tuple[Any, Rejection | None]]:
    """One request as a flow step (`personaloom.engine.flows`), parsed and retried exactly
    as `generate_structured` does (same retry seeds): (value, None) or (None, rejection)."""
    parser = parser_for(request, parse)
    first_seed = request.seed
    failure: Rejection | None = None
    for attempt in range(retries + 1):
        (completion,) = yield [request]
        value, reason = _failure_reason(completion, parser)
        if not reason:
            return value, None
        failure = Rejection(request.request_id, reason, completion.text)
        seed = None if first_seed is None else retry_seed(first_seed, attempt + 1)
        request = replace(request, seed=seed)
    return None, failure


def generate_structured(
    engine: Engine,
    requests: Sequence[GenerationRequest],
    parse: Callable[[str], Any] | None = None,
    *,
    retries: int = 2,
) -> tuple[dict[str, Any], list[Rejection]]:
    """Run `requests`, parse each output; failed ones are retried as one smaller batch.

    `parse` defaults to JSON validation against each request's `json_schema`.
    Retry k (1, 2, ...) of a request first seeded `s` is seeded `seeds.retry_seed(s, k)`,
    a hash that cannot equal any first-attempt seed except by hash collision.
    Returns (parsed values by request id, rejections).
    """
    parsers = {r.request_id: parser_for(r, parse) for r in requests}
    results: dict[str, Any] = {}
    failures: dict[str, Rejection] = {}
    first_seed = {r.request_id: r.seed for r in requests}
    pending = list(requests)
    for attempt in range(retries + 1):
        if not pending:
            break
        completions = engine.generate(pending)
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
