"""`personaloom release DIR --to PATH`: releases into a local git repository (real git)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from personaloom import schema as S
from personaloom.cli import main
from personaloom.publish.card import write_card
from personaloom.publish.shards import write_shards
from tests.support.dataset import make_dataset, persona_rows, read_manifest


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=True
    ).stdout


def commits(repo: Path) -> list[str]:
    return git(repo, "rev-list", "main").split()


def tracked(repo: Path, rev: str = "main") -> list[str]:
    return sorted(git(repo, "ls-tree", "-r", "--name-only", rev).split())


@pytest.fixture
def release(capsys: pytest.CaptureFixture[str]):
    def run(*args: str) -> tuple[int, str, str]:
        code = main(["release", *[str(a) for a in args]])
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("template") / "corpus"
    make_dataset(out)
    return out


@pytest.fixture
def dataset(template: Path, tmp_path: Path) -> Path:
    """A fresh copy of a generated dataset folder for each test."""
    return Path(shutil.copytree(template, tmp_path / "corpus"))


def test_release_creates_a_hub_shaped_repo_with_one_commit_and_the_tag(
    dataset, tmp_path, release
) -> None:
    repo = tmp_path / "mirror" / "datasets" / "acme" / "personas"
    code, out, _ = release(dataset, "--to", repo, "--tag", "v1.0.0")
    assert code == 0, out
    assert "released:" in out and "tag v1.0.0" in out
    assert git(repo, "symbolic-ref", "HEAD").strip() == "refs/heads/main"
    assert len(commits(repo)) == 1
    assert git(repo, "cat-file", "-t", "v1.0.0").strip() == "tag"  # annotated
    assert git(repo, "rev-parse", "v1.0.0^{commit}") == git(repo, "rev-parse", "main")
    assert tracked(repo) == [
        ".gitattributes",
        "README.md",
        "charts/conversations.png",
        "charts/critic.png",
        "charts/demographics.png",
        "conversations/train-00000-of-00001.parquet",
        "personas/train-00000-of-00002.parquet",
        "personas/train-00001-of-00002.parquet",
        "probes/train-00000-of-00001.parquet",
    ]
    assert "*.parquet filter=lfs" in (repo / ".gitattributes").read_text()
    # committed as they are (no LFS pointer), and checked out in the work tree
    shard = "personas/train-00000-of-00002.parquet"
    blob = subprocess.run(
        ["git", "-C", str(repo), "cat-file", "blob", f"main:{shard}"],
        capture_output=True,
        check=True,
    ).stdout
    assert blob == (dataset / shard).read_bytes() == (repo / shard).read_bytes()
    assert git(repo, "status", "--porcelain") == ""


def test_run_state_is_never_released(dataset, tmp_path, release) -> None:
    (dataset / ".personaloom" / "rejected.parquet").write_bytes(b"run state")
    (dataset / "notes.txt").write_text("not part of a release")
    repo = tmp_path / "repo"
    assert release(dataset, "--to", repo)[0] == 0
    assert not any(p.startswith(".personaloom") or p == "notes.txt" for p in tracked(repo))


def test_re_releasing_the_same_tag_is_a_no_op(dataset, tmp_path, release) -> None:
    repo = tmp_path / "repo"
    assert release(dataset, "--to", repo, "--tag", "v1.0.0")[0] == 0
    before = git(repo, "rev-parse", "main", "v1.0.0")
    code, out, _ = release(dataset, "--to", repo, "--tag", "v1.0.0")
    assert code == 0
    assert "already released" in out
    assert git(repo, "rev-parse", "main", "v1.0.0") == before


def test_a_new_tag_on_unchanged_content_tags_without_a_commit(dataset, tmp_path, release) -> None:
    repo = tmp_path / "repo"
    release(dataset, "--to", repo, "--tag", "v1.0.0")
    code, out, _ = release(dataset, "--to", repo, "--tag", "v1.0.1")
    assert code == 0 and "(unchanged)" in out
    assert len(commits(repo)) == 1
    assert git(repo, "rev-parse", "v1.0.1^{commit}") == git(repo, "rev-parse", "main")


def test_other_content_under_an_existing_tag_is_refused(dataset, tmp_path, release) -> None:
    repo = tmp_path / "repo"
    release(dataset, "--to", repo, "--tag", "v1.0.0")
    shutil.rmtree(dataset / "probes")
    write_card(dataset, read_manifest(dataset))
    code, _, err = release(dataset, "--to", repo, "--tag", "v1.0.0")
    assert code == 2
    assert "--tag v1.0.0" in err and "different content" in err
    assert "gone: probes/train-00000-of-00001.parquet" in err
    assert len(commits(repo)) == 1


def test_a_new_release_replaces_the_shards_of_the_previous_one(dataset, tmp_path, release) -> None:
    repo = tmp_path / "repo"
    release(dataset, "--to", repo, "--tag", "v1.0.0")
    table = pa.Table.from_pylist(persona_rows(20), schema=S.PERSONAS)
    write_shards(table, dataset / "personas", shards=3)
    shutil.rmtree(dataset / "conversations")
    shutil.rmtree(dataset / "probes")
    write_card(dataset, read_manifest(dataset))
    code, out, _ = release(dataset, "--to", repo, "--tag", "v2.0.0")
    assert code == 0, out
    assert len(commits(repo)) == 2
    files = tracked(repo, "v2.0.0")
    assert [f for f in files if f.startswith("personas/")] == [
        f"personas/train-0000{k}-of-00003.parquet" for k in range(3)
    ]
    assert not any(
        f.startswith(("conversations/", "probes/", "charts/conversations")) for f in files
    )
    assert "probes/train-00000-of-00001.parquet" in tracked(repo, "v1.0.0")  # old release intact
    assert git(repo, "status", "--porcelain") == ""


def test_files_a_user_added_to_the_repo_are_kept(dataset, tmp_path, release) -> None:
    repo = tmp_path / "repo"
    release(dataset, "--to", repo, "--tag", "v1.0.0")
    (repo / "LICENSE").write_text("license text\n")
    git(repo, "add", "LICENSE")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "add license")
    shutil.rmtree(dataset / "probes")
    write_card(dataset, read_manifest(dataset))
    assert release(dataset, "--to", repo, "--tag", "v1.1.0")[0] == 0
    assert "LICENSE" in tracked(repo, "v1.1.0")


@pytest.mark.parametrize(
    "to",
    [
        "s3://bucket/datasets",
        "https://huggingface.co/datasets/acme/personas",
        "hf://models/acme/personas",
        "hf://datasets/acme",
        "hf://datasets/acme/per sonas",
        "hf://datasets/acme--x/personas",
        "",
    ],
)
def test_a_bad_target_is_refused_naming_to(dataset, release, to: str) -> None:
    code, _, err = release(dataset, "--to", to, "--tag", "v1.0.0")
    assert code == 2
    assert "--to" in err


def test_a_target_that_is_a_file_or_a_foreign_folder_is_refused(dataset, tmp_path, release) -> None:
    afile = tmp_path / "file.txt"
    afile.write_text("x")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "data.csv").write_text("a,b\n")
    for target in (afile, foreign, dataset / "inside"):
        code, _, err = release(dataset, "--to", target)
        assert code == 2 and f"--to {target}" in err
    assert not (dataset / "inside").exists()
    assert sorted(p.name for p in foreign.iterdir()) == ["data.csv"]


@pytest.mark.parametrize("tag", ["1.0.0", "v1", "v1.0", "latest", "v1.0.0.0", "v01.0.0"])
def test_a_bad_tag_is_refused_before_anything_is_written(dataset, tmp_path, release, tag) -> None:
    repo = tmp_path / "repo"
    code, _, err = release(dataset, "--to", repo, "--tag", tag)
    assert code == 2
    assert f"--tag {tag}" in err and "vX.Y.Z" in err
    assert not repo.exists()
    assert not (dataset / ".personaloom" / "release.lock").exists()


def test_create_pr_is_refused_for_a_local_target(dataset, tmp_path, release) -> None:
    code, _, err = release(dataset, "--to", tmp_path / "repo", "--create-pr")
    assert code == 2 and "--create-pr" in err
    assert not (tmp_path / "repo").exists()


def test_a_missing_card_is_refused(dataset, tmp_path, release) -> None:
    (dataset / "README.md").unlink()
    code, _, err = release(dataset, "--to", tmp_path / "repo")
    assert code == 2 and "README.md" in err and "card" in err
    assert not (tmp_path / "repo").exists()


def test_a_stale_card_is_refused(dataset, tmp_path, release) -> None:
    shutil.rmtree(dataset / "probes")  # the card still declares probes
    code, _, err = release(dataset, "--to", tmp_path / "repo")
    assert code == 2 and "declares `probes`" in err
    assert not (tmp_path / "repo").exists()


def corrupt_truncated(shard: Path) -> None:
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])


def corrupt_page(shard: Path) -> None:
    data = bytearray(shard.read_bytes())
    for i in range(8, 200):  # inside the first column chunk, footer intact
        data[i] ^= 0xFF
    shard.write_bytes(bytes(data))


def drop_column(shard: Path) -> None:
    table = pq.read_table(shard)
    pq.write_table(table.drop_columns(["narrative"]), shard)


def mistype_column(shard: Path) -> None:
    table = pq.read_table(shard)
    index = table.schema.get_field_index("seed")
    pq.write_table(table.set_column(index, "seed", table.column("seed").cast(pa.string())), shard)


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (corrupt_truncated, "not a readable Parquet file"),
        (corrupt_page, "corrupt Parquet data"),
        (drop_column, "column `narrative` is missing"),
        (mistype_column, "column `seed` has type string; the personas contract says int64"),
    ],
)
def test_a_broken_shard_is_refused_naming_the_file(
    dataset, tmp_path, release, damage, expected
) -> None:
    shard = dataset / "personas" / "train-00001-of-00002.parquet"
    damage(shard)
    code, _, err = release(dataset, "--to", tmp_path / "repo", "--tag", "v1.0.0")
    assert code == 2, err
    assert str(shard) in err
    assert expected in err
    assert not (tmp_path / "repo").exists()


def test_a_missing_shard_of_a_set_is_refused(dataset, tmp_path, release) -> None:
    (dataset / "personas" / "train-00001-of-00002.parquet").unlink()
    code, _, err = release(dataset, "--to", tmp_path / "repo")
    assert code == 2 and "train-00001-of-00002.parquet: shard missing" in err


def test_extra_columns_are_allowed(dataset, tmp_path, release) -> None:
    shard = dataset / "probes" / "train-00000-of-00001.parquet"
    table = pq.read_table(shard)
    pq.write_table(table.append_column("difficulty", pa.array([0.5] * table.num_rows)), shard)
    assert release(dataset, "--to", tmp_path / "repo")[0] == 0


def test_local_changes_in_the_target_fail_the_run_and_are_kept(dataset, tmp_path, release) -> None:
    repo = tmp_path / "repo"
    release(dataset, "--to", repo, "--tag", "v1.0.0")
    (repo / "README.md").write_text("edited by hand\n")
    shutil.rmtree(dataset / "probes")
    write_card(dataset, read_manifest(dataset))
    code, _, err = release(dataset, "--to", repo, "--tag", "v1.1.0")
    assert code == 1
    assert "local changes" in err
    assert (repo / "README.md").read_text() == "edited by hand\n"
    assert len(commits(repo)) == 1


def test_a_target_on_another_branch_is_refused(dataset, tmp_path, release) -> None:
    repo = tmp_path / "repo"
    release(dataset, "--to", repo)
    git(repo, "switch", "-q", "-c", "draft")
    code, _, err = release(dataset, "--to", repo)
    assert code == 2 and "refs/heads/draft" in err and "switch main" in err


HOLD = """
import sys
from personaloom.state.lock import RunLock
with RunLock(sys.argv[1]):
    print("held", flush=True)
    sys.stdin.read()
"""


@pytest.mark.parametrize("lock", ["release.lock", "lock"])
def test_a_folder_held_by_a_live_personaloom_is_refused(dataset, tmp_path, release, lock) -> None:
    path = dataset / ".personaloom" / lock
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        code, _, err = release(dataset, "--to", tmp_path / "repo")
        assert code == 2
        assert f"pid {holder.pid}" in err
        assert not (tmp_path / "repo").exists()
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)


def test_a_stale_release_lock_is_taken_over(dataset, tmp_path, release) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock = dataset / ".personaloom" / "release.lock"
    lock.write_text(json.dumps({"pid": dead.pid, "hostname": socket.gethostname()}))
    assert release(dataset, "--to", tmp_path / "repo")[0] == 0
    assert not lock.exists()


def test_message_is_the_commit_subject_and_the_body_records_the_content_hash(
    dataset, tmp_path, release
) -> None:
    repo = tmp_path / "repo"
    assert (
        release(dataset, "--to", repo, "--tag", "v1.0.0", "--message", "First public cut")[0] == 0
    )
    assert git(repo, "log", "-1", "--format=%s", "main").strip() == "First public cut"
    body = git(repo, "log", "-1", "--format=%b", "main")
    assert "content sha256:" in body and "rows: personas 12, conversations" in body
    assert "First public cut" in git(repo, "tag", "-n5", "-l", "v1.0.0")
