"""Persona stages: skeleton -> enriched attributes (LLM, JSON schema per section) -> narrative.

Each stage is a plain function over a batch. Sections are written in a fixed order (the
taxonomy's root categories for enrichment, `NARRATIVE_SECTIONS` for the narrative), and
all personas' k-th section goes to the engine as one call, so the engine always sees the
whole batch at once. Every prompt carries the persona's name and facts plus what the
earlier sections established: the fields already generated, and a bounded digest of the
earlier narrative paragraphs (their opening sentences, `context_chars` each). The prompt
puts what does not change first (system text, examples, profile, earlier sections) and
the section's own instruction last, so successive sections of a persona share a prefix
(vLLM's prefix cache reuses it).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from personaloom.engine.base import Engine, GenerationRequest
from personaloom.engine.structured import generate_structured
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
CONTEXT_CHARS = 240  # digest of one earlier narrative section; 0: no earlier sections
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


def digest(text: str, max_chars: int = CONTEXT_CHARS) -> str:
    """The opening of a paragraph: whole sentences up to `max_chars` (at least the first
    sentence, cut at a word boundary when that alone is longer)."""
    text = " ".join(text.split())
    if len(text) <= max_chars:
        return text
    sentences = re.split(r"(?<=[.!?])\s+", text)
    out = ""
    for sentence in sentences:
        if out and len(out) + 1 + len(sentence) > max_chars:
            break
        out = f"{out} {sentence}".strip()
    if len(out) > max_chars:
        cut = out[:max_chars]
        out = (cut[: cut.rfind(" ")] if " " in cut else cut).rstrip(",;: ") + " ..."
    return out


def _earlier_sections(draft: PersonaDraft, upto: str, max_chars: int) -> list[dict[str, str]]:
    """Digests of the narrative sections written before `upto` (in writing order)."""
    if max_chars <= 0:
        return []
    out = []
    for name, text in draft.sections.items():
        if name == upto:
            break
        out.append({"section": name.replace("_", " "), "text": digest(text, max_chars)})
    return out


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
) -> GenerationRequest:
    """A request to the persona writer (its system prompt, then `user`), sampled at 0.8."""
    return GenerationRequest(
        request_id=request_id,
        stage=stage,
        messages=[
            {"role": "system", "content": prompts.render(SYSTEM_WRITER)},
            {"role": "user", "content": user},
        ],
        max_tokens=max_tokens,
        temperature=0.8,
        seed=seed,
        json_schema=json_schema,
    )


def enrich(
    engine: Engine,
    prompts: PromptLibrary,
    drafts: Sequence[PersonaDraft],
    *,
    seed: int,
    max_tokens: int = 160,
    max_length: int = 160,
    fewshot: str = "",
    context_chars: int = CONTEXT_CHARS,
) -> list[dict[str, Any]]:
    """Fill generated leaves section by section; returns engine-output rejections.

    Section k of every persona goes out in one engine call; each section's prompt carries
    the persona's name and sampled facts and the fields generated in sections before it
    (none when `context_chars` is 0).
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
                persona_name=draft.name,
                profile=_profile_lines(draft),
                established=_generated_lines(draft) if context_chars > 0 else [],
                fields=[
                    {"key": key, "path": leaf.path, "description": leaf.description or leaf.path}
                    for key, leaf in zip(keys, leaves, strict=True)
                ],
                fewshot=fewshot,
            )
            rid = f"{draft.persona_id}/enrich/{k}"
            requests.append(
                _writer_request(
                    prompts,
                    rid,
                    "persona enrichment",
                    user,
                    max_tokens=max_tokens + 24 * len(leaves),
                    seed=derive_seed(seed, index, "enrich", k),
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
            rejections.append(
                rejection(
                    draft.persona_id,
                    "persona",
                    "enrich",
                    "generation",
                    failure.reason,
                    raw=failure.raw,
                )
            )
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
    context_chars: int = CONTEXT_CHARS,
    sections: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Write the narrative sections in order (plain text): one engine call per section for
    the whole batch, each prompt carrying the name, the profile and a digest of the
    persona's earlier sections (`context_chars` per section; 0 leaves them out). A persona
    whose section fails is rejected and writes no further sections. `sections` are the
    taxonomy's own (name -> what it covers), else `NARRATIVE_SECTIONS`."""
    rejections: list[dict[str, Any]] = []
    for name, guide in (sections or NARRATIVE_SECTIONS).items():
        live = [d for d in drafts if d.rejected is None]
        if not live:
            break
        rejections += _narrate_section(
            engine, prompts, live, name, guide, seed, max_tokens, fewshot, context_chars
        )
    return rejections


def _narrate_section(
    engine: Engine,
    prompts: PromptLibrary,
    drafts: Sequence[PersonaDraft],
    name: str,
    guide: str,
    seed: int,
    max_tokens: int,
    fewshot: str,
    context_chars: int,
) -> list[dict[str, Any]]:
    requests = []
    owner: dict[str, tuple[PersonaDraft, str]] = {}
    for draft in drafts:
        rid = f"{draft.persona_id}/narrate/{name}"
        user = prompts.render(
            "persona_narrate",
            section=name.replace("_", " "),
            guide=guide,
            persona_name=draft.name,
            profile=_profile_lines(draft) + _generated_lines(draft),
            earlier=_earlier_sections(draft, name, context_chars),
            fewshot=fewshot,
        )
        requests.append(
            _writer_request(
                prompts,
                rid,
                "persona narrative",
                user,
                max_tokens=max_tokens,
                seed=derive_seed(seed, draft.index, "narrate", name),
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
            rejections.append(
                rejection(
                    draft.persona_id,
                    "persona",
                    "narrate",
                    "generation",
                    failure.reason,
                    raw=failure.raw,
                )
            )
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
