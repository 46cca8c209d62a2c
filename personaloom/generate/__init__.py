"""Generate: everything the LLM writes, as plain functions over batches.

Holds persona enrichment and narration (`personas`), the symbolic session timeline with
profile updates (`timeline`), its topic and preference catalogue loaded from the corpus
project (`topics`), multi-session conversations (`conversations`), multiple-choice
probes derived from the timeline (`probes`) and the Jinja prompt library (`prompts`).
Guarantees: every request carries its own seed derived from (run seed, persona, stage,
attempt); nothing here writes files or knows about runs.

May import: `personaloom.engine` (the interface only), `personaloom.taxonomy`, the shared
floor. Never the critic, dedup, publish or run layers, nor Prefect.
"""
