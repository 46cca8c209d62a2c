"""Arrow schemas of the released configs (CONTRACT in DESIGN.md) and of run-state tables."""

from __future__ import annotations

import pyarrow as pa

ATTRIBUTE = pa.struct([("path", pa.string()), ("value", pa.string()), ("source", pa.string())])
TURN = pa.struct([("role", pa.string()), ("content", pa.string())])
PROFILE_UPDATE = pa.struct(
    [("path", pa.string()), ("old", pa.string()), ("new", pa.string()), ("reason", pa.string())]
)
SCORES = pa.map_(pa.string(), pa.float64())

PERSONAS = pa.schema(
    [
        ("persona_id", pa.string()),
        ("seed", pa.int64()),
        ("index", pa.int64()),
        ("taxonomy", pa.string()),
        ("name", pa.string()),  # the sampled identity; "" when the taxonomy has none
        ("attributes", pa.list_(ATTRIBUTE)),
        ("narrative", pa.string()),
        ("sections", pa.map_(pa.string(), pa.string())),
        ("model", pa.string()),
        ("scores", SCORES),
    ]
)

CONVERSATIONS = pa.schema(
    [
        ("conversation_id", pa.string()),
        ("persona_id", pa.string()),
        ("session", pa.int32()),
        ("timestamp", pa.timestamp("ms", tz="UTC")),  # Parquet has no seconds unit
        ("topic", pa.string()),
        ("turns", pa.list_(TURN)),
        ("profile_updates", pa.list_(PROFILE_UPDATE)),
        ("model", pa.string()),
        ("scores", SCORES),
    ]
)

PROBES = pa.schema(
    [
        ("probe_id", pa.string()),
        ("persona_id", pa.string()),
        ("after_session", pa.int32()),
        ("type", pa.string()),
        ("question", pa.string()),
        ("choices", pa.list_(pa.string())),
        ("answer", pa.int32()),
        ("evidence_session", pa.int32()),  # where the deciding fact was stated
    ]
)

REJECTED = pa.schema(
    [
        ("record_id", pa.string()),
        ("kind", pa.string()),  # persona | conversation | engine_output
        ("stage", pa.string()),
        ("critic", pa.string()),
        ("reason", pa.string()),
        ("score", pa.float64()),
        ("raw", pa.string()),
    ]
)

CONFIG_SCHEMAS: dict[str, pa.Schema] = {
    "personas": PERSONAS,
    "conversations": CONVERSATIONS,
    "probes": PROBES,
}


def persona_id(seed: int, index: int) -> str:
    """Stable id of persona `index` of a run with seed `seed`."""
    return f"p{seed:x}-{index:08d}"
