"""Releasing into a local git repository shaped like a Hub dataset repo.

The repository (created with branch `main` if absent) gets one commit per release and an
annotated tag on it. Files are committed as they are: blobs are written with
`git hash-object --no-filters`, so no LFS or line-ending filter rewrites them even where
git-lfs is installed, and the tree is built in a private index (the user's index is never
touched). The work tree then follows `main` by a fast-forward merge, which refuses rather
than overwrite local changes.

Idempotency: the released paths at the tag (or at `main`) are compared, blob id by blob
id, with the files to release: equal content makes no commit; an existing tag holding
other content is refused.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path

from personaloom.errors import RunError, UserError
from personaloom.publish.release.files import MANAGED_DIRS, ReleaseSet
from personaloom.publish.release.outcome import Outcome, describe_difference, is_same
from personaloom.state.lock import RunLock
from personaloom.state.run_state import can_create_in

# The .gitattributes the Hub puts in a new dataset repo (LFS patterns), so a mirror of it
# pushed to the Hub behaves the same. The local repo itself stores plain blobs.
HUB_GITATTRIBUTES = """\
*.7z filter=lfs diff=lfs merge=lfs -text
*.arrow filter=lfs diff=lfs merge=lfs -text
*.bin filter=lfs diff=lfs merge=lfs -text
*.bz2 filter=lfs diff=lfs merge=lfs -text
*.ckpt filter=lfs diff=lfs merge=lfs -text
*.ftz filter=lfs diff=lfs merge=lfs -text
*.gz filter=lfs diff=lfs merge=lfs -text
*.h5 filter=lfs diff=lfs merge=lfs -text
*.joblib filter=lfs diff=lfs merge=lfs -text
*.lfs.* filter=lfs diff=lfs merge=lfs -text
*.lz4 filter=lfs diff=lfs merge=lfs -text
*.mds filter=lfs diff=lfs merge=lfs -text
*.mlmodel filter=lfs diff=lfs merge=lfs -text
*.model filter=lfs diff=lfs merge=lfs -text
*.msgpack filter=lfs diff=lfs merge=lfs -text
*.npy filter=lfs diff=lfs merge=lfs -text
*.npz filter=lfs diff=lfs merge=lfs -text
*.onnx filter=lfs diff=lfs merge=lfs -text
*.ot filter=lfs diff=lfs merge=lfs -text
*.parquet filter=lfs diff=lfs merge=lfs -text
*.pb filter=lfs diff=lfs merge=lfs -text
*.pickle filter=lfs diff=lfs merge=lfs -text
*.pkl filter=lfs diff=lfs merge=lfs -text
*.pt filter=lfs diff=lfs merge=lfs -text
*.pth filter=lfs diff=lfs merge=lfs -text
*.rar filter=lfs diff=lfs merge=lfs -text
*.safetensors filter=lfs diff=lfs merge=lfs -text
saved_model/**/* filter=lfs diff=lfs merge=lfs -text
*.tar.* filter=lfs diff=lfs merge=lfs -text
*.tar filter=lfs diff=lfs merge=lfs -text
*.tflite filter=lfs diff=lfs merge=lfs -text
*.tgz filter=lfs diff=lfs merge=lfs -text
*.wasm filter=lfs diff=lfs merge=lfs -text
*.xz filter=lfs diff=lfs merge=lfs -text
*.zip filter=lfs diff=lfs merge=lfs -text
*.zst filter=lfs diff=lfs merge=lfs -text
*tfevents* filter=lfs diff=lfs merge=lfs -text
# Audio files - uncompressed
*.pcm filter=lfs diff=lfs merge=lfs -text
*.sam filter=lfs diff=lfs merge=lfs -text
*.raw filter=lfs diff=lfs merge=lfs -text
# Audio files - compressed
*.aac filter=lfs diff=lfs merge=lfs -text
*.flac filter=lfs diff=lfs merge=lfs -text
*.mp3 filter=lfs diff=lfs merge=lfs -text
*.ogg filter=lfs diff=lfs merge=lfs -text
*.wav filter=lfs diff=lfs merge=lfs -text
# Image files - uncompressed
*.bmp filter=lfs diff=lfs merge=lfs -text
*.gif filter=lfs diff=lfs merge=lfs -text
*.png filter=lfs diff=lfs merge=lfs -text
*.tiff filter=lfs diff=lfs merge=lfs -text
# Image files - compressed
*.jpg filter=lfs diff=lfs merge=lfs -text
*.jpeg filter=lfs diff=lfs merge=lfs -text
*.webp filter=lfs diff=lfs merge=lfs -text
# Video files - compressed
*.mp4 filter=lfs diff=lfs merge=lfs -text
*.webm filter=lfs diff=lfs merge=lfs -text
"""

BRANCH = "main"
LOCK_NAME = "personaloom-release.lock"


class Git:
    def __init__(self, repo: Path, env: Mapping[str, str] | None = None) -> None:
        self.repo = repo
        self.env = dict(env or os.environ)

    def run(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        env: Mapping[str, str] | None = None,
    ) -> str:
        try:
            done = subprocess.run(
                ["git", "-C", str(self.repo), *args],
                input=input,
                capture_output=True,
                text=True,
                env={**self.env, **(env or {})},
                check=False,
            )
        except FileNotFoundError:
            raise RunError("git is not installed; a local release target needs git") from None
        if check and done.returncode != 0:
            detail = (done.stderr or done.stdout).strip().splitlines()
            raise RunError(
                f"git {args[0]} in {self.repo} failed: {detail[-1] if detail else done.returncode}"
            )
        return done.stdout if check else (done.stdout if done.returncode == 0 else "")

    def verify(self, rev: str) -> str | None:
        out = self.run("rev-parse", "-q", "--verify", f"{rev}^{{commit}}", check=False).strip()
        return out or None

    def files(self, commit: str) -> dict[str, str]:
        """path -> blob id of every file in `commit`."""
        out = self.run("ls-tree", "-r", "-z", "--full-tree", commit)
        files = {}
        for entry in out.split("\0"):
            if not entry:
                continue
            meta, path = entry.split("\t", 1)
            _mode, kind, oid = meta.split()
            if kind == "blob":
                files[path] = oid
        return files


def check_target(target: Path) -> None:
    """Refuse a local target that cannot take a release (before anything is written)."""
    if target.exists() and not target.is_dir():
        raise UserError(f"--to {target}: exists and is not a directory")
    if not target.exists():
        parent = target.parent
        while not parent.exists():
            parent = parent.parent
        if not parent.is_dir() or not can_create_in(parent):
            raise UserError(
                f"--to {target}: cannot create it ({parent} is not a writable directory)"
            )
        return
    if not any(target.iterdir()):
        return  # an empty folder: the repository is created there
    git = Git(target)
    top = git.run("rev-parse", "--show-toplevel", check=False).strip()
    if not top or Path(top).resolve() != target.resolve():
        raise UserError(
            f"--to {target}: exists, is not empty and is not the top of a git repository; "
            "choose a new folder or an existing release repository"
        )
    head = git.run("symbolic-ref", "-q", "HEAD", check=False).strip()
    if head != f"refs/heads/{BRANCH}":
        raise UserError(
            f"--to {target}: the checked-out branch is {head or 'detached'}; releases go to "
            f"`{BRANCH}`: run `git -C {target} switch {BRANCH}`"
        )


def _identity(git: Git) -> dict[str, str]:
    """Author/committer for release commits and tags when the repo has none configured."""
    if git.run("config", "user.email", check=False).strip():
        return {}
    return {
        "GIT_AUTHOR_NAME": "personaloom",
        "GIT_AUTHOR_EMAIL": "personaloom@localhost",
        "GIT_COMMITTER_NAME": "personaloom",
        "GIT_COMMITTER_EMAIL": "personaloom@localhost",
    }


def _build_tree(git: Git, head: str | None, release: ReleaseSet) -> str:
    index = (
        Path(git.run("rev-parse", "--absolute-git-dir").strip())
        / f"personaloom-index-{uuid.uuid4().hex[:8]}"
    )
    env = {"GIT_INDEX_FILE": str(index)}
    try:
        if head:
            git.run("read-tree", head, env=env)
        else:
            git.run("read-tree", "--empty", env=env)
        git.run(
            "rm",
            "-r",
            "--cached",
            "-q",
            "--ignore-unmatch",
            "--",
            "README.md",
            *MANAGED_DIRS,
            env=env,
        )
        sources = "\n".join(str(f.source.resolve()) for f in release.files) + "\n"
        oids = git.run("hash-object", "-w", "--no-filters", "--stdin-paths", input=sources).split()
        for f, oid in zip(release.files, oids, strict=True):
            if oid != f.git_oid:
                raise RunError(f"{f.source}: changed while being released; re-run the release")
        entries = [f"100644 {f.git_oid}\t{f.path}" for f in release.files]
        present = git.run("ls-files", "--cached", "--", ".gitattributes", env=env).strip()
        if not present:
            oid = git.run(
                "hash-object", "-w", "--no-filters", "--stdin", input=HUB_GITATTRIBUTES
            ).strip()
            entries.append(f"100644 {oid}\t.gitattributes")
        git.run("update-index", "--add", "--index-info", input="\n".join(entries) + "\n", env=env)
        return git.run("write-tree", env=env).strip()
    finally:
        index.unlink(missing_ok=True)


def publish(
    release: ReleaseSet,
    target: Path,
    *,
    tag: str | None,
    message: str,
    description: str,
    log: Callable[[str], None],
) -> Outcome:
    target = Path(target)
    if not target.exists() or not any(target.iterdir()):
        target.mkdir(parents=True, exist_ok=True)
        Git(target).run("init", "-q", "-b", BRANCH)
        log(f"created git repository {target} (branch {BRANCH})")
    git = Git(target)
    git_dir = Path(git.run("rev-parse", "--absolute-git-dir").strip())
    with RunLock(git_dir / LOCK_NAME, command=f"personaloom release --to {target}"):
        git.env.update(_identity(git))
        if tag:
            tagged = git.verify(f"refs/tags/{tag}")
            if tagged:
                files = git.files(tagged)
                if is_same(release, files):
                    return Outcome(str(target), tagged, tag, made_commit=False, made_tag=False)
                raise UserError(
                    f"--tag {tag}: already exists in {target} with different content "
                    f"({describe_difference(release, files)}); releases are immutable: choose a new tag"
                )
        head = git.verify(f"refs/heads/{BRANCH}")
        made_commit = False
        if head and is_same(release, git.files(head)):
            commit = head
            log(f"{target}: {BRANCH} already holds this content; no new commit")
        else:
            tree = _build_tree(git, head, release)
            parents = ["-p", head] if head else []
            commit = git.run(
                "commit-tree", tree, *parents, "-m", message, "-m", description
            ).strip()
            try:
                git.run("merge", "--ff-only", "-q", commit)
            except RunError as exc:
                raise RunError(
                    f"{exc}; {target} has local changes in the work tree that the release would "
                    "overwrite: commit or discard them and re-run"
                ) from None
            made_commit = True
            log(f"{target}: committed {commit[:12]} on {BRANCH}")
        if tag:
            git.run("tag", "-a", tag, "-m", f"{message}\n\n{description}", commit)
            log(f"{target}: tagged {commit[:12]} as {tag}")
        return Outcome(str(target), commit, tag, made_commit=made_commit, made_tag=bool(tag))
