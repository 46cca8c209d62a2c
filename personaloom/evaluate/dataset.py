"""Reading a corpus to evaluate on, the way its consumers read it: through `datasets`.

DATASET is a local corpus folder (what `personaloom generate` or `merge` wrote, or a
checkout of a release) or `hf://datasets/ORG/NAME@TAG` (a released tag on the Hub, or on
any Hub-protocol server `HF_ENDPOINT` points at; without `@TAG` the default branch).

A local folder is read with `datasets.load_dataset(FOLDER, CONFIG, split="train")` into a
fresh temporary cache (datasets keys a local folder on its path, not its content, and would
otherwise hand back an earlier run's rows); a folder without a card is read as plain
Parquet files. A Hub dataset's repository and tag are checked first, so that a typo exits
2 naming what is missing (and the tags there are), then it is loaded at that tag; a
revision without a `probes` config exits 2 too.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from personaloom.errors import RunError, UserError

HUB = re.compile(
    r"^hf://datasets/(?P<repo>[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*)"
    r"(?:@(?P<tag>[^@\s/][^@\s]*))?/?$"
)
PROBE_COLUMNS = (
    "probe_id",
    "persona_id",
    "after_session",
    "type",
    "question",
    "choices",
    "answer",
)
OPTIONAL_PROBE_COLUMNS = ("evidence_session",)
CONVERSATION_COLUMNS = ("persona_id", "session", "timestamp", "topic", "turns")


@dataclass(frozen=True)
class Source:
    """Where the corpus is: a local folder, or a Hub repository at a revision."""

    text: str  # as the user gave it
    path: Path | None = None
    repo_id: str | None = None
    revision: str | None = None  # the tag (or branch) asked for; None: the default branch

    @property
    def is_hub(self) -> bool:
        return self.repo_id is not None

    @property
    def label(self) -> str:
        """A short name for reports: ORG/NAME@TAG or the folder's name."""
        if self.repo_id:
            return f"{self.repo_id}@{self.revision}" if self.revision else self.repo_id
        assert self.path is not None
        return self.path.resolve().name


@dataclass
class Corpus:
    """The probes and, per persona, its sessions (by index) as plain records."""

    source: Source
    probes: list[dict[str, Any]]
    sessions: dict[str, dict[int, dict[str, Any]]] = field(default_factory=dict)
    commit: str | None = None  # the Hub commit the revision pointed at


def parse_source(text: str) -> Source:
    """DATASET: `hf://datasets/ORG/NAME[@TAG]` or a local folder; anything else exits 2."""
    text = (text or "").strip()
    if not text:
        raise UserError("DATASET: empty; give a corpus folder or hf://datasets/ORG/NAME@TAG")
    if text.startswith("hf://"):
        match = HUB.match(text)
        if match is None:
            raise UserError(f"DATASET {text}: expected hf://datasets/ORG/NAME@TAG")
        return Source(text, repo_id=match.group("repo"), revision=match.group("tag"))
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", text):
        raise UserError(f"DATASET {text}: neither hf://datasets/ORG/NAME@TAG nor a local folder")
    path = Path(text).expanduser()
    if not path.is_dir():
        raise UserError(f"DATASET {text}: no such folder")
    return Source(text, path=path)


def check_local(source: Source, *, need_conversations: bool) -> None:
    """A folder must hold probes (and, unless the context is `none`, conversations)."""
    assert source.path is not None
    if not sorted((source.path / "probes").glob("*.parquet")):
        raise UserError(
            f"DATASET {source.text}: no probes ({source.path / 'probes'}/*.parquet is missing); "
            "a corpus has probes when generated with --sessions S"
        )
    if need_conversations and not sorted((source.path / "conversations").glob("*.parquet")):
        raise UserError(
            f"DATASET {source.text}: no conversations ({source.path / 'conversations'}/*.parquet "
            "is missing) to give the model as history; use --context none to ask without it"
        )


def check_hub(source: Source) -> str | None:
    """Check that the repository and the revision exist; return the commit it points at.

    Only the refs are asked for (what every Hub-protocol server, mirrors included, serves);
    a revision without probes is then found by `datasets` (no `probes` config: exit 2).
    Skipped (None) when huggingface_hub is offline: `datasets` then reads its cache."""
    from huggingface_hub import constants

    from personaloom.publish.hub import HubClient, resolve_token

    if constants.HF_HUB_OFFLINE:
        return None
    assert source.repo_id is not None
    token, _ = resolve_token()
    client = HubClient(source.repo_id, token, max_attempts=4)
    try:
        refs = client.refs()
    except Exception as exc:
        raise client.failure("list refs", exc) from None
    if refs is None:
        raise UserError(f"DATASET {source.text}: dataset repository {source.repo_id} not found")
    revision = source.revision or "main"
    if source.revision and source.revision in refs.tags:
        return refs.tags[source.revision]
    if revision in refs.branches:
        return refs.branches[revision]
    tags = ", ".join(sorted(refs.tags)) or "none"
    raise UserError(
        f"DATASET {source.text}: tag {revision} does not exist in {source.repo_id} (tags: {tags})"
    )


def _load(source: Source, config: str, columns: Iterable[str], cache_dir: str | None):
    """One config as a `datasets.Dataset` restricted to `columns` (those present)."""
    import datasets

    datasets.disable_progress_bars()
    try:
        if source.is_hub:
            ds = datasets.load_dataset(
                source.repo_id, config, revision=source.revision, split="train"
            )
        else:
            assert source.path is not None
            if (source.path / "README.md").is_file():
                ds = datasets.load_dataset(
                    str(source.path), config, split="train", cache_dir=cache_dir
                )
            else:
                files = sorted(str(p) for p in (source.path / config).glob("*.parquet"))
                ds = datasets.load_dataset(
                    "parquet", data_files=files, split="train", cache_dir=cache_dir
                )
    except (ValueError, FileNotFoundError) as exc:
        # A card without this config, or files missing under it: the user's input.
        first = " ".join(str(exc).split())[:300]
        what = "no probes" if config == "probes" else f"no {config}"
        raise UserError(
            f"DATASET {source.text}: {what} (cannot read the {config} config: {first})"
        ) from None
    except Exception as exc:  # network, server: not the user's fault
        first = " ".join(str(exc).split())[:300]
        raise RunError(f"DATASET {source.text}: loading {config} failed: {first}") from exc
    keep = [c for c in columns if c in ds.column_names]
    return ds.select_columns(keep)


def load_corpus(source: Source, *, need_conversations: bool = True) -> Corpus:
    """Probes and sessions of the corpus (UserError naming what is missing)."""
    commit = None
    if source.is_hub:
        commit = check_hub(source)
    else:
        check_local(source, need_conversations=need_conversations)
    with tempfile.TemporaryDirectory(prefix="personaloom-eval-") as cache:
        local_cache = None if source.is_hub else cache
        probes_ds = _load(source, "probes", PROBE_COLUMNS + OPTIONAL_PROBE_COLUMNS, local_cache)
        missing = [c for c in PROBE_COLUMNS if c not in probes_ds.column_names]
        if missing:
            raise UserError(
                f"DATASET {source.text}: the probes config lacks column(s) {', '.join(missing)}"
            )
        probes = probes_ds.to_list()
        sessions: dict[str, dict[int, dict[str, Any]]] = {}
        if need_conversations:
            talk = _load(source, "conversations", CONVERSATION_COLUMNS, local_cache)
            for row in talk.to_list():
                sessions.setdefault(str(row["persona_id"]), {})[int(row["session"])] = row
    if not probes:
        raise UserError(f"DATASET {source.text}: the probes config has no rows")
    return Corpus(source, probes, sessions, commit)
