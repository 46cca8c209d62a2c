"""What a release did, and how two versions of a release differ."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from personaloom.publish.release.files import ReleaseFile, ReleaseSet, is_managed


@dataclass(frozen=True)
class Outcome:
    target: str
    commit: str | None
    tag: str | None
    made_commit: bool
    made_tag: bool
    pr_url: str | None = None
    note: str = ""

    @property
    def noop(self) -> bool:
        return not self.made_commit and not self.made_tag


def _same_git(local: ReleaseFile, remote: Any) -> bool:
    return local.git_oid == remote


def differences(
    release: ReleaseSet,
    remote: Mapping[str, Any],
    same: Callable[[ReleaseFile, Any], bool] = _same_git,
) -> tuple[list[str], list[str], list[str]]:
    """(only here, only there, changed) over the released paths."""
    theirs = {p: v for p, v in remote.items() if is_managed(p)}
    ours = release.by_path
    added = sorted(set(ours) - set(theirs))
    removed = sorted(set(theirs) - set(ours))
    changed = sorted(p for p in set(ours) & set(theirs) if not same(ours[p], theirs[p]))
    return added, removed, changed


def is_same(
    release: ReleaseSet,
    remote: Mapping[str, Any],
    same: Callable[[ReleaseFile, Any], bool] = _same_git,
) -> bool:
    return differences(release, remote, same) == ([], [], [])


def describe_difference(
    release: ReleaseSet,
    remote: Mapping[str, Any],
    same: Callable[[ReleaseFile, Any], bool] = _same_git,
) -> str:
    added, removed, changed = differences(release, remote, same)
    parts = []
    for label, paths in (("changed", changed), ("new", added), ("gone", removed)):
        if paths:
            shown = ", ".join(paths[:3]) + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")
            parts.append(f"{label}: {shown}")
    return "; ".join(parts) or "no difference"
