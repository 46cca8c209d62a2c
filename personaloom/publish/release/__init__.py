"""`personaloom release DIR --to TARGET [--tag vX.Y.Z]`: publish a dataset folder.

TARGET is `hf://datasets/ORG/NAME` (a Hugging Face Hub dataset repo, see `remote.py`) or a
local path (a git repository shaped like a Hub repo, see `local.py`). Either way:
- options are validated before anything is written (UserError, exit 2);
- every shard is re-read and checked against the contract and the card must exist and
  match the configs present (`files.py`), before anything is uploaded or committed;
- a release is idempotent: the same content under the same tag is a no-op, a finished
  commit is not repeated, an interrupted one is resumed; other content under an existing
  tag is refused;
- `DIR/.personaloom/` (run state) is never released;
- a lock (`DIR/.personaloom/release.lock`) keeps a second release of DIR out while one
  runs, and a release refuses while a generation run holds `DIR/.personaloom/lock`.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from personaloom import __version__
from personaloom.errors import UserError
from personaloom.publish.hub import TokenSource
from personaloom.publish.release.files import ReleaseSet, collect, precheck
from personaloom.publish.release.outcome import Outcome
from personaloom.state.lock import RELEASE_LOCK, RUN_LOCK, RunLock

__all__ = [
    "HubTarget",
    "LocalTarget",
    "Outcome",
    "ReleaseSet",
    "collect",
    "parse_tag",
    "parse_target",
    "release",
]

STATE_DIR = ".personaloom"
TAG = re.compile(r"^v(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z][0-9A-Za-z.-]*)?$")
HUB = re.compile(
    r"^hf://datasets/(?P<org>[A-Za-z0-9][A-Za-z0-9._-]*)/(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)/?$"
)
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


@dataclass(frozen=True)
class HubTarget:
    repo_id: str

    def __str__(self) -> str:
        return f"hf://datasets/{self.repo_id}"


@dataclass(frozen=True)
class LocalTarget:
    path: Path

    def __str__(self) -> str:
        return str(self.path)


def parse_target(text: str) -> HubTarget | LocalTarget:
    """`--to`: hf://datasets/ORG/NAME or a local path; anything else is a UserError."""
    text = (text or "").strip()
    if not text:
        raise UserError("--to: empty; give hf://datasets/ORG/NAME or a local folder")
    if text.lower().startswith(("hf:", "hf//")) and not text.startswith("hf://"):
        raise UserError(f"--to {text}: expected hf://datasets/ORG/NAME (a dataset repo id)")
    if text.startswith("hf://"):
        match = HUB.match(text)
        bad = match is None or any(
            "--" in part or ".." in part or len(part) > 96 or part.endswith((".", "-"))
            for part in (match.group("org"), match.group("name"))
        )
        if bad:
            raise UserError(f"--to {text}: expected hf://datasets/ORG/NAME (a dataset repo id)")
        return HubTarget(f"{match.group('org')}/{match.group('name')}")  # type: ignore[union-attr]
    if SCHEME.match(text):
        raise UserError(f"--to {text}: neither hf://datasets/ORG/NAME nor a local path")
    if "\0" in text:
        raise UserError("--to: not a valid path")
    return LocalTarget(Path(text).expanduser())


def parse_tag(text: str | None) -> str | None:
    if text is None:
        return None
    if not TAG.match(text):
        raise UserError(f"--tag {text}: must look like vX.Y.Z (e.g. v1.0.0)")
    return text


def _description(out_dir: Path, release: ReleaseSet) -> str:
    manifest: dict[str, Any] = {}
    try:
        manifest = json.loads((out_dir / STATE_DIR / "manifest.json").read_text())
    except (OSError, json.JSONDecodeError):
        pass
    lines = [
        f"content sha256: {release.digest}",
        "rows: " + ", ".join(f"{c} {n:,}" for c, n in release.rows.items()),
        f"released by personaloom {__version__}",
    ]
    if manifest.get("fingerprint"):
        lines.append(f"run fingerprint: {manifest['fingerprint']}")
    if manifest.get("taxonomy"):
        lines.append(f"taxonomy: {manifest['taxonomy']}")
    if manifest.get("model"):
        lines.append(f"model: {manifest['model']}")
    return "\n".join(lines)


def _check_run_finished(out_dir: Path) -> None:
    """Refuse a folder whose generate (or merge) run has not finished: its shards and card
    may be a mix of two states (e.g. a run killed while it wrote its final shards)."""
    path = out_dir / STATE_DIR / "manifest.json"
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        return  # a dataset folder made some other way: the shard and card checks decide
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: unreadable run manifest ({exc})") from None
    status = manifest.get("status") if isinstance(manifest, dict) else None
    if status not in (None, "complete"):
        raise UserError(
            f"DIR {out_dir}: its run is not complete ({path} says status {status!r}); re-run "
            "the same `personaloom generate` (or merge) command to finish it, then release"
        )


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def release(
    out_dir: str | Path,
    to: str,
    *,
    tag: str | None = None,
    private: bool = False,
    create_pr: bool = False,
    message: str | None = None,
    log: Callable[[str], None] = _stderr,
    token_source: TokenSource | None = None,
) -> Outcome:
    """Release the dataset folder `out_dir` to `to`; see the module docstring.

    `token_source` is a further place to find the Hub token (the flows pass the Prefect
    Secret block); `HF_TOKEN` in the environment comes first."""
    out_dir = Path(out_dir)
    target = parse_target(to)
    tag = parse_tag(tag)
    if message is not None and not message.strip():
        raise UserError("--message: empty")
    if isinstance(target, LocalTarget):
        from personaloom.publish.release import local

        if create_pr:
            raise UserError("--create-pr: only for hf://datasets/ORG/NAME targets")
        resolved = target.path.resolve()
        if resolved == out_dir.resolve() or out_dir.resolve() in resolved.parents:
            raise UserError(f"--to {target}: must not be DIR {out_dir} or inside it")
        local.check_target(target.path)
        if private:
            log("note: --private has no effect on a local target")
    precheck(out_dir)
    _check_run_finished(out_dir)
    token = None
    if isinstance(target, HubTarget):
        from personaloom.publish.hub import require_online, resolve_token

        require_online()
        token, source = resolve_token(token_source)
        if not token:
            raise UserError(
                f"--to {target}: no Hugging Face token; set HF_TOKEN or create the Prefect "
                "Secret block personaloom-hf-token"
            )
        log(f"using the Hugging Face token from {source}")

    state = out_dir / STATE_DIR
    running = RunLock(state / RUN_LOCK).holder() if (state / RUN_LOCK).exists() else None
    if running is not None and running.get("pid") != os.getpid():
        raise UserError(
            f"DIR {out_dir}: a personaloom run is writing it (pid {running.get('pid')} on "
            f"{running.get('hostname')}); release it when that run has finished"
        )
    with RunLock(state / RELEASE_LOCK, command=f"personaloom release --to {target}"):
        release_set = collect(out_dir, log)
        log(f"release content sha256:{release_set.digest[:16]} ({len(release_set.files)} files)")
        subject = message or (f"Release {tag}" if tag else "Release dataset")
        description = _description(out_dir, release_set)
        if isinstance(target, LocalTarget):
            from personaloom.publish.release import local

            return local.publish(
                release_set, target.path, tag=tag, message=subject, description=description, log=log
            )
        from personaloom.publish.hub import HubClient
        from personaloom.publish.release import remote

        client = HubClient(target.repo_id, token, log=log)
        return remote.publish(
            release_set,
            client,
            tag=tag,
            message=subject,
            description=description,
            private=private,
            create_pr=create_pr,
            log=log,
        )
