"""The one seed derivation: every per-request and per-record seed comes from here.

`derive_seed(run_seed, persona, stage, *parts, attempt=0)` hashes its key, an unambiguous
encoding of (run seed, persona, stage, extra parts, attempt), with BLAKE2b and keeps 63
bits. Every stage that needs randomness calls it with its own stage name and whatever else
tells its draws apart (session index, section index, judge name, probe kind...), so two
different keys give the same seed only by a 64-bit hash collision (about 1 in 10^7 over a
million keys), never by arithmetic coincidence. The result is a non-negative int below
2**63: vLLM takes any int64 as a request `seed` (embedded engine and OpenAI server alike),
and `random.Random` takes any int. It is deliberately not reduced to 31 bits: a million
seeds drawn from 2**31 values collide about 230 times.

`retry_seed(seed, attempt)` is the seed of the `attempt`-th retry (1, 2, ...) of a request
first made with `seed`: it is derive(request seed, "retry", attempt) in a separate hash
domain, so it cannot equal a first-attempt seed (of this run or any other) except by hash
collision. The engine uses it for structured-output retries without knowing about personas.

`round_seed(run_seed, round_)` is the run seed a critic round regenerates with: round 0
is the run seed itself (a run without critics makes the same text), round r > 0 is
derive(run seed, "round", r) in a third hash domain; every request seed of that round is
then `derive_seed(round seed, ...)`.

The key encoding: each part is a type tag (`i` int, `s` str), an 8-byte length and the
bytes (decimal digits for an int, UTF-8 for a str), so ("a", "bc") != ("ab", "c") and
1 != "1". Hashing is stable across processes, platforms and Python versions (unlike
`hash()`), so the same key gives the same seed everywhere.

The one other keyed random stream is the skeleton sampler's counter-based RNG in
`taxonomy/sampling.py` (`persona_keys` / `uniforms`). It stays separate because it is
vectorised numpy over millions of personas at once, where a per-persona Python hash call
would dominate sampling time; it never feeds a request seed. (Likewise the whole-run numpy
generators seeded from the run seed: the quota permutation in `taxonomy/quotas.py`, the
MinHash permutations in `dedup/minhash.py` and the metrics text sample.)
"""

from __future__ import annotations

import hashlib
import operator

SEED_BITS = 63
"""Seeds are non-negative ints below 2**SEED_BITS (fit a signed int64)."""

_SEED_DOMAIN = b"pl.seed"
_RETRY_DOMAIN = b"pl.retry"
_ROUND_DOMAIN = b"pl.round"


def _encode(parts: tuple[object, ...]) -> bytes:
    chunks: list[bytes] = []
    for part in parts:
        if isinstance(part, str):
            tag, data = b"s", part.encode("utf-8")
        elif isinstance(part, bool):
            raise TypeError("seed key parts must be int or str, not bool")
        else:
            try:
                value = operator.index(part)  # int, numpy integers
            except TypeError:
                raise TypeError(
                    f"seed key parts must be int or str, not {type(part).__name__}"
                ) from None
            tag, data = b"i", str(value).encode("ascii")
        chunks.append(tag + len(data).to_bytes(8, "big") + data)
    return b"".join(chunks)


def _hash(domain: bytes, parts: tuple[object, ...]) -> int:
    digest = hashlib.blake2b(_encode(parts), digest_size=8, person=domain).digest()
    return int.from_bytes(digest, "big") >> (64 - SEED_BITS)


def derive_seed(
    run_seed: int, persona: str | int, stage: str, *parts: int | str, attempt: int = 0
) -> int:
    """The seed for one draw, keyed on (run seed, persona, stage, *parts, attempt).

    `persona` is the persona id or index (use one or the other consistently per stage),
    `stage` names the stage ("persona", "timeline", "converse", "judge", ...), `parts`
    are further discriminators (section, session index, judge name...), and `attempt`
    counts regenerations of the same draw (0 for the first).
    """
    return _hash(_SEED_DOMAIN, (run_seed, persona, stage, attempt, *parts))


def retry_seed(seed: int, attempt: int) -> int:
    """The seed of retry number `attempt` (1, 2, ...) of a request first seeded `seed`."""
    return _hash(_RETRY_DOMAIN, (seed, "retry", attempt))


def round_seed(run_seed: int, round_: int) -> int:
    """The run seed of critic round `round_`: the run seed itself for round 0."""
    if round_ == 0:
        return run_seed
    return _hash(_ROUND_DOMAIN, (run_seed, "round", round_))
