"""Persona stages: skeleton -> enriched attributes (LLM, JSON schema per section) -> narrative.

Each stage is a plain function over a batch. All personas' k-th section goes to the engine
as one batch, so the engine always sees the whole batch at once.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from personaloom.engine.base import Engine, GenerationRequest
from personaloom.engine.structured import generate_structured
from personaloom.prompts import PromptLibrary
from personaloom.schema import persona_id

NARRATIVE_SECTIONS: dict[str, str] = {
    "background": "where they grew up, their family of origin and the path that led to today",
    "daily_life": "an ordinary weekday and weekend, routines, places and people",
    "relationships": "partner, family, friends, colleagues and how they relate to them",
    "values": "what they believe in and what they will not compromise on",
    "goals_and_fears": "what they are working towards and what keeps them up at night",
    "communication_style": "how they talk and write: tone, vocabulary, quirks, what annoys them",
}

SYSTEM_WRITER = "system_writer"


@dataclass
class PersonaDraft:
    """A persona in the making; `rejected` is set when a stage gave up on it."""

    index: int
    seed: int
    taxonomy: str
    sampled: list[tuple[str, str]]
    pending: list[Any]  # generated leaves still to fill, in section order
    generated: list[tuple[str, str]] = field(default_factory=list)
    sections: dict[str, str] = field(default_factory=dict)
    rejected: str | None = None
    raw: str = ""

    @property
    def persona_id(self) -> str:
        return persona_id(self.seed, self.index)

    def attributes(self) -> list[dict[str, str]]:
        return [{"path": p, "value": v, "source": "sampled"} for p, v in self.sampled] + [
            {"path": p, "value": v, "source": "generated"} for p, v in self.generated
        ]

    def record(self, model: str) -> dict[str, Any]:
        narrative = "\n\n".join(
            self.sections[name] for name in NARRATIVE_SECTIONS if name in self.sections
        )
        return {
            "persona_id": self.persona_id,
            "seed": self.seed,
            "index": self.index,
            "taxonomy": self.taxonomy,
            "attributes": self.attributes(),
            "narrative": narrative,
            "sections": dict(self.sections),
            "model": model,
            "scores": {},
        }


def request_seed(seed: int, index: int, stage: int, part: int = 0) -> int:
    """Per-request seed from (run seed, persona index, stage, part): stable under resume."""
    return (seed * 1_000_003 + index * 7_919 + stage * 104_729 + part * 15_485_863) % (2**31 - 1)


def _leaf_key(path: str) -> str:
    return re.sub(r"[^a-z0-9_]", "_", path.rsplit(".", 1)[-1].lower())[:60] or "value"


def _sections_of(draft: PersonaDraft) -> list[tuple[str, list[Any]]]:
    """Pending generated leaves grouped by root category, in order."""
    groups: dict[str, list[Any]] = {}
    for leaf in draft.pending:
        groups.setdefault(leaf.root, []).append(leaf)
    return list(groups.items())


def _profile_lines(draft: PersonaDraft, limit: int = 80) -> list[str]:
    pairs = draft.sampled + draft.generated
    return [f"{path}: {value}" for path, value in pairs[:limit]]


def section_schema(leaves: Sequence[Any], max_length: int) -> dict[str, Any]:
    keys = [_unique_keys(leaves)[i] for i in range(len(leaves))]
    return {
        "type": "object",
        "properties": {
            k: {"type": "string", "minLength": 2, "maxLength": max_length} for k in keys
        },
        "required": keys,
        "additionalProperties": False,
    }


def _unique_keys(leaves: Sequence[Any]) -> list[str]:
    keys: list[str] = []
    for leaf in leaves:
        key = _leaf_key(leaf.path)
        while key in keys:
            key += "_"
        keys.append(key)
    return keys


def enrich(
    engine: Engine,
    prompts: PromptLibrary,
    drafts: Sequence[PersonaDraft],
    *,
    seed: int,
    max_tokens: int = 160,
    max_length: int = 160,
    fewshot: str = "",
) -> list[dict[str, Any]]:
    """Fill generated leaves section by section; returns engine-output rejections.

    Section k of every persona goes out in one engine call; each section's prompt carries
    everything sampled or generated before it.
    """
    plans = {d.index: _sections_of(d) for d in drafts if d.rejected is None}
    rounds = max((len(p) for p in plans.values()), default=0)
    rejections: list[dict[str, Any]] = []
    by_index = {d.index: d for d in drafts}
    for k in range(rounds):
        requests = []
        keys_for: dict[str, tuple[PersonaDraft, list[Any], list[str]]] = {}
        for index, plan in plans.items():
            draft = by_index[index]
            if draft.rejected is not None or k >= len(plan):
                continue
            category, leaves = plan[k]
            keys = _unique_keys(leaves)
            user = prompts.render(
                "persona_enrich",
                category=category,
                profile=_profile_lines(draft),
                fields=[
                    {"key": key, "path": leaf.path, "description": leaf.description or leaf.path}
                    for key, leaf in zip(keys, leaves, strict=True)
                ],
                fewshot=fewshot,
            )
            rid = f"{draft.persona_id}/enrich/{k}"
            requests.append(
                GenerationRequest(
                    request_id=rid,
                    messages=[
                        {"role": "system", "content": prompts.render(SYSTEM_WRITER)},
                        {"role": "user", "content": user},
                    ],
                    max_tokens=max_tokens + 24 * len(leaves),
                    temperature=0.8,
                    seed=request_seed(seed, index, 1, k),
                    json_schema=section_schema(leaves, max_length),
                )
            )
            keys_for[rid] = (draft, leaves, keys)
        values, failed = generate_structured(engine, requests)
        for rid, value in values.items():
            draft, leaves, keys = keys_for[rid]
            for key, leaf in zip(keys, leaves, strict=True):
                draft.generated.append((leaf.path, " ".join(str(value[key]).split())))
        for failure in failed:
            draft = keys_for[failure.request_id][0]
            draft.rejected = f"enrich section {k}: {failure.reason}"
            draft.raw = failure.raw
            rejections.append(_rejection(draft, "enrich", failure.reason, failure.raw))
    for d in drafts:
        d.pending = []
    return rejections


def narrate(
    engine: Engine,
    prompts: PromptLibrary,
    drafts: Sequence[PersonaDraft],
    *,
    seed: int,
    max_tokens: int = 200,
    fewshot: str = "",
) -> list[dict[str, Any]]:
    """Write the narrative sections (plain text, one request per persona and section)."""
    requests = []
    owner: dict[str, tuple[PersonaDraft, str]] = {}
    for draft in drafts:
        if draft.rejected is not None:
            continue
        for part, (name, guide) in enumerate(NARRATIVE_SECTIONS.items()):
            rid = f"{draft.persona_id}/narrate/{name}"
            user = prompts.render(
                "persona_narrate",
                section=name.replace("_", " "),
                guide=guide,
                profile=_profile_lines(draft),
                fewshot=fewshot,
            )
            requests.append(
                GenerationRequest(
                    request_id=rid,
                    messages=[
                        {"role": "system", "content": prompts.render(SYSTEM_WRITER)},
                        {"role": "user", "content": user},
                    ],
                    max_tokens=max_tokens,
                    temperature=0.8,
                    seed=request_seed(seed, draft.index, 2, part),
                )
            )
            owner[rid] = (draft, name)
    values, failed = generate_structured(engine, requests, parse=_clean_paragraph)
    for rid, text in values.items():
        draft, name = owner[rid]
        draft.sections[name] = text
    rejections = []
    for failure in failed:
        draft, name = owner[failure.request_id]
        if draft.rejected is None:
            draft.rejected = f"narrate {name}: {failure.reason}"
            rejections.append(_rejection(draft, "narrate", failure.reason, failure.raw))
    return rejections


def _clean_paragraph(text: str) -> str:
    text = re.sub(r"^\s*(#+\s*)?[A-Z][A-Za-z ]{0,30}:\s*\n", "", text.strip())
    text = " ".join(text.split())
    # drop an unfinished trailing sentence when the output hit max_tokens
    if text and text[-1] not in ".!?\"'" and re.search(r"[.!?]", text):
        text = text[: max(text.rfind("."), text.rfind("!"), text.rfind("?")) + 1]
    if len(text.split()) < 8:
        raise ValueError(f"too short ({len(text.split())} words)")
    return text


def _rejection(draft: PersonaDraft, stage: str, reason: str, raw: str) -> dict[str, Any]:
    return {
        "record_id": draft.persona_id,
        "kind": "persona",
        "stage": stage,
        "critic": "generation",
        "reason": reason,
        "score": None,
        "raw": raw,
    }
