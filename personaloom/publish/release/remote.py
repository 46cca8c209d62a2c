"""Releasing to a Hugging Face Hub dataset repo (`hf://datasets/ORG/NAME`).

Order of work, each step safe to repeat:
1. read the refs; if the tag exists, compare the files at the tag with the release:
   equal -> done (nothing written), different -> refused (UserError);
2. create the repo if missing (`exist_ok=True`);
3. compare the files on `main` with the release: equal -> no commit;
   otherwise `upload_folder` with exactly the released paths (stale shards and charts
   deleted in the same commit) and `parent_commit` = the `main` we compared with, so a
   concurrent change fails the commit instead of being overwritten;
4. tag the commit.
An interrupted upload is resumed by re-running: LFS objects already on the Hub are not
sent again (the Hub's batch answer says so), and a finished commit whose tag is missing
is found equal in step 3 and only tagged.

With `--create-pr` the commit opens a pull request instead (or finds an open one holding
the same content) and the tag is left for after the merge: re-run without `--create-pr`
to tag `main`.
"""

from __future__ import annotations

from collections.abc import Callable

from personaloom.errors import RunError, UserError
from personaloom.publish.hub import CommitResult, HubClient, RemoteFile
from personaloom.publish.release.files import ReleaseFile, ReleaseSet, is_managed
from personaloom.publish.release.outcome import Outcome, describe_difference, is_same

BRANCH = "main"


def same_file(local: ReleaseFile, remote: RemoteFile) -> bool:
    if remote.sha256 is not None:
        return local.sha256 == remote.sha256
    return local.git_oid == remote.blob_id


def _same(release: ReleaseSet, files: dict[str, RemoteFile]) -> bool:
    return is_same(release, files, same_file)


def publish(
    release: ReleaseSet,
    client: HubClient,
    *,
    tag: str | None,
    message: str,
    description: str,
    private: bool,
    create_pr: bool,
    log: Callable[[str], None],
) -> Outcome:

    where = f"hf://datasets/{client.repo_id}"
    try:
        refs = client.refs(include_prs=create_pr)
        if refs is not None and tag and tag in refs.tags:
            files = client.files(refs.tags[tag])
            if _same(release, files):
                return Outcome(where, refs.tags[tag], tag, made_commit=False, made_tag=False)
            raise UserError(
                f"--tag {tag}: already exists on {where} with different content "
                f"({describe_difference(release, files, same_file)}); releases are immutable: "
                "choose a new tag"
            )
        if refs is None:
            client.create_repo(private=private)
            log(f"{where}: created ({'private' if private else 'public'})")
            refs = client.refs(include_prs=create_pr)
            if refs is None:
                raise RunError(f"{where}: the repository was created but cannot be read back")
        elif private:
            log(f"{where}: exists already; --private does not change its visibility")

        head = refs.branches.get(BRANCH)
        main_files = client.files(head) if head else {}
        # Files of earlier releases that this one no longer has are deleted by its commit.
        stale = sorted(p for p in main_files if is_managed(p) and p not in release.by_path)

        def upload(*, create_pr: bool, parent_commit: str | None) -> CommitResult:
            return client.upload(
                release.root,
                release.paths,
                delete=stale,
                message=message,
                description=description,
                create_pr=create_pr,
                parent_commit=parent_commit,
            )

        if create_pr:
            for ref, commit in sorted(refs.pull_requests.items()):
                if _same(release, client.files(commit)):
                    note = f"already proposed in {ref}; merge it, then re-run without --create-pr to tag it"
                    return Outcome(
                        where, commit, None, made_commit=False, made_tag=False, note=note
                    )
            if _same(release, main_files):
                return _tag(
                    client, release, head, tag, message, description, where, log, created=False
                )
            result = upload(create_pr=True, parent_commit=None)
            log(f"{where}: opened pull request {result.pr_url}")
            note = (
                f"tag {tag} not created: merge the pull request, then re-run without --create-pr to tag it"
                if tag
                else ""
            )
            return Outcome(
                where,
                result.oid,
                None,
                made_commit=True,
                made_tag=False,
                pr_url=result.pr_url,
                note=note,
            )

        if head and _same(release, main_files):
            log(f"{where}: {BRANCH} already holds this content; no new commit")
            return _tag(client, release, head, tag, message, description, where, log, created=False)

        try:
            result = upload(create_pr=False, parent_commit=head)
            commit = result.oid
        except Exception as exc:
            # A retried commit whose first attempt went through, or a concurrent release:
            # accept main only if it now holds exactly this content.
            now = (client.refs() or refs).branches.get(BRANCH)
            if now and now != head and _same(release, client.files(now)):
                commit = now
            else:
                raise client.failure("upload", exc) from None
        log(f"{where}: committed {commit[:12]} on {BRANCH}")
        return _tag(client, release, commit, tag, message, description, where, log, created=True)
    except (UserError, RunError):
        raise
    except Exception as exc:  # Hub errors and network failures that outlived the retries
        raise client.failure("release", exc) from None


def _tag(
    client: HubClient,
    release: ReleaseSet,
    commit: str | None,
    tag: str | None,
    message: str,
    description: str,
    where: str,
    log: Callable[[str], None],
    *,
    created: bool,
) -> Outcome:
    from huggingface_hub.errors import HfHubHTTPError

    if not tag or commit is None:
        return Outcome(where, commit, None, made_commit=created, made_tag=False)
    try:
        client.create_tag(tag, commit, f"{message}\n\n{description}")
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        if status != 409:
            raise client.failure("create tag", exc) from None
        # Already there (a retried request that had gone through, or a concurrent run).
        now = client.refs()
        tagged = now.tags.get(tag) if now else None
        if not tagged or not _same(release, client.files(tagged)):
            raise UserError(
                f"--tag {tag}: was created on {where} meanwhile with other content"
            ) from None
        commit = tagged
    log(f"{where}: tagged {commit[:12]} as {tag}")
    return Outcome(where, commit, tag, made_commit=created, made_tag=True)
