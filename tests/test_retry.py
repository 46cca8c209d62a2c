"""The one HTTP retry policy (personaloom/retry.py) shared by the OpenAI engine and the Hub.

The first half drives the policy with an injected sleep, clock and random source (no
waiting); the second half measures real waits against the local stand-in HTTP server of
tests/httpstub.py, through the OpenAI engine: the time between two attempts is read from
the server's own arrival timestamps.
"""

from __future__ import annotations

import email.utils
import math
import time

import httpx
import httpx2
import pytest
from huggingface_hub.errors import HfHubHTTPError

from personaloom.engine.base import GenerationRequest
from personaloom.engine.openai_engine import OpenAIEngine
from personaloom.errors import RunError
from personaloom.publish.hub import HubClient
from personaloom.retry import RETRY_STATUS, Retry, RetryPolicy, classify, parse_retry_after
from tests.httpstub import ChatServer

# RFC 9110's example date, in its three forms; 784111777 is that instant in Unix seconds.
IMF = "Sun, 06 Nov 1994 08:49:37 GMT"
RFC850 = "Sunday, 06-Nov-94 08:49:37 GMT"
ASCTIME = "Sun Nov  6 08:49:37 1994"
INSTANT = 784111777.0


def status_error(status: int, retry_after: str | None = None) -> httpx.HTTPStatusError:
    request = httpx.Request("POST", "http://127.0.0.1/v1/chat/completions")
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    response = httpx.Response(status, headers=headers, request=request)
    return httpx.HTTPStatusError(f"HTTP {status}", request=request, response=response)


def hub_error(status: int, retry_after: str | None = None) -> HfHubHTTPError:
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    request = httpx2.Request("POST", "http://127.0.0.1/api/datasets/acme/x/commit/main")
    response = httpx2.Response(status, headers=headers, request=request)
    return HfHubHTTPError(f"{status} Server Error", response=response)


def wrapped(exc: BaseException) -> RuntimeError:
    """What huggingface_hub does with a failure in a worker thread."""
    try:
        raise exc
    except BaseException as inner:
        try:
            raise RuntimeError("An error occurred while uploading") from inner
        except RuntimeError as outer:
            return outer


class Fake:
    """Recorded sleeps; a clock that only moves when slept; a fixed random draw."""

    def __init__(self, now: float = INSTANT - 100, draw: float = 0.5) -> None:
        self.now, self.draw, self.sleeps = now, draw, []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def policy(self, **kwargs) -> RetryPolicy:
        return RetryPolicy(
            sleep=self.sleep, clock=lambda: self.now, random=lambda: self.draw, **kwargs
        )


def failing(*errors: BaseException, result: str = "ok"):
    """A callable raising `errors` one per call, then returning `result`; counts calls."""
    queue = list(errors)

    def fn() -> str:
        fn.calls += 1
        if queue:
            raise queue.pop(0)
        return result

    fn.calls = 0
    return fn


# -- Retry-After ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("7", 7.0),
        ("0", 0.0),
        (" 120 ", 120.0),
        ("0.5", 0.5),
        (IMF, 30.0),
        (RFC850, 30.0),
        (ASCTIME, 30.0),
        ("Sun, 06 Nov 1994 08:49:37 -0000", 30.0),
    ],
)
def test_retry_after_reads_delta_seconds_and_every_http_date_form(value, seconds) -> None:
    assert parse_retry_after(value, now=INSTANT - 30) == seconds


@pytest.mark.parametrize("value", [None, "", "soon", "-3", "inf", "nan", "1e3", "3 s"])
def test_an_absent_or_unreadable_retry_after_means_no_hint(value) -> None:
    assert parse_retry_after(value, now=INSTANT) is None


def test_a_retry_after_date_in_the_past_means_now_and_the_clock_defaults_to_wall_time() -> None:
    assert parse_retry_after(IMF, now=INSTANT + 5) == 0.0
    ahead = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 28 <= parse_retry_after(ahead) <= 30


# -- what is retried -----------------------------------------------------------------------
@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_throttling_and_server_errors_are_retried(status) -> None:
    assert classify(status_error(status, "3")) == Retry(f"HTTP {status}", status, "3")
    assert classify(wrapped(hub_error(status))) == Retry(f"HTTP {status}", status, None)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 408, 409, 413, 422, 501])
def test_other_answers_are_final(status) -> None:
    assert status not in RETRY_STATUS
    assert classify(status_error(status, "1")) is None
    assert classify(wrapped(hub_error(status, "1"))) is None


@pytest.mark.parametrize(
    "exc",
    [
        httpx.ConnectError("refused"),
        httpx.ConnectTimeout("connect"),
        httpx.ReadTimeout("read"),
        httpx.RemoteProtocolError("peer closed"),
        httpx2.ConnectError("refused"),
        httpx2.ReadTimeout("read"),
        ConnectionResetError(104, "reset"),
        TimeoutError(),
    ],
    ids=type,
)
def test_network_failures_are_retried(exc) -> None:
    assert classify(exc) == Retry(f"network error ({type(exc).__name__})")
    assert classify(wrapped(exc)) is not None  # found in the cause chain


def test_anything_else_is_not_retried() -> None:
    assert classify(ValueError("bad")) is None
    assert classify(RuntimeError("boom")) is None
    assert classify(KeyError("choices")) is None


# -- waits and bounds (injected sleep and clock) ------------------------------------------
def test_backoff_is_exponential_jittered_and_capped() -> None:
    low, high = Fake(draw=0.0), Fake(draw=0.999999)
    for fake in (low, high):
        policy = fake.policy(attempts=7, base_wait=1.0, max_wait=10.0)
        with pytest.raises(httpx.HTTPStatusError):
            policy.call(failing(*[status_error(503)] * 7))
    assert low.sleeps == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]  # half of 1, 2, 4, 8, 10, 10
    assert high.sleeps == pytest.approx([1.0, 2.0, 4.0, 8.0, 10.0, 10.0], abs=1e-4)


def test_retry_after_replaces_the_backoff_and_is_capped() -> None:
    fake = Fake(now=INSTANT - 4)
    policy = fake.policy(attempts=4, base_wait=0.01, max_wait=60.0)
    fn = failing(status_error(429, "7"), wrapped(hub_error(503, IMF)), status_error(503, "900"))
    assert policy.call(fn) == "ok"
    # 7 s; then the date, 4 s minus the 7 s already slept: in the past, so 0; then the cap
    assert fake.sleeps == [7.0, 0.0, 60.0]
    assert fn.calls == 4


def test_an_http_date_is_measured_with_the_injected_clock() -> None:
    fake = Fake(now=INSTANT - 12.5)
    fake.policy(attempts=2).call(failing(status_error(503, RFC850)))
    assert fake.sleeps == [12.5]


def test_the_attempt_bound_is_respected_and_the_last_error_propagates_unchanged() -> None:
    fake = Fake()
    errors = [status_error(503) for _ in range(5)]
    fn = failing(*errors)
    with pytest.raises(httpx.HTTPStatusError) as raised:
        fake.policy(attempts=3, base_wait=0.1).call(fn)
    assert fn.calls == 3 and len(fake.sleeps) == 2
    assert raised.value is errors[2]


def test_a_final_answer_is_not_retried() -> None:
    fake = Fake()
    fn = failing(status_error(400), status_error(400))
    with pytest.raises(httpx.HTTPStatusError):
        fake.policy(attempts=5).call(fn)
    assert fn.calls == 1 and fake.sleeps == []


def test_on_retry_sees_attempt_reason_and_wait_before_each_sleep() -> None:
    fake, seen = Fake(), []
    fn = failing(httpx.ConnectError("refused"), status_error(503, "2"))
    policy = fake.policy(attempts=3, base_wait=1.0)
    policy.call(fn, on_retry=lambda *args: seen.append((*args, len(fake.sleeps))))
    assert seen == [
        (1, Retry("network error (ConnectError)"), 0.75, 0),
        (2, Retry("HTTP 503", 503, "2"), 2.0, 1),
    ]


def test_at_least_one_attempt() -> None:
    with pytest.raises(ValueError, match="attempts"):
        RetryPolicy(attempts=0)


# -- the Hub client on the policy ----------------------------------------------------------
def test_the_hub_client_waits_logs_and_gives_up_as_before() -> None:
    token = "hf_SecretTokenForRetryTests123"
    sleeps, lines = [], []
    client = HubClient(
        "acme/x", token, endpoint="http://127.0.0.1:9", max_attempts=3, max_wait=20.0,
        log=lines.append, sleep=sleeps.append,
    )  # fmt: skip
    fn = failing(wrapped(hub_error(429, "3")), httpx2.ConnectError("refused"))
    assert client.call("list refs", fn) == "ok"
    assert sleeps[0] == 3.0 and 1.0 <= sleeps[1] <= 2.0  # Retry-After; then backoff 2 s, jittered
    assert lines[0] == "list refs: Hub answered 429; retrying in 3.0s (1/2)"
    assert lines[1].startswith("list refs: network error (ConnectError); retrying in ")
    assert client.retries == 2

    always = failing(*[hub_error(502, "0") for _ in range(5)])
    with pytest.raises(HfHubHTTPError) as raised:
        client.call("upload", always)
    assert always.calls == 3
    error = client.failure("upload", RuntimeError(f"wrapped {token}"))
    assert isinstance(error, RunError) and token not in str(error)
    assert str(client.failure("upload", raised.value)).startswith(
        "upload on acme/x failed (HTTP 502)"
    )


# -- measured waits against a real HTTP server ---------------------------------------------
def _one_request() -> list[GenerationRequest]:
    return [GenerationRequest("r0", [{"role": "user", "content": "hi"}], seed=0)]


def _engine(server: ChatServer, **kwargs) -> OpenAIEngine:
    # a backoff of 10 ms: any longer wait measured below comes from Retry-After
    kwargs = {"concurrency": 1, "backoff": 0.01, "max_backoff": 5.0, **kwargs}
    return OpenAIEngine(server.url, "m", **kwargs)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("status", ["429", "503"])
def test_retry_after_in_seconds_is_waited_out(status) -> None:
    with ChatServer() as server:
        server.script.append(f"{status}:1")
        [completion] = _engine(server).generate(_one_request())
        assert completion.error is None and completion.text == server.reply
        first, second = server.requests
        assert 1.0 <= second["at"] - first["at"] < 5.0  # announced wait <= gap < cap


@pytest.mark.timeout(60)
@pytest.mark.parametrize("status", ["429", "503"])
def test_retry_after_as_an_http_date_is_waited_out(status) -> None:
    instant = math.floor(time.time()) + 2  # 1 to 2 s ahead; HTTP dates have whole seconds
    with ChatServer() as server:
        server.script.append(f"{status}:{email.utils.formatdate(instant, usegmt=True)}")
        [completion] = _engine(server).generate(_one_request())
        assert completion.error is None and completion.text == server.reply
        first, second = server.requests
        assert second["wall"] >= instant  # not before the announced moment
        assert 0.5 < second["at"] - first["at"] < 5.0


@pytest.mark.timeout(60)
def test_a_retry_after_beyond_the_cap_waits_the_cap() -> None:
    with ChatServer() as server:
        server.script.append("503:3600")
        [completion] = _engine(server, max_backoff=1.0).generate(_one_request())
        assert completion.error is None
        first, second = server.requests
        assert 1.0 <= second["at"] - first["at"] < 2.0


def test_a_bad_request_is_not_retried() -> None:
    with ChatServer() as server:
        server.script.extend(["400", "400"])
        [completion] = _engine(server).generate(_one_request())
        assert completion.error == "HTTP 400: bad request"
        assert len(server.requests) == 1


def test_the_engine_stops_after_the_attempt_bound() -> None:
    with ChatServer() as server:
        server.script.extend(["503"] * 10)
        [completion] = _engine(server, retries=2).generate(_one_request())
        assert completion.error == "HTTP 503"
        assert len(server.requests) == 3 and len(server.script) == 7
