"""Merge the part folders of a sharded run (`generate --shard k/n`) into one dataset folder.

Each of n workers writes a complete dataset folder for the persona ids i with i mod n == k.
`merge(parts, out)`:

1. validates the parts before anything is written (UserError, exit 2): every part is a
   finished run (`status: complete`, no live process holding it, shards present), all share
   the configuration apart from `shard` (`.personaloom/config.yaml`) and the taxonomy, all
   use the same n, and shards 0..n-1 are each given exactly once;
2. concatenates personas, conversations and probes and hands them to the routine that also
   finalizes a run (`personaloom.run.finalize.finalize_folder`): it removes exact and
   near-duplicate personas across parts (narratives; a cluster keeps the highest
   `critic_score`, then the lowest id), a removed persona's conversations and probes with
   it, all into `OUT/.personaloom/rejected/merge-dedup.parquet` with the reason and the
   record as JSON; it writes the parts' rejected tables
   (`rejected/part-0000k-of-0000n.parquet`), the shards in the run's row order, the
   metrics, the dataset card and the manifest (counts, the parts, the merged configuration
   with shard 0/1), whose `status: complete` is written last.

It holds OUT's run lock while it writes. The output is a function of the parts only: a
re-run over unchanged parts is a no-op, a re-run after a crash (or after a part was
re-finalized) recomputes and rewrites the same result. OUT must be new, empty, or hold an
earlier merge of the same parts (same shard split and part fingerprints).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from personaloom import __version__
from personaloom import schema as S
from personaloom.errors import UserError
from personaloom.publish.shards import SHARD_NAME
from personaloom.run.config import RunConfig, ShardSpec
from personaloom.run.finalize import CONFIGS, DedupSettings, finalize_folder
from personaloom.run.finalize import ORDER as ORDER  # the release row order (tests use it)
from personaloom.run.throughput import throughput
from personaloom.secrets import redact
from personaloom.state.lock import RUN_LOCK, RunLock
from personaloom.state.run_state import STATE_DIR, RunState, ensure_writable

Log = Callable[[str], None]

MERGE_REJECTED = "merge-dedup.parquet"
PART_REJECTED = "part-{k:05d}-of-{n:05d}.parquet"
MERGE_STAGE = "merge"
FORMAT = 1  # bump when the merge's output for the same parts changes


@dataclass(frozen=True)
class Part:
    """One validated part folder."""

    path: Path
    shard: ShardSpec
    config: RunConfig
    manifest: dict[str, Any]

    @property
    def label(self) -> str:
        return f"{self.path} (shard {self.shard})"

    def shards(self, name: str) -> list[Path]:
        return _config_shards(self.path, name)

    def rejected_files(self) -> list[Path]:
        folder = RunState(self.path).rejected
        return sorted(p for p in folder.glob("*.parquet") if not p.name.startswith("."))


@dataclass(frozen=True)
class MergePlan:
    """What `merge` will do: the validated parts (ordered by shard) and the output."""

    parts: list[Part]
    out: Path
    config: RunConfig  # the shared configuration, shard 0/1
    fingerprint: str  # identity of the merge: the shard split and the parts' fingerprints

    @property
    def count(self) -> int:
        return len(self.parts)


# -- validation ----------------------------------------------------------------------------
def _config_shards(folder: Path, name: str) -> list[Path]:
    config_dir = folder / name
    if not config_dir.is_dir():
        return []
    return sorted(p for p in config_dir.iterdir() if SHARD_NAME.match(p.name))


def _check_shard_set(part_dir: Path, name: str, files: list[Path]) -> None:
    """`train-0000k-of-0000N.parquet` for k = 0..N-1, one N: a complete layout."""
    if not files:
        return
    numbers = [SHARD_NAME.match(p.name).groups() for p in files]  # type: ignore[union-attr]
    totals = {int(n) for _, n in numbers}
    present = sorted(int(k) for k, _ in numbers)
    if len(totals) != 1 or present != list(range(next(iter(totals)))):
        raise UserError(
            f"{part_dir}: {name}/ holds an incomplete or mixed shard layout "
            f"({', '.join(p.name for p in files[:4])}{', ...' if len(files) > 4 else ''}); "
            "re-run the part's generate command to rewrite it"
        )


def read_part(path: str | Path) -> Part:
    """Check that `path` is a finished part folder and read its configuration."""
    part_dir = Path(path)
    if not part_dir.exists():
        raise UserError(f"{path}: no such part folder")
    if not part_dir.is_dir():
        raise UserError(f"{path}: not a folder")
    state = RunState(part_dir)
    if not state.manifest_path.is_file():
        raise UserError(
            f"{path}: not a personaloom run folder (missing {state.manifest_path}); give the "
            "folders written by `personaloom generate --shard k/n`"
        )
    try:
        manifest = json.loads(state.manifest_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"{state.manifest_path}: unreadable run manifest ({exc})") from None
    if not isinstance(manifest, dict):
        raise UserError(f"{state.manifest_path}: unreadable run manifest (not an object)")
    if manifest.get("merge"):
        raise UserError(
            f"{path}: is the output of a merge, not a part; give the part folders themselves"
        )
    holder = RunLock(state.root / RUN_LOCK).holder()
    if holder is not None:
        raise UserError(
            f"{path}: a personaloom process is still writing this part "
            f"(pid {holder.get('pid')} on {holder.get('hostname')}); wait for it to finish"
        )
    status = manifest.get("status")
    if status != "complete":
        raise UserError(
            f"{path}: the part's run is not complete (status {status!r}); finish it by "
            "re-running its `personaloom generate ... --shard k/n` command, then merge"
        )
    if not state.config_path.is_file():
        raise UserError(f"{path}: missing {state.config_path}; the part's run state is damaged")
    config = RunConfig.load(state.config_path)
    for name in CONFIGS:
        _check_shard_set(part_dir, name, _config_shards(part_dir, name))
    if not _config_shards(part_dir, "personas"):
        raise UserError(
            f"{path}: no personas shards (personas/train-*.parquet) although the run is "
            "complete; re-run the part's generate command to rewrite them"
        )
    part = Part(part_dir, config.shard, config, manifest)
    _check_membership(part)
    return part


def _comparable(part: Part) -> dict[str, Any]:
    data = part.config.model_dump(mode="json")
    data.pop("shard", None)
    data["taxonomy (loaded)"] = part.manifest.get("taxonomy")
    # Hashes of the taxonomy, prompts and validators files, when the run recorded them
    # (`pipeline.content_hashes`); the fingerprint itself cannot be compared, it covers the
    # shard spec too.
    data["content_hashes"] = part.manifest.get("content_hashes")
    return data


def _differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    return [
        f"{key}: {b.get(key)!r} != {a.get(key)!r}"
        for key in sorted(set(a) | set(b))
        if a.get(key) != b.get(key)
    ]


def plan_merge(parts: Sequence[str | Path], out: str | Path) -> MergePlan:
    """Validate the parts and the output folder; nothing is written (UserError on bad input)."""
    if not parts:
        raise UserError("merge: give the part folders (PART_DIR...)")
    out = Path(out)
    resolved_out = out.resolve()
    seen: dict[Path, str | Path] = {}
    for path in parts:
        key = Path(path).resolve()
        if key in seen:
            raise UserError(f"{path}: part folder given twice (also as {seen[key]})")
        seen[key] = path
        if resolved_out == key or key in resolved_out.parents:
            raise UserError(f"--out {out}: is inside part folder {path}; choose another folder")
        if resolved_out in key.parents:
            raise UserError(f"--out {out}: contains part folder {path}; choose another folder")
    loaded = [read_part(p) for p in parts]

    first = loaded[0]
    n = first.shard.count
    reference = _comparable(first)
    by_index: dict[int, Part] = {}
    for part in loaded:
        if part.shard.count != n:
            raise UserError(
                f"{part.path}: is shard {part.shard}, but {first.path} is shard {first.shard}: "
                "all parts must come from the same --shard k/n split"
            )
        diff = _differences(reference, _comparable(part))
        if diff:
            raise UserError(
                f"{part.path}: configuration differs from {first.path} "
                f"({'; '.join(diff[:5])}); all parts must be generated with the same options "
                f"apart from --shard (compare their {STATE_DIR}/config.yaml)"
            )
        if part.shard.index in by_index:
            raise UserError(
                f"{part.path}: shard {part.shard} is also given by "
                f"{by_index[part.shard.index].path}; give each shard once"
            )
        by_index[part.shard.index] = part
    missing = [f"{k}/{n}" for k in range(n) if k not in by_index]
    if missing:
        raise UserError(
            f"merge: shard{'s' if len(missing) > 1 else ''} {', '.join(missing)} missing: give "
            f"all {n} part folders of the split (got {', '.join(str(p) for p in parts)})"
        )
    ordered = [by_index[k] for k in range(n)]
    config = first.config.model_copy(update={"shard": ShardSpec()})
    identity = {
        "format": FORMAT,
        "config": config.model_dump(mode="json"),
        "parts": [[p.shard.index, n, p.manifest.get("fingerprint")] for p in ordered],
    }
    fingerprint = _digest(json.dumps(identity, sort_keys=True).encode())[:16]

    ensure_writable(out)
    previous = RunState(out).read_manifest() if RunState(out).manifest_path.is_file() else {}
    if previous:
        if not previous.get("merge"):
            raise UserError(
                f"--out {out}: holds a generate run, not a merge; choose another folder"
            )
        if previous.get("fingerprint") != fingerprint:
            parts_before = [p.get("path") for p in previous["merge"].get("parts", [])]
            raise UserError(
                f"--out {out}: holds a merge of other parts or another configuration "
                f"({', '.join(map(str, parts_before[:4]))}); choose another folder"
            )
    return MergePlan(ordered, out, config, fingerprint)


# -- merging -------------------------------------------------------------------------------
def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def inputs_digest(plan: MergePlan, *, embeddings: bool) -> str:
    """Hash of everything the merge reads: a re-run with the same digest is a no-op."""
    entries: list[Any] = [FORMAT, __version__, plan.fingerprint, embeddings]
    for part in plan.parts:
        files = [f for name in CONFIGS for f in part.shards(name)] + part.rejected_files()
        entries.append(
            [
                str(part.shard),
                part.manifest.get("finished_at"),
                [[f"{f.parent.name}/{f.name}", _file_digest(f)] for f in files],
            ]
        )
    return _digest(json.dumps(entries, sort_keys=True).encode())


def _read_part_table(part: Part, name: str) -> pa.Table:
    schema = S.CONFIG_SCHEMAS[name]
    tables = [pq.read_table(f).select(schema.names).cast(schema) for f in part.shards(name)]
    return pa.concat_tables(tables) if tables else schema.empty_table()


def _read_part_rejected(part: Part) -> pa.Table:
    tables = [pq.read_table(f).cast(S.REJECTED) for f in part.rejected_files()]
    return pa.concat_tables(tables) if tables else S.REJECTED.empty_table()


def _check_membership(part: Part) -> None:
    """Every persona of the part is in its shard (a mislabelled or mixed-up part is refused)."""
    n, k = part.shard.count, part.shard.index
    indices = [
        i
        for f in part.shards("personas")
        for i in pq.read_table(f, columns=["index"])[0].to_pylist()
    ]
    for index in indices:
        if index % n != k:
            raise UserError(
                f"{part.path}: holds persona index {index}, which is not in shard {part.shard} "
                "(index mod n != k): the part's shards do not match its run state"
            )


def _earlier_duplicates(parts: list[Part]) -> tuple[int, int]:
    """(exact, near) duplicate personas the parts' own finalize removed."""
    counts = [part.manifest.get("counts") or {} for part in parts]
    return (
        sum(c.get("exact_duplicates") or 0 for c in counts),
        sum(c.get("near_duplicates") or 0 for c in counts),
    )


def _throughput(parts: list[Part]) -> dict[str, Any]:
    return throughput([p.manifest.get("throughput") or {} for p in parts])


def _part_entry(part: Part) -> dict[str, Any]:
    return {
        "path": str(part.path.resolve()),
        "shard": str(part.shard),
        "fingerprint": part.manifest.get("fingerprint"),
        "finished_at": part.manifest.get("finished_at"),
        "counts": part.manifest.get("counts") or {},
    }


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _quiet(message: str) -> None:
    return None


def merge(
    parts: Sequence[str | Path],
    out: str | Path,
    *,
    embeddings: bool = True,
    command: list[str] | None = None,
    log: Log = _quiet,
) -> dict[str, Any]:
    """Merge the part folders into `out`; see the module docstring. Returns a summary:
    `out`, `counts`, `dedup` (cross-part counts), `parts` and `skipped` (already merged).

    `embeddings=False` skips the embedding-based metric (no embedding model is loaded).
    """
    plan = plan_merge(parts, out)
    state = RunState(plan.out)
    with RunLock(state.root / RUN_LOCK, command=" ".join(command or ["personaloom merge"])):
        digest = inputs_digest(plan, embeddings=embeddings)
        previous = state.read_manifest()
        merge_info = previous.get("merge") or {}
        if (
            previous.get("status") == "complete"
            and merge_info.get("inputs") == digest
            and _config_shards(plan.out, "personas")
        ):
            log(f"{plan.out}: already merged from these {plan.count} parts; nothing to do")
            return _summary(plan, previous, skipped=True)
        return _merge(plan, state, previous, digest, embeddings, command, log)


def _merge(
    plan: MergePlan,
    state: RunState,
    previous: dict[str, Any],
    digest: str,
    embeddings: bool,
    command: list[str] | None,
    log: Log,
) -> dict[str, Any]:
    first = plan.parts[0].manifest
    state.clean_orphans()
    state.root.mkdir(parents=True, exist_ok=True)
    state.config_path.write_text(plan.config.to_yaml())
    manifest: dict[str, Any] = {
        "personaloom_version": __version__,
        "fingerprint": plan.fingerprint,
        "config": plan.config.model_dump(mode="json"),
        "command": [redact(a) for a in (command or [])],
        "model": first.get("model"),
        "judge_model": first.get("judge_model"),
        "engine": first.get("engine"),
        "taxonomy": first.get("taxonomy"),
        "taxonomy_leaves": first.get("taxonomy_leaves"),
        "project": first.get("project"),
        "status": "merging",
        "started_at": previous.get("started_at") or _now(),
        "merge": {
            "format": FORMAT,
            "parts": [_part_entry(p) for p in plan.parts],
            "inputs": digest,
        },
    }
    state.write_manifest(manifest)
    state.log_event("merge_start", parts=[str(p.path) for p in plan.parts])

    tables: dict[str, list[pa.Table]] = {name: [] for name in CONFIGS}
    rejected: dict[str, pa.Table] = {}
    for part in plan.parts:
        for name in CONFIGS:
            tables[name].append(_read_part_table(part, name))
        rejected[PART_REJECTED.format(k=part.shard.index, n=part.shard.count)] = (
            _read_part_rejected(part)
        )
        log(f"read {part.label}: {tables['personas'][-1].num_rows} personas")
    merged = {name: pa.concat_tables(tables[name]) for name in CONFIGS}
    # A crash before the end leaves status `merging` or `finalizing`: a re-run redoes it all.
    done = finalize_folder(
        plan.out,
        state,
        personas=merged["personas"],
        conversations=merged["conversations"],
        probes=merged["probes"],
        rejected=rejected,
        rejected_in_place=False,
        dedup=DedupSettings(
            threshold=plan.config.dedup_threshold,
            file=MERGE_REJECTED,
            stage=MERGE_STAGE,
            count_key="merge_duplicates_removed",
        ),
        personas_requested=plan.config.personas,
        critic_reports=[p.manifest.get("critic_report") for p in plan.parts],
        manifest_fields={"throughput": _throughput(plan.parts), "judges": first.get("judges")},
        earlier_duplicates=_earlier_duplicates(plan.parts),
        kill_point="merge-after-personas",
        embeddings=embeddings,
    )
    counts = done.counts
    removed = counts["merge_duplicates_removed"]
    log(f"dedup across parts: {done.dedup['input']} personas, {removed} duplicates removed")
    state.log_event("merge_done", personas=counts["personas_kept"], duplicates=removed)
    log(
        f"merged {plan.count} parts into {plan.out}: {counts['personas_kept']} personas, "
        f"{counts['conversations']} conversations, {counts['probes']} probes"
    )
    return _summary(plan, done.manifest, skipped=False)


def _summary(plan: MergePlan, manifest: dict[str, Any], *, skipped: bool) -> dict[str, Any]:
    return {
        "out": str(plan.out),
        "parts": [str(p.path) for p in plan.parts],
        "counts": manifest.get("counts") or {},
        # cross-part dedup; before finalize_folder, merges recorded it under `merge`
        "dedup": manifest.get("dedup") or (manifest.get("merge") or {}).get("dedup") or {},
        "throughput": manifest.get("throughput") or {},
        "shortfall": manifest.get("shortfall"),
        "skipped": skipped,
    }
