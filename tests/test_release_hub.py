"""`personaloom release DIR --to hf://datasets/ORG/NAME` against a stand-in of the Hub.

The Hub is not reachable from here, so these tests run the real CLI (a subprocess, so
huggingface_hub reads HF_ENDPOINT, HF_HUB_DISABLE_XET and HF_HUB_OFFLINE at import as it
would for a user) against `tests/support/hubstub.py`: a local HTTP server speaking the
subset of the Hub API that huggingface_hub's create_repo / list refs / list tree /
preupload / LFS batch / commit / create_tag calls use. It is the only stand-in in the
test suite; everything else (huggingface_hub's client, Parquet, the CLI) is real.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from personaloom.publish.card import write_card
from personaloom.retry import parse_retry_after
from tests.support.dataset import make_dataset, read_manifest
from tests.support.hubstub import HubStub

TOKEN = "hf_StandInSecretToken0123456789"
REPO = "acme/personas"
TARGET = f"hf://datasets/{REPO}"


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("template") / "corpus"
    make_dataset(out)
    return out


@pytest.fixture
def dataset(template: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(template, tmp_path / "corpus"))


@pytest.fixture
def hub():
    with HubStub(TOKEN) as stub:
        yield stub


@pytest.fixture
def env(hub: HubStub, tmp_path: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("HF_", "HUGGING_FACE", "PREFECT_API"))
    }
    env.update(
        HF_ENDPOINT=hub.url,
        HF_TOKEN=TOKEN,
        HF_HUB_DISABLE_XET="1",
        HF_HUB_OFFLINE="0",
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HOME=str(tmp_path / "hf-home"),
    )
    return env


class Runs:
    """Every CLI run of a test, kept so the token check can read all of their output."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.outputs: list[str] = []

    def __call__(
        self, *args: object, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess:
        done = subprocess.run(
            [sys.executable, "-m", "personaloom.cli", "release", *map(str, args)],
            env=env or self.env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        self.outputs += [done.stdout, done.stderr]
        return done


@pytest.fixture
def release(env: dict[str, str]) -> Runs:
    return Runs(env)


def release_commits(hub: HubStub) -> list[str]:
    return [c.message for c in hub.history(REPO) if c.message.startswith("Release")]


def local_files(dataset: Path) -> dict[str, bytes]:
    names = ["README.md"] + [
        str(p.relative_to(dataset))
        for folder in ("personas", "conversations", "probes", "charts")
        for p in sorted((dataset / folder).glob("*"))
        if (dataset / folder).is_dir()
    ]
    return {n: (dataset / n).read_bytes() for n in names}


def test_release_creates_the_repo_commits_the_files_and_tags(dataset, hub, release) -> None:
    done = release(dataset, "--to", TARGET, "--tag", "v1.0.0")
    assert done.returncode == 0, done.stderr
    assert f"released: {TARGET}" in done.stdout and "tag v1.0.0" in done.stdout
    files = hub.files_at(REPO, "v1.0.0")
    assert {p: b for p, b in files.items() if p != ".gitattributes"} == local_files(dataset)
    assert not any(p.startswith(".personaloom") for p in files)
    assert release_commits(hub) == [hub.history(REPO, "v1.0.0")[0].message]
    assert "content sha256:" in release_commits(hub)[0]
    assert hub.repo(REPO).tags["v1.0.0"] == hub.repo(REPO).branches["main"]


def test_re_release_is_a_no_op(dataset, hub, release) -> None:
    assert release(dataset, "--to", TARGET, "--tag", "v1.0.0").returncode == 0
    writes = (
        hub.count("POST", "/commit/")
        + hub.count("POST", "/tag/")
        + hub.count("PUT", "/lfs-upload/")
    )
    done = release(dataset, "--to", TARGET, "--tag", "v1.0.0")
    assert done.returncode == 0
    assert "already released" in done.stdout
    assert (
        hub.count("POST", "/commit/")
        + hub.count("POST", "/tag/")
        + hub.count("PUT", "/lfs-upload/")
        == writes
    )
    assert len(release_commits(hub)) == 1


def test_other_content_under_an_existing_tag_is_refused(dataset, hub, release) -> None:
    assert release(dataset, "--to", TARGET, "--tag", "v1.0.0").returncode == 0
    shutil.rmtree(dataset / "probes")
    write_card(dataset, read_manifest(dataset))
    done = release(dataset, "--to", TARGET, "--tag", "v1.0.0")
    assert done.returncode == 2
    assert "--tag v1.0.0" in done.stderr and "different content" in done.stderr
    assert len(release_commits(hub)) == 1
    # under a new tag it is a new commit, which also deletes the shards no longer released
    assert release(dataset, "--to", TARGET, "--tag", "v1.1.0").returncode == 0
    assert len(release_commits(hub)) == 2
    assert "probes/train-00000-of-00001.parquet" not in hub.files_at(REPO, "v1.1.0")
    assert "probes/train-00000-of-00001.parquet" in hub.files_at(REPO, "v1.0.0")


def test_throttling_and_server_errors_are_retried(dataset, hub, release) -> None:
    hub.fail("GET", r"/refs$", 429, retry_after="1")
    hub.fail("POST", r"/commit/", 503)
    started = time.monotonic()
    done = release(dataset, "--to", TARGET, "--tag", "v1.0.0")
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started >= 1.0  # Retry-After honoured
    assert "list refs: Hub answered 429; retrying in 1.0s" in done.stderr
    assert "upload: Hub answered 503; retrying" in done.stderr
    assert hub.count("GET", r"/refs$", 429) == 1 and hub.count("POST", r"/commit/", 503) == 1
    assert len(release_commits(hub)) == 1
    assert "v1.0.0" in hub.repo(REPO).tags


@pytest.mark.parametrize("how", ["kill", "ctrl-c"])
def test_an_interrupted_upload_resumes_on_re_run(dataset, hub, env, release, how) -> None:
    """Killed (kill -9) or stopped with Ctrl-C once every file is uploaded, before the
    commit lands. Ctrl-C: exit 130 within 10 s, one line naming the command that resumes,
    no traceback, the release lock released. Either way the re-run sends nothing twice."""
    hub.hold_commits.set()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "personaloom.cli",
            "release",
            str(dataset),
            "--to",
            TARGET,
            "--tag",
            "v1.0.0",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    took = 0.0
    try:
        assert hub.commit_reached.wait(timeout=120), "the release never reached its commit"
        # interrupted after uploading every LFS object, before the commit landed
        sent = time.monotonic()
        proc.send_signal(signal.SIGKILL if how == "kill" else signal.SIGINT)
        proc.wait(timeout=30)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
        out, err = proc.communicate(timeout=30)
    release.outputs += [out, err]
    hub.hold_commits.clear()
    hub.release_commits.set()
    uploaded = hub.count("PUT", "/lfs-upload/", 200)
    assert uploaded == 7  # 4 shards + 3 charts reached the Hub's storage
    assert "v1.0.0" not in hub.repo(REPO).tags
    if how == "kill":
        assert proc.returncode == -signal.SIGKILL
        assert (dataset / ".personaloom" / "release.lock").exists()  # left by the killed run
    else:
        assert proc.returncode == 130, err
        assert took <= 10.0, took
        assert "Traceback" not in err
        last = err.strip().splitlines()[-1]
        assert last.startswith(f"interrupted: the release of {dataset} to {TARGET} did not finish")
        assert last.endswith(
            f"resume with: personaloom release {dataset} --to {TARGET} --tag v1.0.0"
        )
        assert not (dataset / ".personaloom" / "release.lock").exists()

    done = release(dataset, "--to", TARGET, "--tag", "v1.0.0")
    assert done.returncode == 0, done.stderr
    assert hub.count("PUT", "/lfs-upload/", 200) == uploaded  # nothing sent twice
    assert len(release_commits(hub)) == 1
    assert hub.repo(REPO).tags["v1.0.0"] == hub.repo(REPO).branches["main"]
    assert not (dataset / ".personaloom" / "release.lock").exists()


def test_a_finished_commit_whose_tag_is_missing_is_only_tagged(dataset, hub, release) -> None:
    hub.fail("POST", r"/tag/", 403)  # not retried: the run fails after its commit
    done = release(dataset, "--to", TARGET, "--tag", "v1.0.0")
    assert done.returncode == 1
    assert "create tag" in done.stderr and "HTTP 403" in done.stderr
    commits_before = hub.count("POST", "/commit/")
    done = release(dataset, "--to", TARGET, "--tag", "v1.0.0")
    assert done.returncode == 0, done.stderr
    assert "(unchanged)" in done.stdout
    assert hub.count("POST", "/commit/") == commits_before
    assert hub.repo(REPO).tags["v1.0.0"] == hub.repo(REPO).branches["main"]


def test_create_pr_opens_one_pull_request_and_defers_the_tag(dataset, hub, release) -> None:
    done = release(dataset, "--to", TARGET, "--tag", "v1.0.0", "--create-pr")
    assert done.returncode == 0, done.stderr
    assert "proposed:" in done.stdout and "/discussions/1" in done.stdout
    assert "tag v1.0.0 not created" in done.stdout
    repo = hub.repo(REPO)
    assert list(repo.prs) == [1] and repo.tags == {}
    assert "README.md" not in hub.files_at(REPO, "main")  # main untouched until the merge
    again = release(dataset, "--to", TARGET, "--tag", "v1.0.0", "--create-pr")
    assert again.returncode == 0
    assert "already proposed in refs/pr/1" in again.stdout
    assert list(repo.prs) == [1]


def test_the_token_never_appears_in_output_errors_or_files(dataset, hub, release, env) -> None:
    assert release(dataset, "--to", TARGET, "--tag", "v1.0.0").returncode == 0
    shutil.rmtree(dataset / "probes")
    write_card(dataset, read_manifest(dataset))
    wrong = release(
        dataset, "--to", TARGET, "--tag", "v2.0.0", env=dict(env, HF_TOKEN="hf_wrong_value")
    )
    assert wrong.returncode == 1 and "HTTP 401" in wrong.stderr
    hub.fail("POST", r"/commit/", 400)
    failed = release(dataset, "--to", TARGET, "--tag", "v2.0.0")
    assert failed.returncode == 1 and "HTTP 400" in failed.stderr
    assert release(dataset, "--to", TARGET, "--tag", "v2.0.0").returncode == 0
    assert all(TOKEN not in text for text in release.outputs)
    for rev in ("v1.0.0", "v2.0.0"):
        assert all(TOKEN.encode() not in data for data in hub.files_at(REPO, rev).values())
    for path in dataset.rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path


def test_a_release_without_a_token_is_refused(dataset, hub, release, env, tmp_path) -> None:
    bare = {k: v for k, v in env.items() if k != "HF_TOKEN"}
    bare["PREFECT_HOME"] = str(tmp_path / "prefect-home")
    done = release(dataset, "--to", TARGET, env=bare)
    assert done.returncode == 2
    assert "no Hugging Face token" in done.stderr and "HF_TOKEN" in done.stderr
    assert hub.requests == []


def test_a_release_in_offline_mode_is_refused(dataset, hub, release, env) -> None:
    done = release(dataset, "--to", TARGET, env=dict(env, HF_HUB_OFFLINE="1"))
    assert done.returncode == 2 and "HF_HUB_OFFLINE" in done.stderr
    assert hub.requests == []


def test_retry_after_accepts_seconds_and_http_dates() -> None:
    # the parser shared with the OpenAI engine; tests/test_retry.py covers it in full
    assert parse_retry_after("7") == 7.0
    date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))
    assert 25 <= parse_retry_after(date) <= 31
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None


def test_private_creates_a_private_repo(dataset, hub, release) -> None:
    done = release(dataset, "--to", TARGET, "--private")
    assert done.returncode == 0, done.stderr
    assert hub.repo(REPO).private
    assert "created (private)" in done.stderr


def test_a_server_error_with_retry_after_is_waited_out(dataset, hub, release) -> None:
    hub.fail("POST", r"/tag/", 503, retry_after="2")
    started = time.monotonic()
    done = release(dataset, "--to", TARGET, "--tag", "v1.0.0")
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started >= 2.0
    assert "create tag: Hub answered 503; retrying in 2.0s" in done.stderr
    assert hub.count("POST", r"/tag/", 503) == 1 and hub.count("POST", r"/tag/", 200) == 1
    assert hub.repo(REPO).tags["v1.0.0"] == hub.repo(REPO).branches["main"]


def test_a_hub_that_keeps_failing_stops_the_release_and_a_re_run_finishes_it(
    dataset, hub, release
) -> None:
    hub.fail("POST", r"/commit/", 502, times=6, retry_after="0")
    failed = release(dataset, "--to", TARGET, "--tag", "v1.0.0")
    assert failed.returncode == 1
    assert "upload on acme/personas failed (HTTP 502)" in failed.stderr
    assert "Traceback" not in failed.stderr
    assert hub.count("POST", r"/commit/", 502) == 6  # every attempt, then it gave up
    assert release_commits(hub) == [] and hub.repo(REPO).tags == {}
    uploaded = hub.count("PUT", "/lfs-upload/", 200)
    assert not (dataset / ".personaloom" / "release.lock").exists()

    done = release(dataset, "--to", TARGET, "--tag", "v1.0.0")
    assert done.returncode == 0, done.stderr
    assert hub.count("PUT", "/lfs-upload/", 200) == uploaded  # objects already there: not re-sent
    assert len(release_commits(hub)) == 1
    assert hub.repo(REPO).tags["v1.0.0"] == hub.repo(REPO).branches["main"]
