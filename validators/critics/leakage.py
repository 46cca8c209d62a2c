"""Leakage: prompt or template text, chat-format markers or AI disclaimers in the output."""

from __future__ import annotations

import re

from personaloom.critic.rule_critics import (
    CriticContext,
    CriticResult,
    normalize_phrase,
    rule_critic,
    text_units,
)


@rule_critic(
    "prompt_leakage",
    kinds=("persona", "conversation"),
    defaults={
        # sentences of the prompt templates (prompts/*.j2) with at least this many words
        "min_template_words": 6,
        # extra phrases (matched on lower-case words, punctuation ignored)
        "phrases": [
            "profile of a person",
            "here is what we know about",
            "answer with a json object",
            "do not list the profile back",
        ],
        # regular expressions searched in every text (case-insensitive)
        "markers": [
            r"<\|[a-z_]{2,30}\|>",
            r"\[/?INST\]",
            r"<</?SYS>>",
            r"</?s>",
            r"\{\{|\}\}|\{%|%\}",
            r"^\s*(?:system|user|assistant|human)\s*:",
        ],
        # searched in the persona's own voice: the narrative and the user's turns
        "persona_voice_markers": [
            r"\bas an ai\b",
            r"\bI(?:'m| am) an ai\b",
            r"\b(?:large )?language model\b",
            r"\bjson\b",
            r"\battributes\s*:",
            r"\bprofile\s*:",
        ],
        # a dotted attribute path of this persona ("demographics.age") quoted in the text
        "attribute_paths": True,
    },
)
def prompt_leakage(record: dict, ctx: CriticContext) -> CriticResult:
    """No prompt sentences, role markers, template syntax, AI disclaimers or attribute paths."""
    s = ctx.settings
    phrases = [normalize_phrase(p) for p in s["phrases"]]
    phrases += [
        p for p in ctx.shared.get("prompt_phrases", []) if len(p.split()) >= s["min_template_words"]
    ]
    markers = [re.compile(m, re.I | re.M) for m in s["markers"]]
    voice = [re.compile(m, re.I | re.M) for m in s["persona_voice_markers"]]
    persona = record if ctx.kind == "persona" else ctx.persona(record.get("persona_id"))
    paths = {
        str(a.get("path"))
        for a in (persona or {}).get("attributes") or []
        if "." in str(a.get("path"))
    }
    for label, text in text_units(record, ctx.kind):
        padded = f" {normalize_phrase(text)} "
        for phrase in phrases:
            if phrase and f" {phrase} " in padded:
                return ctx.fail(f"prompt_text: {label} repeats the prompt: {phrase[:80]!r}")
        own_voice = ctx.kind == "persona" or label.endswith(".user")
        for pattern in markers + (voice if own_voice else []):
            m = pattern.search(text)
            if m:
                return ctx.fail(f"marker: {label} contains {m.group(0).strip()!r}")
        if s["attribute_paths"]:
            for path in paths:
                if re.search(rf"(?<![\w.]){re.escape(path)}(?![\w.])", text):
                    return ctx.fail(f"attribute_path: {label} contains {path!r}")
    return ctx.ok()
