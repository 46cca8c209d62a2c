"""Stages flow (personaloom.engine.flows): a persona asks for its next request as soon as
its last is answered, and the records do not depend on the order the engine answers in.

The engines here are test doubles that answer from a hash of the whole request (prompt and
seed), so any change of a prompt or a seed shows up in the records; they test scheduling
and bookkeeping only, never generation. The real engines' `stream` runs in
tests/test_conversations.py, test_generate_e2e.py (offline vLLM) and test_vllm_serve.py.
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from personaloom.critic.rounds import CriticPlan, persona_rounds
from personaloom.critic.settings import load_critic_config
from personaloom.engine.base import Completion, EngineStats, GenerationRequest
from personaloom.engine.flows import StreamingEngine, run_flows
from personaloom.engine.openai_engine import OpenAIEngine
from personaloom.generate.conversations import ConverseStats, generate_sessions
from personaloom.generate.personas import PersonaDraft, write_personas
from personaloom.generate.prompts import PromptLibrary
from personaloom.taxonomy.loader import load_taxonomy
from tests.httpstub import ChatServer
from tests.test_conversations import batch, canned
from tests.test_identity import drafts_for

REPO = Path(__file__).resolve().parents[1]


def fingerprint(request: GenerationRequest) -> str:
    blob = json.dumps([request.messages, request.seed, request.json_schema], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


def answer(request: GenerationRequest) -> str:
    """Deterministic in the whole request; about one answer in three is unusable, so retries
    and rejections happen too."""
    mark = fingerprint(request)
    if int(mark, 16) % 3 == 0:
        return "" if request.json_schema is None else "not json"
    if request.json_schema is not None:
        properties = request.json_schema["properties"]
        if "score" in properties:  # a judge: every score 1-5 occurs
            return json.dumps({"rationale": f"because {mark}", "score": int(mark, 16) % 5 + 1})
        if "turns" in properties:
            return canned(request)
        return json.dumps({k: f"value of {k} [{mark}]" for k in properties})
    if "/narrate/" in request.request_id:
        words = [hashlib.sha256(f"{mark}{i}".encode()).hexdigest()[:7] for i in range(7)]
        glue = "the of and to in with for".split()
        return f"Paragraph {mark} says {' '.join(f'{g} {w}' for g, w in zip(glue, words, strict=True))}."
    return f"{canned(request)} [{mark}]"


class RoundsEngine:
    """Only `generate`: run_flows drives it in rounds."""

    model_name = "double"

    def __init__(self) -> None:
        self.stats = EngineStats()
        self.calls: list[list[GenerationRequest]] = []

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Completion]:
        self.calls.append(list(requests))
        return [Completion(r.request_id, answer(r), output_tokens=5) for r in requests]


class ShuffledStream(RoundsEngine):
    """A streaming engine that answers its queued requests in a random (seeded) order, and
    records when each request was submitted and answered."""

    def __init__(self, order_seed: int, in_flight: int = 1_000_000) -> None:
        super().__init__()
        self.rng = random.Random(order_seed)
        self.in_flight = in_flight
        self.log: list[tuple[str, str]] = []  # ("submit" | "answer", request id)

    def stream(self, first, on_done) -> None:
        queue = list(first)
        self.log += [("submit", r.request_id) for r in first]
        while queue:
            window = queue[: self.in_flight]
            request = window[self.rng.randrange(len(window))]
            queue.remove(request)
            self.log.append(("answer", request.request_id))
            following = list(on_done(Completion(request.request_id, answer(request), 5)))
            self.log += [("submit", r.request_id) for r in following]
            queue += following


def drafts(n: int) -> list[PersonaDraft]:
    tax = load_taxonomy(REPO / "taxonomies" / "human.yaml")
    return [d for d in drafts_for(tax, n) if d.rejected is None]


@pytest.fixture(scope="module")
def prompts() -> PromptLibrary:
    return PromptLibrary(REPO / "prompts")


def personas_with(engine, prompts) -> tuple[list[dict], list[dict]]:
    batch_drafts = drafts(8)
    rows = write_personas(engine, prompts, batch_drafts, seed=7)
    return [d.record("double") for d in batch_drafts if d.rejected is None], rows


def test_the_double_engine_is_a_streaming_engine_and_the_rounds_one_is_not():
    assert isinstance(ShuffledStream(0), StreamingEngine)
    assert not isinstance(RoundsEngine(), StreamingEngine)


def test_personas_are_the_same_whatever_order_the_engine_answers_in(prompts):
    reference = personas_with(RoundsEngine(), prompts)
    kept, rejected = reference
    assert kept and rejected, "the double should both keep and reject some personas"
    for order_seed in (1, 2, 3):
        engine = ShuffledStream(order_seed)
        assert personas_with(engine, prompts) == reference
    # and the orders really differed
    orders = []
    for order_seed in (1, 2):
        engine = ShuffledStream(order_seed)
        personas_with(engine, prompts)
        orders.append([rid for kind, rid in engine.log if kind == "answer"])
    assert orders[0] != orders[1] and sorted(orders[0]) == sorted(orders[1])


def test_conversations_are_the_same_whatever_order_the_engine_answers_in(prompts):
    personas, timelines = batch(6, sessions=3, probability=0.7)

    def talk(engine) -> tuple[list[dict], list[dict], dict]:
        stats = ConverseStats()
        out = generate_sessions(engine, prompts, personas, timelines, turns=2, seed=4, stats=stats)
        counts = {k: v for k, v in vars(stats).items() if k != "engine_calls"}
        return *out, counts

    reference = talk(RoundsEngine())
    conversations, rejections, counts = reference
    assert conversations and rejections and counts["retried"] > 0
    # (session, persona) order, as before
    keys = [(c["session"], c["persona_id"]) for c in conversations]
    assert keys == sorted(keys)
    for order_seed in (1, 2):
        assert talk(ShuffledStream(order_seed)) == reference


def test_a_persona_moves_on_without_waiting_for_the_rest_of_the_batch(prompts):
    """Answer persona 0's requests first, always: it finishes its enrichment and its whole
    narrative while every other persona still waits on its first request."""
    batch_drafts = drafts(4)
    slow = {d.persona_id for d in batch_drafts[1:]}

    class Favouring(ShuffledStream):
        def stream(self, first, on_done) -> None:
            queue = list(first)
            self.log += [("submit", r.request_id) for r in first]
            while queue:
                fast = [r for r in queue if r.request_id.split("/")[0] not in slow]
                request = (fast or queue)[0]
                queue.remove(request)
                self.log.append(("answer", request.request_id))
                following = list(on_done(Completion(request.request_id, answer(request), 5)))
                self.log += [("submit", r.request_id) for r in following]
                queue += following

    engine = Favouring(0)
    write_personas(engine, prompts, batch_drafts, seed=7)
    answered = [rid for kind, rid in engine.log if kind == "answer"]
    first_slow = next(i for i, rid in enumerate(answered) if rid.split("/")[0] in slow)
    head = answered[:first_slow]
    fast_id = batch_drafts[0].persona_id
    assert all(rid.startswith(fast_id) for rid in head)
    if batch_drafts[0].rejected is None:
        assert any("/narrate/" in rid for rid in head), "persona 0 reached its narrative"
    # every persona's requests were in the queue from the start
    submitted_first = [rid for kind, rid in engine.log[: len(batch_drafts)] if kind == "submit"]
    assert len(submitted_first) == len(batch_drafts)


def rounds_with(engine, prompts, judge_engine=None):
    """Two critic rounds over 8 personas, rule critics and the three persona judges in
    filter mode; the judges on `judge_engine` when given (then after the batch)."""
    config = load_critic_config(REPO / "validators", prompts)
    plan = CriticPlan(config, rounds=2, mode="filter", judge_engine=judge_engine)
    result = persona_rounds(
        engine,
        prompts,
        lambda ids: [d for d in drafts(8) if d.index in ids],
        list(range(8)),
        plan,
        seed=7,
        max_tokens_section=48,
        max_tokens_narrative=64,
    )
    return result.accepted, result.rejected, result.report()


def test_judges_run_in_each_personas_flow_with_the_verdicts_of_a_batch_review(prompts):
    """With the judges on the generating engine, a persona is judged in its own flow as
    soon as its narrative is written: the same kept and rejected personas, scores and
    per-round report as judging the whole batch afterwards on a separate judge engine
    (the same double), whatever order the stream answers in."""
    reference = rounds_with(RoundsEngine(), prompts, judge_engine=RoundsEngine())
    accepted, rejected, _ = reference
    judged = {row["critic"] for row in rejected} & {
        "faithfulness",
        "naturalness",
        "safety",
        "score",
    }
    assert accepted and judged, "the double should both keep personas and have judges reject some"
    assert all("judge_faithfulness" in p["scores"] for p in accepted)
    assert rounds_with(RoundsEngine(), prompts) == reference
    for order_seed in (1, 2):
        engine = ShuffledStream(order_seed)
        assert rounds_with(engine, prompts) == reference
        answered = [rid for kind, rid in engine.log if kind == "answer"]
        submitted = [rid for kind, rid in engine.log if kind == "submit"]
        first_judge = next(i for i, (kind, rid) in enumerate(engine.log) if "/judge/" in rid)
        last_narrative = max(
            i for i, (kind, rid) in enumerate(engine.log) if kind == "answer" and "/narrate/" in rid
        )
        # judging started while other personas were still being written: no barrier
        assert first_judge < last_narrative, (submitted[:3], answered[-3:])


def test_run_flows_handles_several_requests_per_step_and_flows_that_ask_nothing():
    def flow(n: int):
        got = yield [
            GenerationRequest(f"f{n}-a", [{"role": "user", "content": "a"}]),
            GenerationRequest(f"f{n}-b", [{"role": "user", "content": "b"}]),
        ]
        assert [c.request_id for c in got] == [f"f{n}-a", f"f{n}-b"]
        nothing = yield []
        assert nothing == []
        (last,) = yield [GenerationRequest(f"f{n}-c", [{"role": "user", "content": "c"}])]
        return (n, last.request_id)

    def idle():
        return "idle"
        yield []  # a generator that asks for nothing

    for engine in (RoundsEngine(), ShuffledStream(5)):
        calls: list[int] = []
        assert run_flows(engine, [flow(0), idle(), flow(1)], calls) == [
            (0, "f0-c"),
            "idle",
            (1, "f1-c"),
        ]
        assert sum(calls) == 6
        # in rounds: both flows' first step, then both last steps; a stream is one call
        assert calls == ([6] if isinstance(engine, ShuffledStream) else [4, 2])


def test_the_http_engine_sends_a_flows_next_request_while_another_hangs():
    """Two flows of three requests each, two requests in flight: the first request to
    arrive hangs 2 s; the other flow's three requests are answered meanwhile."""
    with ChatServer() as server:
        server.script.append("hang:2")
        engine = OpenAIEngine(server.url, "m", concurrency=2, backoff=0.01)

        def flow(name: str):
            for k in range(3):
                yield [GenerationRequest(f"{name}-{k}", [{"role": "user", "content": name}])]
            return name

        started = time.monotonic()
        assert run_flows(engine, [flow("x"), flow("y")]) == ["x", "y"]
        arrivals = [r["at"] - started for r in server.requests]
        contents = [r["body"]["messages"][0]["content"] for r in server.requests]
    assert len(arrivals) == 6
    hung = contents[0]
    other = [t for t, c in zip(arrivals, contents, strict=True) if c != hung]
    assert len(other) == 3 and max(other) < 1.5, (arrivals, contents)
    assert engine.stats.requests == 6 and engine.stats.calls == 1


def test_the_http_engine_keeps_at_most_concurrency_requests_in_flight():
    with ChatServer() as server:
        server.script.extend(["hang:0.3"] * 12)
        engine = OpenAIEngine(server.url, "m", concurrency=3, backoff=0.01)
        live, peak, lock = [0], [0], threading.Lock()
        original = engine._one

        def counted(request):
            with lock:
                live[0] += 1
                peak[0] = max(peak[0], live[0])
            try:
                return original(request)
            finally:
                with lock:
                    live[0] -= 1

        engine._one = counted  # type: ignore[method-assign]

        def flow(n: int):
            for k in range(3):
                yield [GenerationRequest(f"{n}-{k}", [{"role": "user", "content": "x"}])]

        run_flows(engine, [flow(n) for n in range(4)])
    assert len(server.requests) == 12 and peak[0] == 3
