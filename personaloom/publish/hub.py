"""A thin client over huggingface_hub 2.x for releasing a dataset repo.

What it adds to `HfApi`:
- the token comes from `HF_TOKEN` (or `HUGGING_FACE_HUB_TOKEN`), else from a source the
  caller hands in (the flows pass the Prefect Secret block `personaloom-hf-token`), else
  the saved `hf auth login` token; it is never printed and is scrubbed from every error
  message;
- every call is retried on 429 and 5xx answers and on connection failures, waiting what
  `Retry-After` says (capped) or an exponential backoff, a bounded number of times (the
  policy shared with the OpenAI engine, `personaloom.retry`);
- remote state comes back as plain data: refs, and per revision the files with the ids
  needed to compare them with local files (git blob id, or sha256 for LFS files).

`HF_ENDPOINT` is read when the client is made (huggingface_hub itself reads it once, at
import), so a test or a mirror can point the client elsewhere.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from personaloom import __version__
from personaloom.errors import RunError, UserError
from personaloom.retry import Retry, RetryPolicy, classify

T = TypeVar("T")


# -- token ---------------------------------------------------------------------------
# A further place to look for the token, tried after the environment and before the saved
# login: (label, getter). The flows pass the Prefect Secret block this way, so the library
# itself never imports Prefect.
TokenSource = tuple[str, Callable[[], str | None]]


def resolve_token(extra: TokenSource | None = None) -> tuple[str | None, str]:
    """(token, where it came from); the token itself is never shown."""
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        if os.environ.get(var):
            return os.environ[var], var
    if extra is not None:
        label, getter = extra
        value = getter()
        if value:
            return value, label
    from huggingface_hub import get_token

    saved = get_token()
    return (saved, "saved Hugging Face login") if saved else (None, "")


# -- remote state ----------------------------------------------------------------------
@dataclass(frozen=True)
class RemoteFile:
    path: str
    blob_id: str
    sha256: str | None  # LFS files only
    size: int


@dataclass(frozen=True)
class Refs:
    branches: dict[str, str]
    tags: dict[str, str]
    pull_requests: dict[str, str]  # ref (refs/pr/N) -> commit


@dataclass(frozen=True)
class CommitResult:
    oid: str
    url: str
    pr_url: str | None = None


class HubClient:
    """One dataset repo on a Hub endpoint, with retries and token hygiene."""

    def __init__(
        self,
        repo_id: str,
        token: str | None,
        *,
        endpoint: str | None = None,
        max_attempts: int = 6,
        max_wait: float = 60.0,
        base_wait: float = 1.0,
        log: Callable[[str], None] = print,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        from huggingface_hub import HfApi

        self.repo_id = repo_id
        self.repo_type = "dataset"
        self._token = token
        self.endpoint = (endpoint or os.environ.get("HF_ENDPOINT") or "").rstrip("/") or None
        self.api = HfApi(
            endpoint=self.endpoint,
            token=token,
            library_name="personaloom",
            library_version=__version__,
        )
        self.max_attempts = max_attempts
        self.policy = RetryPolicy(
            attempts=max_attempts, base_wait=base_wait, max_wait=max_wait, sleep=sleep
        )
        self.log = log
        self.retries = 0

    # -- plumbing ----------------------------------------------------------------------
    def scrub(self, text: str) -> str:
        from personaloom.secrets import redact

        if self._token and len(self._token) >= 4:
            text = text.replace(self._token, "***")
        return redact(text)

    def call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run `fn` under the shared retry policy (personaloom.retry): Hub throttling,
        server errors and network failures are retried (huggingface_hub wraps some failures,
        e.g. an LFS upload in a worker thread, in a RuntimeError: `classify` searches the
        cause chain); after the last attempt the exception propagates (see `failure`)."""

        def on_retry(attempt: int, retry: Retry, wait: float) -> None:
            self.retries += 1
            reason = f"Hub answered {retry.status}" if retry.status else retry.reason
            self.log(
                f"{what}: {reason}; retrying in {wait:.1f}s ({attempt}/{self.max_attempts - 1})"
            )

        return self.policy.call(lambda: fn(*args, **kwargs), classify=classify, on_retry=on_retry)

    def failure(self, what: str, exc: BaseException) -> RunError:
        """A RunError for a failed call, naming it, with the token scrubbed."""
        from huggingface_hub.errors import HfHubHTTPError

        status = ""
        cause: BaseException | None = exc
        while cause is not None and not isinstance(cause, HfHubHTTPError):
            cause = cause.__cause__
        if isinstance(cause, HfHubHTTPError) and cause.response is not None:
            status = f" (HTTP {cause.response.status_code})"
            exc = cause
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        first = lines[0].rstrip(":") if lines else type(exc).__name__
        server = getattr(exc, "server_message", None)
        if server and server.strip() not in first:
            first = f"{first}: {server.strip()}"
        if status in (" (HTTP 401)", " (HTTP 403)"):
            first += "; check that the token has write access to this repository"
        return RunError(self.scrub(f"{what} on {self.repo_id} failed{status}: {first}"))

    # -- reads -------------------------------------------------------------------------
    def refs(self, *, include_prs: bool = False) -> Refs | None:
        """Branches, tags (and PR refs) -> commit ids; None if the repo does not exist."""
        from huggingface_hub.errors import RepositoryNotFoundError

        try:
            refs = self.call(
                "list refs",
                self.api.list_repo_refs,
                self.repo_id,
                repo_type=self.repo_type,
                include_pull_requests=include_prs,
            )
        except RepositoryNotFoundError:
            return None
        return Refs(
            branches={r.name: r.target_commit for r in refs.branches},
            tags={r.name: r.target_commit for r in refs.tags},
            pull_requests={r.ref: r.target_commit for r in (refs.pull_requests or [])},
        )

    def files(self, revision: str) -> dict[str, RemoteFile]:
        from huggingface_hub.hf_api import RepoFile

        def listing() -> list[Any]:
            return list(
                self.api.list_repo_tree(
                    self.repo_id, repo_type=self.repo_type, revision=revision, recursive=True
                )
            )

        entries = self.call("list files", listing)
        return {
            e.path: RemoteFile(e.path, e.blob_id, e.lfs.sha256 if e.lfs else None, e.size)
            for e in entries
            if isinstance(e, RepoFile)
        }

    # -- writes ------------------------------------------------------------------------
    def create_repo(self, *, private: bool) -> None:
        self.call(
            "create repo",
            self.api.create_repo,
            self.repo_id,
            repo_type=self.repo_type,
            private=private,
            exist_ok=True,
        )

    def upload(
        self,
        folder: Path,
        paths: Sequence[str],
        *,
        delete: Sequence[str],
        message: str,
        description: str,
        create_pr: bool,
        parent_commit: str | None,
    ) -> CommitResult:
        """Commit exactly `paths` of `folder` (and delete `delete`) with `upload_folder`."""
        info = self.call(
            "upload",
            self.api.upload_folder,
            repo_id=self.repo_id,
            repo_type=self.repo_type,
            folder_path=str(folder),
            allow_patterns=list(paths),
            ignore_patterns=[".personaloom/*", ".personaloom/**"],
            delete_patterns=list(delete) or None,
            commit_message=message,
            commit_description=description,
            create_pr=create_pr,
            parent_commit=parent_commit,
        )
        return CommitResult(oid=info.oid, url=str(info.commit_url), pr_url=info.pr_url)

    def create_tag(self, tag: str, revision: str, message: str) -> None:
        self.call(
            "create tag",
            self.api.create_tag,
            self.repo_id,
            repo_type=self.repo_type,
            tag=tag,
            revision=revision,
            tag_message=message,
            exist_ok=False,
        )


def require_online() -> None:
    """Refuse early when huggingface_hub was told to stay offline."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        raise UserError("--to hf://...: HF_HUB_OFFLINE is set; unset it to release to the Hub")
