"""Run: a whole run, from configuration to finished folder.

Holds the run configuration (`config`, one Pydantic model that round-trips to YAML), the
pipeline that validates, prepares, runs one batch and finalizes (`pipeline`), the single
finalize routine that writes shards, manifest and card (`finalize`), and `merge` of the
parts of a sharded run. Guarantees: a configuration is validated once and fingerprinted
once; a killed run resumes where it stopped.

May import: every stage package, `personaloom.state`, the shared floor. Never Prefect:
the flows in `flows/` call into this layer, not the other way round.
"""
