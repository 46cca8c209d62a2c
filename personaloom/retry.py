"""One retry policy for every HTTP client of the library (the OpenAI engine, the Hub client).

What is retried: an answer 429 or 500/502/503/504, and a failure to get an answer at all
(`httpx.TransportError` and its subclasses: connection refused or reset, connect/read/write
timeouts, protocol errors; the same from `httpx2`, which huggingface_hub uses; and the
builtin `ConnectionError` / `TimeoutError`). Any other answer (400, 401, 403, 404, 409, ...)
is final. Exceptions are classified by walking their cause chain, because huggingface_hub
wraps some failures (an LFS upload in a worker thread) in a RuntimeError.

How long to wait before attempt n+1: what the server said in `Retry-After` (delta-seconds or
an HTTP date, RFC 9110 section 10.2.3), else `base_wait * 2**(n-1)` with jitter (the wait is
drawn from the upper half of that value, so retries of concurrent requests spread out but
never come back faster than half the backoff); either way at most `max_wait`. After
`attempts` attempts the last exception is raised unchanged, so each client keeps its own
error messages (the engine's `Completion.error`, the Hub's `RunError`).

Why a small function and not tenacity or stamina (neither is installed here): both give the
loop, the attempt bound and jittered backoff, but neither reads `Retry-After`, so its
parsing, the HTTP classification above and a custom wait hook would still be ours; what
the library would save is the ~15-line loop below, against a new runtime dependency for
the whole pipeline. stamina's defaults (a 45 s overall time limit, a process-wide testing
switch instead of an injectable sleep) would also have to be undone for the Hub, whose
uploads may legitimately take longer. Everything here takes its `sleep`, `clock` and
`random` as parameters, so tests drive it without waiting, and measure it when they do.
"""

from __future__ import annotations

import email.utils
import math
import random as _random
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any, TypeVar

T = TypeVar("T")

RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
_SECONDS = re.compile(r"\d+(\.\d+)?")


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait according to a `Retry-After` value; None when absent or unreadable.

    RFC 9110 allows delta-seconds ("120") or an HTTP date (IMF-fixdate, and the obsolete
    RFC 850 and asctime forms, which recipients must also accept); a fraction ("0.5") is
    accepted too. A date in the past means 0. `now` is the wall-clock time (Unix seconds)
    to measure a date from; default `time.time()`.
    """
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    if _SECONDS.fullmatch(value):
        seconds = float(value)
        return seconds if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # asctime and "-0000" dates are UTC
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def network_errors() -> tuple[type[BaseException], ...]:
    """Exception types meaning "no answer": builtins plus httpx / httpx2 TransportError."""
    errors: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for module in ("httpx", "httpx2"):
        try:
            errors.append(__import__(module).TransportError)
        except (ImportError, AttributeError):
            continue
    return tuple(errors)


@dataclass(frozen=True)
class Retry:
    """Why an attempt is worth repeating; `retry_after` is the raw header, if any."""

    reason: str
    status: int | None = None
    retry_after: str | None = None


def _response_of(exc: BaseException) -> Any:
    try:
        response = getattr(exc, "response", None)
    except Exception:  # some exception types raise from their properties
        return None
    return response if isinstance(getattr(response, "status_code", None), int) else None


def classify(exc: BaseException) -> Retry | None:
    """A `Retry` when `exc` (or an exception in its cause chain) is worth another attempt.

    The first exception in the chain that carries an HTTP response decides by its status
    (httpx.HTTPStatusError, huggingface_hub's HfHubHTTPError, requests' HTTPError); a
    network error decides for a retry.
    """
    network = network_errors()
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        response = _response_of(current)
        if response is not None:
            status = response.status_code
            if status not in RETRY_STATUS:
                return None
            headers: Mapping[str, str] | None = getattr(response, "headers", None)
            hint = headers.get("Retry-After") if headers is not None else None
            return Retry(f"HTTP {status}", status, hint)
        if isinstance(current, network):
            return Retry(f"network error ({type(current).__name__})")
        current = current.__cause__ or current.__context__
    return None


@dataclass(frozen=True)
class RetryPolicy:
    """At most `attempts` attempts; waits per `Retry-After` or jittered exponential backoff."""

    attempts: int = 5
    base_wait: float = 0.5
    max_wait: float = 30.0
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)
    clock: Callable[[], float] = field(default=time.time, repr=False)  # wall clock, for dates
    random: Callable[[], float] = field(default=_random.random, repr=False)

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"attempts must be at least 1, not {self.attempts}")

    def wait(self, attempt: int, retry_after: str | None = None) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based)."""
        hinted = parse_retry_after(retry_after, now=self.clock())
        if hinted is not None:
            return min(hinted, self.max_wait)
        backoff = min(self.base_wait * 2 ** (attempt - 1), self.max_wait)
        return backoff * (0.5 + self.random() / 2)

    def call(
        self,
        fn: Callable[[], T],
        *,
        classify: Callable[[BaseException], Retry | None] = classify,
        on_retry: Callable[[int, Retry, float], None] | None = None,
    ) -> T:
        """`fn()`, repeated while it raises something `classify` calls retryable.

        `on_retry(attempt, retry, wait)` is called before each wait (to log it). The
        exception of the last attempt, or of a final answer, propagates unchanged.
        """
        for attempt in range(1, self.attempts + 1):
            try:
                return fn()
            except Exception as exc:
                verdict = classify(exc)
                if verdict is None or attempt == self.attempts:
                    raise
            wait = self.wait(attempt, verdict.retry_after)
            if on_retry is not None:
                on_retry(attempt, verdict, wait)
            self.sleep(wait)
        raise AssertionError("unreachable")
