"""Request flows: every unit of work moves to its next request as soon as its last is done.

A *flow* is a generator for one unit of work (a persona being written, a persona's
sessions being talked through). It yields the requests it needs next (a list, usually of
one) and is sent their completions, in the same order; what it returns is its result.
Everything a flow asks depends only on its own earlier answers and its own seeds, so the
records do not depend on the order in which the engine finishes requests.

`run_flows` drives many flows over one engine:

- an engine with `stream(first, on_done)` (both of ours) is fed continuously: each
  completion advances its flow at once, and the flow's next requests join the engine's
  queue while the others are still running, so no unit waits for the slowest of its batch
  (the HTTP engine keeps a bounded number in flight; the offline engine adds them to
  vLLM's running batch);
- any other engine (test doubles with only `generate`) is driven in rounds: one
  `generate` call with the pending requests of every flow, whatever their stage.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from typing import Any, Protocol, TypeVar, runtime_checkable

from personaloom.engine.base import Completion, Engine, GenerationRequest

T = TypeVar("T")
Flow = Generator[list[GenerationRequest], list[Completion], T]
OnDone = Callable[[Completion], Sequence[GenerationRequest]]


@runtime_checkable
class StreamingEngine(Protocol):
    """An engine that takes new requests while it runs.

    `stream` submits `first`, then calls `on_done` with each completion as it finishes (in
    the calling thread) and submits the requests it returns, until none is left. The
    completion's `request_id` is the request's own. Stats and progress are kept as for
    `generate`."""

    def stream(self, first: Sequence[GenerationRequest], on_done: OnDone) -> None: ...


class _Driver:
    def __init__(self, flows: Sequence[Flow[Any]]) -> None:
        self.flows = list(flows)
        self.results: list[Any] = [None] * len(self.flows)
        self.owner: dict[int, tuple[int, int]] = {}  # id(request) -> (flow, position)
        self.waiting: dict[int, list[Completion | None]] = {}
        self.requests: dict[str, list[GenerationRequest]] = {}
        self.answered = 0

    def advance(self, i: int, answers: list[Completion] | None) -> list[GenerationRequest]:
        """Send flow i its answers (None: start it); the requests it asks for next."""
        flow = self.flows[i]
        try:
            asked = next(flow) if answers is None else flow.send(answers)
            while not asked:  # a flow may yield nothing: answer it with nothing
                asked = flow.send([])
        except StopIteration as stop:
            self.results[i] = stop.value
            return []
        asked = list(asked)
        self.waiting[i] = [None] * len(asked)
        for position, request in enumerate(asked):
            self.owner[id(request)] = (i, position)
            self.requests.setdefault(request.request_id, []).append(request)
        return asked

    def done(self, completion: Completion) -> list[GenerationRequest]:
        self.answered += 1
        queue = self.requests[completion.request_id]
        request = queue.pop(0)  # ids are unique in flight; a reused id is answered in order
        if not queue:
            del self.requests[completion.request_id]
        i, position = self.owner.pop(id(request))
        slots = self.waiting[i]
        slots[position] = completion
        if any(slot is None for slot in slots):
            return []
        del self.waiting[i]
        return self.advance(i, [s for s in slots if s is not None])


def run_flows(engine: Engine, flows: Sequence[Flow[T]], calls: list[int] | None = None) -> list[T]:
    """Run every flow to its end; their results, in the order of `flows`. `calls`, when
    given, gets the number of requests of each engine call (a stream counts as one call
    with every request it ran)."""
    driver = _Driver(flows)
    first = [r for i in range(len(driver.flows)) for r in driver.advance(i, None)]
    if isinstance(engine, StreamingEngine):
        if first:
            engine.stream(first, driver.done)
            if calls is not None:
                calls.append(driver.answered)
    else:
        pending = first
        while pending:
            completions = engine.generate(pending)
            if calls is not None:
                calls.append(len(pending))
            if len(completions) != len(pending):
                raise RuntimeError(
                    f"engine returned {len(completions)} completions for {len(pending)} requests"
                )
            following: list[GenerationRequest] = []
            for completion in completions:
                following += driver.done(completion)
            pending = following
    if driver.waiting:
        raise RuntimeError(f"{len(driver.waiting)} flows were left waiting for an answer")
    return driver.results
