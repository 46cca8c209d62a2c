"""What a release holds, checked and hashed: the card, the config shards and the charts.

`collect(DIR)` re-reads every shard (every page is decoded, so a truncated or corrupt
file is caught) and checks its schema against the contract (`personaloom.schema`):
contract columns must be present with their contract type, extra columns are allowed.
It checks the shard set of each config is complete and that the card's `configs:` match
the configs present. Each file is hashed once for both comparisons a target needs: the
git blob id (what a git tree records) and sha256 (what LFS records).

Run state (`.personaloom/`) and anything else in DIR is never part of a release.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from personaloom.errors import UserError
from personaloom.publish.card import CARD_NAME, CHARTS_DIR, CONFIGS, card_configs
from personaloom.publish.shards import SHARD_NAME
from personaloom.schema import CONFIG_SCHEMAS

MANAGED_DIRS = (*CONFIGS, CHARTS_DIR)
CHUNK = 1 << 20


def is_managed(path: str) -> bool:
    """Whether a repo path belongs to what a release writes (and may replace or delete)."""
    return path == CARD_NAME or (path.split("/", 1)[0] in MANAGED_DIRS and "/" in path)


@dataclass(frozen=True)
class ReleaseFile:
    path: str  # POSIX path inside the repo
    source: Path
    size: int
    sha256: str
    git_oid: str


@dataclass(frozen=True)
class ReleaseSet:
    root: Path
    files: tuple[ReleaseFile, ...]
    rows: dict[str, int]  # config -> rows

    @property
    def paths(self) -> list[str]:
        return [f.path for f in self.files]

    @property
    def by_path(self) -> dict[str, ReleaseFile]:
        return {f.path: f for f in self.files}

    @property
    def digest(self) -> str:
        """One content hash of the whole release (sha256 over path and sha256 of each file)."""
        h = hashlib.sha256()
        for f in sorted(self.files, key=lambda f: f.path):
            h.update(f"{f.path}\t{f.sha256}\n".encode())
        return h.hexdigest()


def hash_file(path: Path) -> tuple[int, str, str]:
    """(size, sha256, git blob id) in one read."""
    size = path.stat().st_size
    sha = hashlib.sha256()
    git = hashlib.sha1(f"blob {size}\0".encode())
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            sha.update(chunk)
            git.update(chunk)
    return size, sha.hexdigest(), git.hexdigest()


# -- schema check ----------------------------------------------------------------------
_LISTS = (
    pa.types.is_list,
    pa.types.is_large_list,
    pa.types.is_list_view,
    pa.types.is_large_list_view,
)
_STRINGS = (pa.types.is_string, pa.types.is_large_string, pa.types.is_string_view)


def compatible(actual: pa.DataType, expected: pa.DataType) -> bool:
    """Whether a shard column type satisfies a contract type.

    Same logical type required; physical variants are accepted (string/large_string,
    list/large_list), a timestamp may use any unit (Parquet stores seconds as ms) but the
    same time zone, and a struct may carry extra fields.
    """
    if actual.equals(expected):
        return True
    if any(f(expected) for f in _STRINGS):
        return any(f(actual) for f in _STRINGS)
    if pa.types.is_timestamp(expected):
        return pa.types.is_timestamp(actual) and (actual.tz or None) == (expected.tz or None)
    if any(f(expected) for f in _LISTS):
        return any(f(actual) for f in _LISTS) and compatible(actual.value_type, expected.value_type)
    if pa.types.is_map(expected):
        return (
            pa.types.is_map(actual)
            and compatible(actual.key_type, expected.key_type)
            and compatible(actual.item_type, expected.item_type)
        )
    if pa.types.is_struct(expected):
        if not pa.types.is_struct(actual):
            return False
        fields = {actual.field(i).name: actual.field(i).type for i in range(actual.num_fields)}
        return all(
            expected.field(i).name in fields
            and compatible(fields[expected.field(i).name], expected.field(i).type)
            for i in range(expected.num_fields)
        )
    return False


def _oneline(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def check_shard(path: Path, config: str, label: str) -> int:
    """Re-read one shard completely and check it against the contract; return its rows."""
    contract = CONFIG_SCHEMAS[config]
    try:
        parquet = pq.ParquetFile(path)
        schema = parquet.schema_arrow
    except (pa.ArrowException, OSError) as exc:
        raise UserError(f"{label}: not a readable Parquet file ({_oneline(exc)})") from None
    for field in contract:
        index = schema.get_field_index(field.name)
        if index < 0:
            raise UserError(
                f"{label}: column `{field.name}` is missing (the {config} contract needs {field.type})"
            )
        actual = schema.field(index).type
        if not compatible(actual, field.type):
            raise UserError(
                f"{label}: column `{field.name}` has type {actual}; the {config} contract says {field.type}"
            )
    rows = 0
    try:
        for batch in parquet.iter_batches(batch_size=65536):
            rows += batch.num_rows
    except (pa.ArrowException, OSError) as exc:
        raise UserError(f"{label}: corrupt Parquet data ({_oneline(exc)})") from None
    if rows != parquet.metadata.num_rows:
        raise UserError(f"{label}: footer says {parquet.metadata.num_rows} rows, data holds {rows}")
    return rows


def _shards(root: Path, config: str) -> list[Path]:
    folder = root / config
    if not folder.is_dir():
        return []
    found = sorted(
        p for p in folder.iterdir() if p.name.startswith("train-") and p.suffix == ".parquet"
    )
    for path in found:
        if not SHARD_NAME.match(path.name):
            raise UserError(
                f"{root / config / path.name}: not a shard name (expected train-0000k-of-0000n.parquet)"
            )
    if found:
        totals = {int(SHARD_NAME.match(p.name).group(2)) for p in found}  # type: ignore[union-attr]
        if len(totals) > 1:
            raise UserError(
                f"{folder}: shards of different sets ({', '.join(p.name for p in found)})"
            )
        total = totals.pop()
        present = {int(SHARD_NAME.match(p.name).group(1)) for p in found}  # type: ignore[union-attr]
        missing = [k for k in range(total) if k not in present]
        if missing:
            raise UserError(
                f"{folder / f'train-{missing[0]:05d}-of-{total:05d}.parquet'}: shard missing"
            )
        extra = sorted(k for k in present if k >= total)
        if extra:
            raise UserError(f"{folder}: shard index {extra[0]} is beyond the set of {total}")
    return found


def precheck(root: Path) -> None:
    """Cheap checks that need no reading of the data (run before anything is written)."""
    if not root.exists():
        raise UserError(f"DIR {root}: does not exist")
    if not root.is_dir():
        raise UserError(f"DIR {root}: not a directory")
    if not (root / CARD_NAME).is_file():
        raise UserError(
            f"{root / CARD_NAME}: missing dataset card; `personaloom generate` writes it "
            "(or call personaloom.publish.card.write_card)"
        )
    if not any(_shards(root, c) for c in CONFIGS):
        raise UserError(f"DIR {root}: no shards under {', '.join(f'{c}/' for c in CONFIGS)}")


def collect(root: Path, log: Callable[[str], None] = lambda _: None) -> ReleaseSet:
    """Check and hash everything a release of `root` holds."""
    root = Path(root)
    precheck(root)
    card = root / CARD_NAME
    try:
        declared = card_configs(card)
    except Exception as exc:  # any YAML or card parsing failure is the card's fault
        raise UserError(f"{card}: cannot read the card's YAML metadata ({exc})") from None
    present = [c for c in CONFIGS if _shards(root, c)]
    for config in present:
        if config not in declared:
            raise UserError(
                f"{card}: `configs:` does not declare `{config}` although {root / config}/ holds "
                "shards; the card is stale: rewrite it (personaloom.publish.card.write_card)"
            )
    for config in declared:
        if config not in present:
            raise UserError(
                f"{card}: `configs:` declares `{config}` but {root / config}/ has no shards"
            )

    paths: list[tuple[str, Path]] = [(CARD_NAME, card)]
    rows: dict[str, int] = {}
    for config in present:
        shards = _shards(root, config)
        rows[config] = 0
        for shard in shards:
            rows[config] += check_shard(shard, config, str(shard))
            paths.append((f"{config}/{shard.name}", shard))
        log(f"checked {config}: {len(shards)} shard(s), {rows[config]:,} rows")
    charts = root / CHARTS_DIR
    if charts.is_dir():
        paths += [
            (f"{CHARTS_DIR}/{p.name}", p)
            for p in sorted(charts.glob("*.png"))
            if not p.name.startswith(".")
        ]

    files = []
    for rel, source in paths:
        size, sha, oid = hash_file(source)
        files.append(ReleaseFile(rel, source, size, sha, oid))
    return ReleaseSet(root, tuple(files), rows)
