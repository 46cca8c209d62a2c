"""Persona stages: skeleton -> enriched attributes (LLM, JSON schema per section) -> narrative.

Each stage is a plain function over a batch. Sections are written in a fixed order (the
taxonomy's root categories for enrichment, `NARRATIVE_SECTIONS` for the narrative); each
persona is a flow that asks for its next section as soon as its last is done
(`personaloom.engine.flows`), so the engine's queue holds every persona of the batch at
whatever stage it has reached. Every prompt carries the persona's name and facts plus what the
earlier sections established: the fields already generated (bounded, `GENERATED_CHARS`)
and, for the narrative, the earlier paragraphs whole (the narrative is one conversation,
each paragraph an assistant turn). The prompt puts what does not change first (system
text, examples, profile, earlier sections) and the section's own instruction last, so
successive sections of a persona share a prefix (vLLM's prefix cache reuses it, and a
narrative request's prefix is the previous request plus its own answer).
"""

from __future__ import annotations

import re
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from personaloom.engine.base import Completion, Engine, GenerationRequest
from personaloom.engine.flows import run_flows
from personaloom.engine.structured import Rejection, structured_flow
from personaloom.generate.prompts import PromptLibrary
from personaloom.records import rejection
from personaloom.schema import persona_id
from personaloom.seeds import derive_seed

NARRATIVE_SECTIONS: dict[str, str] = {
    "background": "who they are (their name and age), where they grew up, their family of "
    "origin and the path that led to today",
    "daily_life": "an ordinary weekday and weekend, routines, places and people",
    "relationships": "partner, family, friends, colleagues and how they relate to them",
    "values": "what they believe in and what they will not compromise on",
    "goals_and_fears": "what they are working towards and what keeps them up at night",
    "communication_style": "how they talk and write: tone, vocabulary, quirks, what annoys them",
}

SYSTEM_WRITER = "system_writer"
PROFILE_LINES = 80  # sampled attributes shown in a prompt (anchors first)
GENERATED_CHARS = 2400  # generated fields shown in a prompt (earlier sections), at most


@dataclass
class PersonaDraft:
    """A persona in the making; `rejected` is set when a stage gave up on it."""

    index: int
    seed: int
    taxonomy: str
    sampled: list[tuple[str, str]]
    pending: list[Any]  # generated leaves still to fill, in section order
    name: str = ""  # the sampled identity (given and family name), "" without one
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
        narrative = "\n\n".join(self.sections.values())  # written in section order
        return {
            "persona_id": self.persona_id,
            "seed": self.seed,
            "index": self.index,
            "taxonomy": self.taxonomy,
            "name": self.name,
            "attributes": self.attributes(),
            "narrative": narrative,
            "sections": dict(self.sections),
            "model": model,
            "scores": {},
        }


def _leaf_key(path: str) -> str:
    return re.sub(r"[^a-z0-9_]", "_", path.rsplit(".", 1)[-1].lower())[:60] or "value"


def _sections_of(draft: PersonaDraft) -> list[tuple[str, list[Any]]]:
    """Pending generated leaves grouped by root category, in order."""
    groups: dict[str, list[Any]] = {}
    for leaf in draft.pending:
        groups.setdefault(leaf.root, []).append(leaf)
    return list(groups.items())


def _profile_lines(draft: PersonaDraft, limit: int = PROFILE_LINES) -> list[str]:
    """The sampled facts, anchors (age, place...) first; the name has its own line."""
    pairs = [(p, v) for p, v in draft.sampled if not (draft.name and v == draft.name)]
    return [f"{path}: {value}" for path, value in pairs[:limit]]


def _generated_lines(draft: PersonaDraft, max_chars: int = GENERATED_CHARS) -> list[str]:
    """What earlier sections generated, in order, up to `max_chars` in all."""
    lines, used = [], 0
    for path, value in draft.generated:
        line = f"{path}: {value}"
        if used + len(line) > max_chars:
            break
        lines.append(line)
        used += len(line)
    return lines


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


def _writer_request(
    prompts: PromptLibrary,
    request_id: str,
    stage: str,
    user: str,
    *,
    max_tokens: int,
    seed: int,
    json_schema: dict[str, Any] | None = None,
    history: Sequence[dict[str, str]] = (),
) -> GenerationRequest:
    """A request to the persona writer (its system prompt, the earlier turns of
    `history`, then `user`), sampled at 0.8."""
    return GenerationRequest(
        request_id=request_id,
        stage=stage,
        messages=[
            {"role": "system", "content": prompts.render(SYSTEM_WRITER)},
            *history,
            {"role": "user", "content": user},
        ],
        max_tokens=max_tokens,
        temperature=0.8,
        seed=seed,
        json_schema=json_schema,
    )


def _enrich_flow(
    prompts: PromptLibrary,
    draft: PersonaDraft,
    *,
    seed: int,
    max_tokens: int,
    max_length: int,
    fewshot: str,
    context: bool,
) -> Generator[list[GenerationRequest], list[Completion], list[dict[str, Any]]]:
    """Fill the draft's generated leaves section by section (one request each, JSON schema);
    each section's prompt carries the fields generated before it (none without
    `context`). Returns the rejection rows (at most one)."""
    for k, (category, leaves) in enumerate(_sections_of(draft)):
        keys = _unique_keys(leaves)
        user = prompts.render(
            "persona_enrich",
            category=category,
            persona_name=draft.name,
            profile=_profile_lines(draft),
            established=_generated_lines(draft) if context else [],
            fields=[
                {"key": key, "path": leaf.path, "description": leaf.description or leaf.path}
                for key, leaf in zip(keys, leaves, strict=True)
            ],
            fewshot=fewshot,
        )
        request = _writer_request(
            prompts,
            f"{draft.persona_id}/enrich/{k}",
            "persona enrichment",
            user,
            max_tokens=max_tokens + 24 * len(leaves),
            seed=derive_seed(seed, draft.index, "enrich", k),
            json_schema=section_schema(leaves, max_length),
        )
        value, failure = yield from structured_flow(request)
        if failure is not None:
            draft.rejected = f"enrich section {k}: {failure.reason}"
            draft.raw = failure.raw
            draft.pending = []
            return [_generation_failure(draft, "enrich", failure)]
        for key, leaf in zip(keys, leaves, strict=True):
            draft.generated.append((leaf.path, " ".join(str(value[key]).split())))
    draft.pending = []
    return []


def _narrate_flow(
    prompts: PromptLibrary,
    draft: PersonaDraft,
    sections: Mapping[str, str],
    *,
    seed: int,
    max_tokens: int,
    fewshot: str,
    context: bool,
) -> Generator[list[GenerationRequest], list[Completion], list[dict[str, Any]]]:
    """Write the narrative sections in order (plain text) as one conversation: the first
    request carries the name, the profile and the generated fields; each later one asks
    for the next section after the earlier requests and their paragraphs (as the assistant's
    turns), so the model sees every earlier paragraph whole and the engine's prefix cache
    already holds all of it (the earlier paragraphs were its own output). Without
    `context` every section is asked alone. The first failing section rejects the
    persona (no further sections). Returns the rejection rows (at most one)."""
    history: list[dict[str, str]] = []
    for name, guide in sections.items():
        user = prompts.render(
            "persona_narrate",
            section=name.replace("_", " "),
            guide=guide,
            persona_name=draft.name,
            profile=_profile_lines(draft),
            established=_generated_lines(draft),
            earlier=[],  # earlier paragraphs are in the history (kept for older templates)
            fewshot=fewshot,
            continued=bool(history),
        )
        request = _writer_request(
            prompts,
            f"{draft.persona_id}/narrate/{name}",
            "persona narrative",
            user,
            max_tokens=max_tokens,
            seed=derive_seed(seed, draft.index, "narrate", name),
            history=history,
        )
        text, failure = yield from structured_flow(request, _clean_paragraph)
        if failure is not None:
            draft.rejected = f"narrate {name}: {failure.reason}"
            return [_generation_failure(draft, "narrate", failure)]
        draft.sections[name] = text
        if context:
            history += [{"role": "user", "content": user}, {"role": "assistant", "content": text}]
    return []


def _generation_failure(draft: PersonaDraft, stage: str, failure: Rejection) -> dict[str, Any]:
    """The rejection row of a persona whose `stage` gave up (retries exhausted)."""
    return rejection(
        draft.persona_id, "persona", stage, "generation", failure.reason, raw=failure.raw
    )


PersonaFlow = Generator[list[GenerationRequest], list[Completion], list[dict[str, Any]]]


def _persona_flow(
    prompts: PromptLibrary,
    draft: PersonaDraft,
    *,
    enrichment: dict[str, Any] | None,
    narrative: dict[str, Any] | None,
) -> PersonaFlow:
    rows: list[dict[str, Any]] = []
    if enrichment is not None:
        rows += yield from _enrich_flow(prompts, draft, **enrichment)
    if narrative is not None and draft.rejected is None:
        rows += yield from _narrate_flow(prompts, draft, **narrative)
    return rows


def write_personas(
    engine: Engine,
    prompts: PromptLibrary,
    drafts: Sequence[PersonaDraft],
    **options: Any,
) -> list[dict[str, Any]]:
    """Enrich, then narrate, every live draft of the batch (`persona_flows`, run on
    `engine`); returns the rejection rows."""
    results = run_flows(engine, [flow for _, flow in persona_flows(prompts, drafts, **options)])
    return [row for rows in results for row in rows]


def persona_flows(
    prompts: PromptLibrary,
    drafts: Sequence[PersonaDraft],
    *,
    seed: int,
    max_tokens_section: int = 160,
    max_length: int = 160,
    max_tokens_narrative: int = 200,
    fewshot: str = "",
    context: bool = True,
    sections: Mapping[str, str] | None = None,
    enrich: bool = True,
    narrate: bool = True,
) -> list[tuple[PersonaDraft, PersonaFlow]]:
    """(draft, its flow) for every live draft: the flow enriches, then narrates it, and
    returns its rejection rows.

    Each persona is a flow (`personaloom.engine.flows`): it asks for its next section as
    soon as its previous one is done, so personas do not wait for the slowest of the batch
    and the engine's queue stays full across stages. Every request's prompt and seed
    depend only on the persona's own earlier sections, so the records are the same
    whatever order the engine finishes requests in. `sections` are the taxonomy's own
    narrative sections (name -> what it covers), else `NARRATIVE_SECTIONS`.
    """
    enrichment = (
        dict(
            seed=seed,
            max_tokens=max_tokens_section,
            max_length=max_length,
            fewshot=fewshot,
            context=context,
        )
        if enrich
        else None
    )
    narrative = (
        dict(
            sections=dict(sections or NARRATIVE_SECTIONS),
            seed=seed,
            max_tokens=max_tokens_narrative,
            fewshot=fewshot,
            context=context,
        )
        if narrate
        else None
    )
    live = [d for d in drafts if d.rejected is None]
    if enrich:
        for d in drafts:
            if d.rejected is not None:
                d.pending = []
    return [
        (d, _persona_flow(prompts, d, enrichment=enrichment, narrative=narrative)) for d in live
    ]


def enrich(
    engine: Engine,
    prompts: PromptLibrary,
    drafts: Sequence[PersonaDraft],
    *,
    seed: int,
    max_tokens: int = 160,
    max_length: int = 160,
    fewshot: str = "",
    context: bool = True,
) -> list[dict[str, Any]]:
    """Only the enrichment of `write_personas`; returns the rejection rows."""
    return write_personas(
        engine,
        prompts,
        drafts,
        seed=seed,
        max_tokens_section=max_tokens,
        max_length=max_length,
        fewshot=fewshot,
        context=context,
        narrate=False,
    )


def narrate(
    engine: Engine,
    prompts: PromptLibrary,
    drafts: Sequence[PersonaDraft],
    *,
    seed: int,
    max_tokens: int = 200,
    fewshot: str = "",
    context: bool = True,
    sections: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Only the narrative of `write_personas`; returns the rejection rows."""
    return write_personas(
        engine,
        prompts,
        drafts,
        seed=seed,
        max_tokens_narrative=max_tokens,
        fewshot=fewshot,
        context=context,
        sections=sections,
        enrich=False,
    )


def _clean_paragraph(text: str) -> str:
    text = re.sub(r"^\s*(#+\s*)?[A-Z][A-Za-z ]{0,30}:\s*\n", "", text.strip())
    text = " ".join(text.split())
    # drop an unfinished trailing sentence when the output hit max_tokens
    if text and text[-1] not in ".!?\"'" and re.search(r"[.!?]", text):
        text = text[: max(text.rfind("."), text.rfind("!"), text.rfind("?")) + 1]
    if len(text.split()) < 8:
        raise ValueError(f"too short ({len(text.split())} words)")
    return text
