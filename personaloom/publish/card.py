"""The dataset card: DIR/README.md (YAML metadata + Markdown) and DIR/charts/*.png.

`write_card(out_dir, manifest)` reads the released shards (one sample record per config,
streamed counts for the charts) and the run manifest (settings, counts, critic rates,
metrics), renders the card from the Jinja template `templates/card.md.j2` (the YAML
metadata from huggingface_hub's `DatasetCardData`), and writes it atomically. The output
is a pure function of the shards and the manifest, so writing the card twice over the same
run gives byte-identical files.
"""

from __future__ import annotations

import functools
import json
import re
import shlex
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml
from huggingface_hub import DatasetCard, DatasetCardData

from personaloom import __version__
from personaloom.atomic import write_text_atomic
from personaloom.publish import adherence, charts, fidelity
from personaloom.publish.shards import SHARD_NAME
from personaloom.schema import CONFIG_SCHEMAS
from personaloom.secrets import redact

CONFIGS = tuple(CONFIG_SCHEMAS)  # personas, conversations, probes
CARD_NAME = "README.md"
CHARTS_DIR = "charts"
CHART_FILES = ("demographics.png", "conversations.png", "critic.png", *fidelity.CHART_FILES)
PLACEHOLDER_REPO = "ORG/NAME"

# Attribute paths whose last segment is one of these are charted, in this order.
DEMOGRAPHIC_KEYS = (
    "age_band",
    "age_group",
    "gender",
    "country",
    "occupation",
    "occupation_group",
    "employment_status",
    "region",
    "education",
    "education_level",
    "attainment",
    "marital_status",
)
MAX_DEMOGRAPHIC_PANELS = 4
MAX_BARS = 12

STRING_LIMIT = 240
NESTED_STRING_LIMIT = 100
LIST_LIMIT = 6

CONFIG_DESCRIPTIONS = {
    "personas": "one row per persona: sampled and generated attributes, narrative sections, critic scores",
    "conversations": "one row per session of a persona's multi-session dialogue with an assistant",
    "probes": "multiple-choice questions on a persona's current and past state, with the answer index",
}

# A settings key that names a credential; `max_tokens_*` (token limits) are not.
SECRET_KEY = re.compile(r"(?<!max_)tokens?\b|token(?!s)|secret|password|api[_-]?key", re.IGNORECASE)
URL_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]+@")


# -- reading the folder ----------------------------------------------------------------
def config_shards(out_dir: Path, config: str) -> list[Path]:
    """The config's shards (`CONFIG/train-0000k-of-0000n.parquet`), in order."""
    folder = Path(out_dir) / config
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if SHARD_NAME.match(p.name))


def present_configs(out_dir: Path) -> list[str]:
    return [c for c in CONFIGS if config_shards(out_dir, c)]


def _batches(paths: list[Path], columns: list[str]) -> Iterator[pa.RecordBatch]:
    for path in paths:
        parquet = pq.ParquetFile(path)
        wanted = [c for c in columns if c in parquet.schema_arrow.names]
        if len(wanted) == len(columns):
            yield from parquet.iter_batches(columns=wanted, batch_size=8192)


def _rows(paths: list[Path]) -> int:
    return sum(pq.ParquetFile(p).metadata.num_rows for p in paths)


def _first_record(paths: list[Path]) -> dict[str, Any] | None:
    for path in paths:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=1):
            if batch.num_rows:
                return batch.to_pylist(maps_as_pydicts="lossy")[0]
    return None


def _truncate(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str):
        limit = STRING_LIMIT if depth <= 1 else NESTED_STRING_LIMIT
        return value if len(value) <= limit else value[:limit] + "…"
    if isinstance(value, dict):
        return {k: _truncate(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        items = [_truncate(v, depth + 1) for v in value[:LIST_LIMIT]]
        if len(value) > LIST_LIMIT:
            items.append(f"… {len(value) - LIST_LIMIT} more")
        return items
    if isinstance(value, float):
        return round(value, 4)
    return value


def _compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=_json_default)


def _json_default(value: Any) -> str:
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def sample_json(record: dict[str, Any]) -> str:
    """JSON of one record: a line per field, a line per list item, nested values inline."""
    record = _truncate(record)
    lines = ["{"]
    for i, (key, value) in enumerate(record.items()):
        comma = "," if i < len(record) - 1 else ""
        if isinstance(value, list) and value:
            items = [f"    {_compact(v)}" for v in value]
            lines.append(f"  {_compact(key)}: [")
            lines.append(",\n".join(items))
            lines.append(f"  ]{comma}")
        else:
            lines.append(f"  {_compact(key)}: {_compact(value)}{comma}")
    lines.append("}")
    return "\n".join(lines)


def demographic_paths(paths: list[Path]) -> list[str]:
    """Sampled attribute paths to chart: those whose last segment is a demographic key."""
    seen: set[str] = set()
    for batch in _batches(paths[:1], ["attributes"]):
        flat = pc.list_flatten(batch.column(0))
        sampled = pc.equal(pc.struct_field(flat, "source"), "sampled")
        keys = pc.filter(pc.struct_field(flat, "path"), sampled)
        seen.update(p for p in pc.unique(keys).to_pylist() if p)
        break
    by_key: dict[str, list[str]] = {}
    for path in sorted(seen):
        by_key.setdefault(path.rsplit(".", 1)[-1], []).append(path)
    chosen = [by_key[k][0] for k in DEMOGRAPHIC_KEYS if k in by_key]
    return chosen[:MAX_DEMOGRAPHIC_PANELS]


def attribute_counts(paths: list[Path], wanted: list[str]) -> dict[str, Counter[str]]:
    counts: dict[str, Counter[str]] = {p: Counter() for p in wanted}
    if not wanted:
        return counts
    wanted_array = pa.array(wanted)
    for batch in _batches(paths, ["attributes"]):
        flat = pc.list_flatten(batch.column(0))
        keys = pc.struct_field(flat, "path")
        mask = pc.is_in(keys, value_set=wanted_array)
        table = pa.table(
            {
                "path": pc.filter(keys, mask),
                "value": pc.filter(pc.struct_field(flat, "value"), mask),
            }
        )
        for row in table.group_by(["path", "value"]).aggregate([([], "count_all")]).to_pylist():
            counts[row["path"]][str(row["value"])] += row["count_all"]
    return counts


@dataclass
class ConversationStats:
    sessions_per_persona: Counter[int] = field(default_factory=Counter)
    turns_per_conversation: Counter[int] = field(default_factory=Counter)


def conversation_stats(paths: list[Path]) -> ConversationStats:
    per_persona: Counter[str] = Counter()
    stats = ConversationStats()
    for batch in _batches(paths, ["persona_id", "turns"]):
        per_persona.update(batch.column(0).to_pylist())
        lengths = pc.fill_null(pc.list_value_length(batch.column(1)), 0)
        stats.turns_per_conversation.update(lengths.to_pylist())
    stats.sessions_per_persona.update(per_persona.values())
    return stats


# -- manifest helpers ------------------------------------------------------------------
def _scrub(value: Any, key: str = "") -> Any:
    """Drop secrets from settings before they reach the card."""
    if SECRET_KEY.search(key) and value not in (None, "", [], {}):
        return "***"
    if isinstance(value, dict):
        return {k: _scrub(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(v, key) for v in value]
    if isinstance(value, str):
        return redact(URL_USERINFO.sub(r"\g<scheme>***@", value))
    return value


def _flatten_numbers(data: Any, prefix: str = "") -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = []
    if isinstance(data, dict):
        for key in sorted(data, key=str):
            if key == "definitions":
                continue
            out += _flatten_numbers(data[key], f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(data, (int, float)) and not isinstance(data, bool):
        out.append((prefix, float(data)))
    return out


def _ratio(num: Any, den: Any) -> float | None:
    if isinstance(num, (int, float)) and isinstance(den, (int, float)) and den > 0:
        return num / den
    return None


def _critic_rates(manifest: dict[str, Any]) -> dict[str, Any]:
    """Per-critic acceptance rates: the manifest's `critic`, else the metrics' own."""
    return (
        manifest.get("critic") or (manifest.get("metrics") or {}).get("acceptance_by_critic") or {}
    )


def round_rows(manifest: dict[str, Any]) -> list[tuple[str, ...]]:
    """The per-round table: kind, round, records reviewed, accepted, and the records kept
    from that round (conversations: sessions whose kept version that round made)."""
    rows = []
    for kind, per_kind in sorted((manifest.get("critic_report") or {}).items()):
        for row in per_kind.get("rounds", []):
            kept = row.get("kept")
            rows.append(
                (
                    _cell(kind),
                    _num(row.get("round")),
                    _num(row.get("records")),
                    _num(row.get("accepted")),
                    _num(kept) if kept is not None else "",
                )
            )
    return rows


def derived_rates(counts: dict[str, Any]) -> list[tuple[str, float, str]]:
    """Rates computed from the manifest counts: (name, value, definition)."""
    requested = counts.get("personas_requested")
    rejected = counts.get("personas_rejected", 0)
    rows = [
        (
            "persona yield",
            _ratio(counts.get("personas_kept"), requested),
            "personas_kept / personas_requested",
        ),
        (
            "persona critic rejection rate",
            _ratio(counts.get("personas_rejected"), requested),
            "personas_rejected / personas_requested",
        ),
        (
            "persona duplicate rate",
            _ratio(
                counts.get("duplicates_removed"),
                requested - rejected
                if isinstance(requested, int) and isinstance(rejected, int)
                else None,
            ),
            "duplicates_removed / (personas_requested - personas_rejected): share of critic-accepted personas removed as near duplicates",
        ),
        (
            "conversation duplicate rate",
            _ratio(
                counts.get("conversation_duplicates_removed"),
                (counts.get("conversations") or 0)
                + (counts.get("conversation_duplicates_removed") or 0),
            ),
            "conversation_duplicates_removed / (conversations + conversation_duplicates_removed)",
        ),
    ]
    return [(name, value, definition) for name, value, definition in rows if value is not None]


def size_category(n: int) -> str:
    bounds = [
        (1_000, "n<1K"),
        (10_000, "1K<n<10K"),
        (100_000, "10K<n<100K"),
        (1_000_000, "100K<n<1M"),
        (10_000_000, "1M<n<10M"),
        (100_000_000, "10M<n<100M"),
        (1_000_000_000, "100M<n<1B"),
    ]
    for bound, label in bounds:
        if n < bound:
            return label
    return "n>1B"


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def _num(value: Any) -> str:
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) >= 1 or value == 0 else f"{value:.4f}"
    return str(value)


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


# -- the card --------------------------------------------------------------------------
TEMPLATE = "card.md.j2"  # templates/card.md.j2 in this package


@functools.cache
def _templates() -> jinja2.Environment:
    # The defaults of `jinja2.Template`, as huggingface_hub's DatasetCard.from_template uses.
    return jinja2.Environment(loader=jinja2.PackageLoader("personaloom.publish", "templates"))


@dataclass
class Chart:
    title: str
    caption: str
    path: str


def _configs_yaml(configs: list[str]) -> list[dict[str, Any]]:
    entries = []
    for i, config in enumerate(configs):
        entry: dict[str, Any] = {
            "config_name": config,
            "data_files": [{"split": "train", "path": f"{config}/train-*.parquet"}],
        }
        if i == 0:
            entry["default"] = True
        entries.append(entry)
    return entries


def _has_map(t: pa.DataType) -> bool:
    if pa.types.is_map(t):
        return True
    if pa.types.is_struct(t):
        return any(_has_map(t.field(i).type) for i in range(t.num_fields))
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return _has_map(t.value_type)
    return False


def features_yaml(schema: pa.Schema) -> list[dict[str, Any]]:
    """`datasets` features of a shard schema, as card YAML.

    `datasets` has no type for Arrow maps (`sections`, `scores`): without a declaration,
    `load_dataset` fails on them. Declared as `json`, they load as lists of
    `[key, value]` pairs.
    """
    from datasets import Features, Json
    from datasets.features.features import generate_from_arrow_type

    features = Features(
        {f.name: Json() if _has_map(f.type) else generate_from_arrow_type(f.type) for f in schema}
    )
    return features._to_yaml_list()


def _write_charts(out_dir: Path, manifest: dict[str, Any], configs: list[str]) -> list[Chart]:
    folder = out_dir / CHARTS_DIR
    made: list[Chart] = []
    persona_shards = config_shards(out_dir, "personas")
    wanted = demographic_paths(persona_shards) if persona_shards else []
    counts = attribute_counts(persona_shards, wanted)
    panels = []
    for path in wanted:
        top = sorted(counts[path].items(), key=lambda kv: (-kv[1], kv[0]))
        items = top[:MAX_BARS]
        rest = sum(n for _, n in top[MAX_BARS:])
        if rest:
            items.append((f"other ({len(top) - MAX_BARS})", rest))
        if items:
            panels.append((path, items))
    if panels:
        charts.bar_panels(
            panels, folder / "demographics.png", title="Persona attributes", xlabel="personas"
        )
        made.append(
            Chart(
                "Persona attributes",
                "distribution of the main demographic attributes over the released personas ("
                + ", ".join(f"`{p}`" for p, _ in panels)
                + ")",
                f"{CHARTS_DIR}/demographics.png",
            )
        )
    if "conversations" in configs:
        stats = conversation_stats(config_shards(out_dir, "conversations"))
        charts.histogram_panels(
            [
                ("sessions per persona", dict(stats.sessions_per_persona)),
                ("turns per conversation", dict(stats.turns_per_conversation)),
            ],
            folder / "conversations.png",
            title="Conversations",
        )
        made.append(
            Chart(
                "Conversations",
                "how many sessions each persona has, and how many turns each session has",
                f"{CHARTS_DIR}/conversations.png",
            )
        )
    critic = [(n, v) for n, v in _flatten_numbers(_critic_rates(manifest)) if 0.0 <= v <= 1.0]
    if critic:
        charts.bar_panels(
            [("acceptance rate per critic", critic)],
            folder / "critic.png",
            title="Critic acceptance",
            xlabel="share accepted",
            xlim=(0.0, 1.0),
        )
        made.append(
            Chart(
                "Critic acceptance",
                "share of records each critic accepted",
                f"{CHARTS_DIR}/critic.png",
            )
        )
    for title, caption, name in fidelity.write_charts(
        (manifest.get("metrics") or {}).get("fidelity"), folder
    ):
        made.append(Chart(title, caption, f"{CHARTS_DIR}/{name}"))
    kept = {Path(c.path).name for c in made}
    for name in CHART_FILES:  # charts of an earlier card that no longer apply
        if name not in kept:
            (folder / name).unlink(missing_ok=True)
    return made


def render_card(
    out_dir: Path, manifest: dict[str, Any], chart_list: list[Chart] | None = None
) -> str:
    """The card's text (no file written)."""
    out_dir = Path(out_dir)
    config = manifest.get("config") or {}
    configs = present_configs(out_dir)
    taxonomy = manifest.get("taxonomy") or config.get("taxonomy") or "unknown"
    model = manifest.get("model") or config.get("model") or "unknown"
    pretty_name = (
        config.get("pretty_name")
        or manifest.get("pretty_name")
        or f"Synthetic personas ({taxonomy})"
    )
    license_id = config.get("license") or manifest.get("license") or "apache-2.0"
    repo = config.get("hub_repo") or config.get("repo_id") or PLACEHOLDER_REPO

    config_rows = []
    dataset_info = []
    max_rows = 0
    for name in configs:
        shards = config_shards(out_dir, name)
        rows = _rows(shards)
        max_rows = max(max_rows, rows)
        schema = pq.read_schema(shards[0])
        dataset_info.append({"config_name": name, "features": features_yaml(schema)})
        record = _first_record(shards)
        config_rows.append(
            {
                "name": name,
                "rows": f"{rows:,}",
                "shards": len(shards),
                "description": CONFIG_DESCRIPTIONS[name],
                "columns": [(f.name, str(f.type)) for f in schema],
                "sample": redact(sample_json(record)) if record is not None else None,
            }
        )

    tags = ["synthetic", "personas", "personaloom"]
    if "conversations" in configs:
        tags += ["dialogue", "multi-session", "long-term-memory"]
    if "probes" in configs:
        tags += ["memory-probes"]
    task_categories = ["text-generation"]
    if "probes" in configs:
        task_categories.append("multiple-choice")
    language = config.get("language") or ["en"]
    card_data = DatasetCardData(
        language=language if isinstance(language, list) else [language],
        license=license_id,
        annotations_creators=["machine-generated"],
        language_creators=["machine-generated"],
        multilinguality=["monolingual"],
        size_categories=[size_category(max_rows)],
        source_datasets=["original"],
        task_categories=task_categories,
        pretty_name=pretty_name,
        tags=tags,
        configs=_configs_yaml(configs),
        dataset_info=dataset_info,
    )

    engine = manifest.get("engine") or config.get("engine")
    judge = manifest.get("judge_model") or config.get("judge_model")
    generation = [
        ("model", f"`{model}`"),
        ("judge model", f"`{judge}`" if judge and judge != model else None),
        ("engine", engine),
        ("taxonomy", f"`{taxonomy}`"),
        ("seed", config.get("seed")),
        ("personas requested", config.get("personas")),
        ("sessions per persona", config.get("sessions")),
        ("turns per session", config.get("turns")),
        ("critic rounds", config.get("critic_rounds")),
        ("dedup threshold (Jaccard)", config.get("dedup_threshold")),
        ("preset", config.get("preset")),
        ("personaloom version", manifest.get("personaloom_version") or __version__),
        (
            "config fingerprint",
            f"`{manifest['fingerprint']}`" if manifest.get("fingerprint") else None,
        ),
        ("started", manifest.get("started_at")),
        ("finished", manifest.get("finished_at")),
    ]
    generation = [(k, _cell(_scrub(v))) for k, v in generation if v not in (None, "")]
    command = manifest.get("command")
    if isinstance(command, list):
        command = shlex.join(str(_scrub(a)) for a in command)
    settings = (
        yaml.safe_dump(_scrub(config), sort_keys=True, allow_unicode=True, default_flow_style=False)
        if config
        else ""
    )

    counts_raw = manifest.get("counts") or {}
    counts = [
        (_cell(k), _num(v)) for k, v in sorted(counts_raw.items()) if isinstance(v, (int, float))
    ]
    rates = [(name, _pct(value), _cell(d)) for name, value, d in derived_rates(counts_raw)]
    critic = [
        (_cell(n), _pct(v) if 0 <= v <= 1 else _num(v))
        for n, v in _flatten_numbers(_critic_rates(manifest))
    ]
    pii = [
        v
        for n, v in _flatten_numbers(_critic_rates(manifest))
        if "pii" in n.lower() and 0 <= v <= 1
    ]
    metrics_raw = manifest.get("metrics") or {}
    definitions = metrics_raw.get("definitions") or {}
    metrics = [
        (_cell(n), _num(v), _cell(definitions.get(n) or definitions.get(n.split(".")[-1]) or ""))
        for n, v in _flatten_numbers(metrics_raw)
        if n.split(".")[0] not in ("fidelity", "adherence")  # their own sections
    ]
    fidelity_report = metrics_raw.get("fidelity") or {}
    adherence_report = metrics_raw.get("adherence") or {}
    tp = manifest.get("throughput") or {}
    throughput_parts = []
    if tp.get("output_tokens") is not None:
        throughput_parts.append(f"{_num(tp['output_tokens'])} output tokens")
    if tp.get("seconds") is not None:
        throughput_parts.append(f"in {_num(tp['seconds'])} s of generation")
    if tp.get("tokens_per_s") is not None:
        throughput_parts.append(f"({_num(tp['tokens_per_s'])} tokens/s)")
    if tp.get("prompt_tokens_per_persona") is not None:
        prompt = f"; {_num(tp['prompt_tokens_per_persona'])} prompt tokens per kept persona"
        if tp.get("cached_share") is not None:
            prompt += f", {100 * tp['cached_share']:.0f}% of them from the prefix cache"
        throughput_parts[-1:] = (
            [throughput_parts[-1] + prompt] if throughput_parts else [prompt[2:]]
        )

    body = (
        _templates()
        .get_template(TEMPLATE)
        .render(
            card_data=card_data.to_yaml(),
            pretty_name=pretty_name,
            version=manifest.get("personaloom_version") or __version__,
            taxonomy=taxonomy,
            model=model,
            configs=config_rows,
            first=configs[0] if configs else "personas",
            has_conversations="conversations" in configs,
            has_probes="probes" in configs,
            generation=generation,
            command=command,
            settings=settings,
            counts=counts,
            shortfall=manifest.get("shortfall"),
            rates=rates,
            critic=critic,
            critic_rounds=round_rows(manifest),
            pii_rate=_pct(pii[0]) if pii else None,
            metrics=metrics,
            throughput=" ".join(throughput_parts),
            chart_list=chart_list or [],
            fidelity=fidelity.rows(fidelity_report) if "summary" in fidelity_report else None,
            fidelity_reason=fidelity_report.get("reason"),
            adherence=adherence.rows(adherence_report) if "top1" in adherence_report else None,
            adherence_model=adherence_report.get("model"),
            adherence_reason=adherence_report.get("reason"),
            repo=repo,
            license=license_id,
        )
    )
    text = re.sub(r"\n{3,}", "\n\n", body).rstrip() + "\n"
    return redact(text)


def write_card(out_dir: Path, manifest: dict[str, Any]) -> Path:
    """Write DIR/charts/*.png and DIR/README.md (atomically); return the card's path."""
    out_dir = Path(out_dir)
    configs = present_configs(out_dir)
    chart_list = _write_charts(out_dir, manifest, configs)
    text = render_card(out_dir, manifest, chart_list)
    path = out_dir / CARD_NAME
    write_text_atomic(path, text)
    return path


def card_configs(card_path: Path) -> list[str]:
    """Config names declared under `configs:` in a card's YAML (for release checks)."""
    card = DatasetCard.load(card_path)
    entries = card.data.to_dict().get("configs") or []
    return [e.get("config_name") for e in entries if isinstance(e, dict)]
