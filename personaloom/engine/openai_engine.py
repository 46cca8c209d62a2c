"""OpenAI-compatible HTTP engine for a shared inference cluster (`vllm serve` endpoints).

Bounded concurrency (a thread pool), timeouts, retries with exponential backoff that honour
`Retry-After`. A request that still fails comes back as a Completion with `error` set (the
caller records it as a rejection); when the endpoint cannot be reached at all for a whole
batch, `EngineUnavailable` stops the run (exit code 1, progress kept).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import httpx

from personaloom.engine.base import Completion, EngineStats, GenerationRequest
from personaloom.errors import RunError
from personaloom.secrets import redact

log = logging.getLogger("personaloom.engine")

RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


class EngineUnavailable(RunError):
    pass


class _Unreachable(Exception):
    pass


class OpenAIEngine:
    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        concurrency: int = 32,
        timeout: float = 120.0,
        retries: int = 4,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        if not self.base_url.endswith("/v1"):
            self.base_url += "/v1"
        self.model_name = model
        self.stats = EngineStats()
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.concurrency = concurrency
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            headers=headers,
            limits=httpx.Limits(max_connections=concurrency),
        )

    def close(self) -> None:
        self._client.close()

    def _body(self, request: GenerationRequest) -> dict:
        body: dict = {
            "model": self.model_name,
            "messages": request.messages,
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "top_p": request.top_p,
        }
        if request.seed is not None:
            body["seed"] = request.seed
        if request.stop:
            body["stop"] = list(request.stop)
        if request.json_schema is not None:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "output", "schema": request.json_schema},
            }
        return body

    def _sleep_for(self, attempt: int, response: httpx.Response | None) -> float:
        if response is not None:
            retry_after = response.headers.get("Retry-After")
            if retry_after:
                try:
                    return min(float(retry_after), self.max_backoff)
                except ValueError:
                    pass
        delay = min(self.backoff * 2**attempt, self.max_backoff)
        return delay * (0.5 + random.random() / 2)

    def _one(self, request: GenerationRequest) -> Completion:
        last_error = "no attempt made"
        unreachable = True
        for attempt in range(self.retries + 1):
            response = None
            try:
                response = self._client.post(
                    f"{self.base_url}/chat/completions", json=self._body(request)
                )
                unreachable = False
                if response.status_code in RETRY_STATUS:
                    last_error = f"HTTP {response.status_code}"
                elif response.status_code >= 400:
                    return Completion(
                        request.request_id,
                        "",
                        error=f"HTTP {response.status_code}: " + redact(response.text[:300]),
                    )
                else:
                    data = response.json()
                    choice = data["choices"][0]
                    usage = data.get("usage") or {}
                    return Completion(
                        request_id=request.request_id,
                        text=choice["message"].get("content") or "",
                        output_tokens=int(usage.get("completion_tokens", 0)),
                        prompt_tokens=int(usage.get("prompt_tokens", 0)),
                        finish_reason=str(choice.get("finish_reason") or "stop"),
                    )
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                last_error = f"cannot connect: {type(exc).__name__}"
            except httpx.TimeoutException as exc:
                unreachable = False
                last_error = f"timed out: {type(exc).__name__}"
            except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError) as exc:
                unreachable = False
                last_error = f"bad response: {type(exc).__name__}: {redact(str(exc))[:200]}"
            if attempt < self.retries:
                time.sleep(self._sleep_for(attempt, response))
        if unreachable:
            raise _Unreachable(last_error)
        return Completion(request.request_id, "", error=last_error)

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Completion]:
        if not requests:
            return []
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(requests))) as pool:
            futures = [pool.submit(self._one, r) for r in requests]
            completions: list[Completion] = []
            unreachable: list[str] = []
            for future in futures:
                try:
                    completions.append(future.result())
                except _Unreachable as exc:
                    unreachable.append(str(exc))
        if unreachable:
            raise EngineUnavailable(
                f"--base-url {self.base_url}: endpoint unreachable after {self.retries + 1} "
                f"attempts ({unreachable[0]}); progress is saved, re-run to resume"
            )
        self.stats.add(completions, time.perf_counter() - started)
        return completions
