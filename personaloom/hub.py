"""A thin client over huggingface_hub 2.x for releasing a dataset repo.

What it adds to `HfApi`:
- the token comes from `HF_TOKEN` (or `HUGGING_FACE_HUB_TOKEN`), else a Prefect Secret
  block `personaloom-hf-token` (Prefect imported only then), else the saved `hf auth
  login` token; it is never printed and is scrubbed from every error message;
- every call is retried on 429 and 5xx answers and on connection failures, waiting what
  `Retry-After` says (capped) or an exponential backoff, a bounded number of times;
- remote state comes back as plain data: refs, and per revision the files with the ids
  needed to compare them with local files (git blob id, or sha256 for LFS files).

`HF_ENDPOINT` is read when the client is made (huggingface_hub itself reads it once, at
import), so a test or a mirror can point the client elsewhere.
"""

from __future__ import annotations

import email.utils
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from personaloom import __version__
from personaloom.errors import RunError, UserError

PREFECT_SECRET_BLOCK = "personaloom-hf-token"
RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
T = TypeVar("T")


# -- token -----------------------------------------------------------------------------
def _prefect_configured() -> bool:
    """Whether a Prefect API is configured (so a Secret block can exist at all)."""
    if os.environ.get("PREFECT_API_URL"):
        return True
    home = Path(os.environ.get("PREFECT_HOME") or Path.home() / ".prefect")
    try:
        return "PREFECT_API_URL" in (home / "profiles.toml").read_text()
    except OSError:
        return False


def _prefect_secret(name: str = PREFECT_SECRET_BLOCK) -> str | None:
    if not _prefect_configured():
        return None
    try:
        from prefect.blocks.system import Secret

        value = Secret.load(name, _sync=True).get()
    except Exception:  # no block, no server, no prefect: fall through to other sources
        return None
    return str(value) if value else None


def resolve_token() -> tuple[str | None, str]:
    """(token, where it came from); the token itself is never shown."""
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        if os.environ.get(var):
            return os.environ[var], var
    secret = _prefect_secret()
    if secret:
        return secret, f"Prefect Secret block {PREFECT_SECRET_BLOCK}"
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


def _retry_after(headers: Any) -> float | None:
    value = headers.get("Retry-After") if headers is not None else None
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _network_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for module in ("httpx2", "httpx"):
        try:
            errors.append(__import__(module).TransportError)
        except (ImportError, AttributeError):
            continue
    return tuple(errors)


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
        self.max_wait = max_wait
        self.base_wait = base_wait
        self.log = log
        self.sleep = sleep
        self.retries = 0

    # -- plumbing ----------------------------------------------------------------------
    def scrub(self, text: str) -> str:
        from personaloom.secrets import redact

        if self._token and len(self._token) >= 4:
            text = text.replace(self._token, "***")
        return redact(text)

    def call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run `fn`, retrying Hub throttling, server errors and network failures.

        huggingface_hub wraps some failures (e.g. an LFS upload in a worker thread) in a
        RuntimeError: the cause chain is searched for the HTTP or network error.
        """
        for attempt in range(1, self.max_attempts + 1):
            try:
                return fn(*args, **kwargs)
            except Exception as exc:
                retry = self._retryable(exc)
                if retry is None or attempt == self.max_attempts:
                    raise
                reason, hinted = retry
            backoff = self.base_wait * 2 ** (attempt - 1)
            wait = min(self.max_wait, hinted if hinted is not None else backoff)
            self.retries += 1
            self.log(
                f"{what}: {reason}; retrying in {wait:.1f}s ({attempt}/{self.max_attempts - 1})"
            )
            self.sleep(wait)
        raise AssertionError("unreachable")

    @staticmethod
    def _retryable(exc: BaseException) -> tuple[str, float | None] | None:
        """(reason, Retry-After seconds) when `exc` or a cause of it is worth a retry."""
        from huggingface_hub.errors import HfHubHTTPError

        network = _network_errors()
        seen: set[int] = set()
        current: BaseException | None = exc
        while current is not None and id(current) not in seen:
            seen.add(id(current))
            if isinstance(current, HfHubHTTPError):
                response = current.response
                status = response.status_code if response is not None else None
                if status in RETRY_STATUS:
                    return f"Hub answered {status}", _retry_after(response.headers)
                return None
            if isinstance(current, network):
                return f"network error ({type(current).__name__})", None
            current = current.__cause__ or current.__context__
        return None

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
