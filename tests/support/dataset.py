"""Build small, realistic dataset folders (the pipeline's output contract) with pyarrow."""

from __future__ import annotations

import datetime as dt
import json
import random
from pathlib import Path
from typing import Any

import pyarrow as pa

from personaloom import schema as S
from personaloom.publish.shards import write_shards

GENDERS = ["female", "male", "non-binary"]
AGE_BANDS = ["18-24", "25-34", "35-44", "45-54", "55-64", "65+"]
COUNTRIES = ["Kenya", "Brazil", "India", "Germany", "Canada", "Japan", "Mexico"]
OCCUPATIONS = ["teacher", "nurse", "software developer", "farmer", "electrician", "lawyer"]
TOPICS = ["recommendations", "writing help", "planning", "health", "finance"]


def persona_rows(n: int, seed: int = 7, taxonomy: str = "human@1.0") -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        attributes = [
            {"path": "demographics.age_band", "value": rng.choice(AGE_BANDS), "source": "sampled"},
            {"path": "demographics.gender", "value": rng.choice(GENDERS), "source": "sampled"},
            {
                "path": "demographics.location.country",
                "value": rng.choice(COUNTRIES),
                "source": "sampled",
            },
            {"path": "work.occupation", "value": rng.choice(OCCUPATIONS), "source": "sampled"},
            {
                "path": "interests.hobby",
                "value": f"hobby {rng.randint(0, 50)}",
                "source": "generated",
            },
        ]
        rows.append(
            {
                "persona_id": S.persona_id(seed, i),
                "seed": seed,
                "index": i,
                "taxonomy": taxonomy,
                "attributes": attributes,
                "narrative": f"Persona {i} lives in {attributes[2]['value']}. "
                + "They like walks. " * 30,
                "sections": [("background", f"background of {i}"), ("goals", f"goals of {i}")],
                "model": "HuggingFaceTB/SmolLM2-135M-Instruct",
                "scores": [
                    ("faithfulness", round(rng.random(), 3)),
                    ("depth", round(rng.random(), 3)),
                ],
            }
        )
    return rows


def conversation_rows(
    personas: list[dict[str, Any]], sessions: int, turns: int, seed: int = 7
) -> list[dict]:
    rng = random.Random(seed + 1)
    start = dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.UTC)
    rows = []
    for p in personas:
        for s in range(rng.randint(1, sessions)):
            n_turns = 2 * rng.randint(1, turns)
            rows.append(
                {
                    "conversation_id": f"{p['persona_id']}-s{s:02d}",
                    "persona_id": p["persona_id"],
                    "session": s,
                    "timestamp": start + dt.timedelta(days=7 * s + p["index"]),
                    "topic": rng.choice(TOPICS),
                    "turns": [
                        {
                            "role": "user" if t % 2 == 0 else "assistant",
                            "content": f"turn {t} of session {s}",
                        }
                        for t in range(n_turns)
                    ],
                    "profile_updates": (
                        [
                            {
                                "path": "interests.hobby",
                                "old": "chess",
                                "new": "climbing",
                                "reason": "moved",
                            }
                        ]
                        if s == 1
                        else []
                    ),
                    "model": "HuggingFaceTB/SmolLM2-135M-Instruct",
                    "scores": [("naturalness", round(rng.random(), 3))],
                }
            )
    return rows


def probe_rows(personas: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "probe_id": f"{p['persona_id']}-q0",
            "persona_id": p["persona_id"],
            "after_session": 1,
            "type": "latest_preference",
            "question": "Which hobby does the user have now?",
            "choices": ["chess", "climbing", "sailing", "pottery"],
            "answer": 1,
        }
        for p in personas
    ]


def manifest(counts: dict[str, int], **extra: Any) -> dict[str, Any]:
    data = {
        "personaloom_version": "0.1.0",
        "command": [
            "personaloom",
            "generate",
            "--out",
            "corpus",
            "--personas",
            "12",
            "--seed",
            "7",
        ],
        "config": {
            "taxonomy": "human",
            "personas": counts.get("personas_requested", 12),
            "sessions": 3,
            "turns": 2,
            "seed": 7,
            "model": "HuggingFaceTB/SmolLM2-135M-Instruct",
            "engine": "vllm",
            "critic_rounds": 1,
            "dedup_threshold": 0.8,
            "preset": "quick",
            "license": "apache-2.0",
            "base_url": None,
        },
        "fingerprint": "3f2a9c0d11e4",
        "model": "HuggingFaceTB/SmolLM2-135M-Instruct",
        "engine": "vllm",
        "taxonomy": "human@1.0",
        "counts": counts,
        "critic": {
            "personas": {"completeness": 0.97, "length": 0.91, "pii": 1.0},
            "judge.faithfulness": 0.88,
        },
        "metrics": {
            "distinct_2": 0.62,
            "attributes_per_persona": 5.0,
            "definitions": {
                "distinct_2": "unique word bigrams / all word bigrams over narratives",
                "attributes_per_persona": "mean number of attributes per kept persona",
            },
        },
        "throughput": {"output_tokens": 48213, "seconds": 95.2, "tokens_per_s": 506.4},
        "started_at": "2026-11-02T10:00:00Z",
        "finished_at": "2026-11-02T10:01:40Z",
    }
    data.update(extra)
    return data


def make_dataset(
    out: Path,
    *,
    personas: int = 12,
    sessions: int = 3,
    probes: bool = True,
    seed: int = 7,
    persona_shards: int = 2,
    card: bool = True,
    manifest_extra: dict[str, Any] | None = None,
) -> dict[str, pa.Table]:
    """Write a dataset folder shaped like `personaloom generate`'s output; return its tables."""
    out = Path(out)
    rows = persona_rows(personas, seed=seed)
    tables = {"personas": pa.Table.from_pylist(rows, schema=S.PERSONAS)}
    write_shards(tables["personas"], out / "personas", shards=persona_shards)
    if sessions:
        tables["conversations"] = pa.Table.from_pylist(
            conversation_rows(rows, sessions, 3, seed=seed), schema=S.CONVERSATIONS
        )
        write_shards(tables["conversations"], out / "conversations", shards=1)
    if sessions and probes:
        tables["probes"] = pa.Table.from_pylist(probe_rows(rows), schema=S.PROBES)
        write_shards(tables["probes"], out / "probes", shards=1)
    counts = {
        "personas_requested": personas + 3,
        "personas_kept": personas,
        "personas_rejected": 2,
        "duplicates_removed": 1,
        "conversations": tables["conversations"].num_rows if "conversations" in tables else 0,
        "probes": tables["probes"].num_rows if "probes" in tables else 0,
    }
    data = manifest(counts, **(manifest_extra or {}))
    state = out / ".personaloom"
    state.mkdir(parents=True, exist_ok=True)
    (state / "manifest.json").write_text(json.dumps(data, indent=2))
    if card:
        from personaloom.publish.card import write_card

        write_card(out, data)
    return tables


def read_manifest(out: Path) -> dict[str, Any]:
    return json.loads((Path(out) / ".personaloom" / "manifest.json").read_text())
