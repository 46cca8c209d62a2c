"""The one seed derivation (personaloom/seeds.py): distinct, stable, unambiguous."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys

import numpy as np
import pytest

from personaloom.engine.base import Completion, GenerationRequest
from personaloom.engine.structured import generate_structured
from personaloom.seeds import SEED_BITS, derive_seed, retry_seed, round_seed

STAGES = ("enrich", "narrate", "timeline", "converse")  # 4 stages
RUN_SEEDS = range(4)
ATTEMPTS = range(3)
PERSONAS = 1_000_000 // (len(RUN_SEEDS) * len(STAGES) * len(ATTEMPTS)) + 1  # 20_834


def test_a_million_distinct_keys_give_a_million_distinct_seeds():
    seeds = np.fromiter(
        (
            derive_seed(run, persona, stage, attempt=attempt)
            for run in RUN_SEEDS
            for persona in range(PERSONAS)
            for stage in STAGES
            for attempt in ATTEMPTS
        ),
        dtype=np.int64,
    )
    assert seeds.size >= 1_000_000
    assert np.unique(seeds).size == seeds.size
    assert seeds.min() >= 0  # and < 2**63, or int64 would have overflowed


def test_seeds_are_non_negative_63_bit_ints_usable_everywhere():
    s = derive_seed(2**40, "p-0001", "judge", "faithfulness", attempt=5)
    assert isinstance(s, int) and 0 <= s < 2**SEED_BITS <= 2**63
    random.Random(s)  # a valid random.Random seed
    assert retry_seed(s, 1) < 2**63 and round_seed(s, 1) < 2**63


def test_a_retry_seed_never_equals_a_first_attempt_seed_of_the_run():
    # the old scheme (seed + 7919 * (attempt + 1)) hit the next persona's first seed
    first = {
        derive_seed(seed, persona, stage, k)
        for seed in (0, 1)
        for persona in range(5000)
        for stage, k in (("enrich", 0), ("enrich", 1), ("narrate", 0))
    }
    retries = {retry_seed(s, attempt) for s in first for attempt in (1, 2)}
    assert len(first) == 2 * 5000 * 3
    assert len(retries) == 2 * len(first)
    assert not first & retries


def test_every_part_of_the_key_changes_the_seed():
    base = derive_seed(7, 3, "converse", 2, "user", attempt=0)
    variants = [
        derive_seed(8, 3, "converse", 2, "user", attempt=0),
        derive_seed(7, 4, "converse", 2, "user", attempt=0),
        derive_seed(7, 3, "narrate", 2, "user", attempt=0),
        derive_seed(7, 3, "converse", 3, "user", attempt=0),
        derive_seed(7, 3, "converse", 2, "assistant", attempt=0),
        derive_seed(7, 3, "converse", 2, "user", attempt=1),
        derive_seed(7, 3, "converse", 2, attempt=0),
    ]
    assert base not in variants and len(set(variants)) == len(variants)


def test_the_key_encoding_is_unambiguous():
    assert derive_seed(1, "p", "s", "a", "bc") != derive_seed(1, "p", "s", "ab", "c")
    assert derive_seed(1, "a", "bc") != derive_seed(1, "ab", "c")
    assert derive_seed(1, 1, "s") != derive_seed(1, "1", "s")  # an int is not its digits
    assert derive_seed(12, 3, "s") != derive_seed(1, 23, "s")
    assert derive_seed(1, "p", "s", 0) != derive_seed(1, "p", "s", attempt=0)
    assert derive_seed(1, "p", "s", "x\x00") != derive_seed(1, "p", "s", "x", "")


def test_numpy_integers_key_like_ints_and_other_types_are_refused():
    assert derive_seed(np.int64(5), np.int32(3), "s") == derive_seed(5, 3, "s")
    with pytest.raises(TypeError):
        derive_seed(1, 2.0, "s")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        derive_seed(1, True, "s")


def test_the_same_key_gives_the_same_seed_in_another_process():
    keys = [
        (0, 0, "enrich", [], 0),
        (42, "p-00042", "judge", ["faithfulness"], 0),
        (2**62, 123_456, "converse", [7, "user"], 2),
        (-5, "ü-persona", "probe", [3, "recall_fact"], 1),
    ]
    code = (
        "import json, sys\n"
        "from personaloom.seeds import derive_seed, retry_seed, round_seed\n"
        "out = []\n"
        "for run, persona, stage, parts, attempt in json.load(sys.stdin):\n"
        "    s = derive_seed(run, persona, stage, *parts, attempt=attempt)\n"
        "    out.append([s, retry_seed(s, 1), round_seed(run, 2)])\n"
        "print(json.dumps(out))\n"
    )
    # a fresh interpreter with another hash randomization: nothing may depend on hash()
    done = subprocess.run(
        [sys.executable, "-c", code],
        input=json.dumps(keys),
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONHASHSEED": "12345"},
    )
    theirs = json.loads(done.stdout)
    ours = []
    for run, persona, stage, parts, attempt in keys:
        s = derive_seed(run, persona, stage, *parts, attempt=attempt)
        ours.append([s, retry_seed(s, 1), round_seed(run, 2)])
    assert ours == theirs


def test_round_zero_keeps_the_run_seed_and_rounds_differ():
    assert round_seed(9, 0) == 9
    rounds = [round_seed(9, r) for r in range(1, 6)]
    assert len(set(rounds)) == 5 and 9 not in rounds


class _FailingEngine:
    """Fails every output; records the seed of each request it sees."""

    model = "stub"

    def __init__(self) -> None:
        self.calls: list[list[GenerationRequest]] = []

    def generate(self, requests):
        self.calls.append(list(requests))
        return [Completion(r.request_id, "not json") for r in requests]


def test_structured_retries_use_retry_seeds_of_the_first_seed():
    engine = _FailingEngine()
    requests = [
        GenerationRequest(f"r{i}", [{"role": "user", "content": "x"}], seed=derive_seed(1, i, "s"))
        for i in range(3)
    ] + [GenerationRequest("unseeded", [{"role": "user", "content": "x"}])]
    _, failures = generate_structured(engine, requests, parse=json.loads, retries=2)
    assert len(failures) == 4 and len(engine.calls) == 3
    first = {r.request_id: r.seed for r in requests}
    for attempt, call in enumerate(engine.calls[1:], start=1):
        for r in call:
            expected = (
                None if first[r.request_id] is None else retry_seed(first[r.request_id], attempt)
            )
            assert r.seed == expected
