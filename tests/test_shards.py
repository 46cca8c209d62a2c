import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from personaloom import schema as S
from personaloom.atomic import atomic_path, write_table_atomic
from personaloom.publish.shards import write_shards
from personaloom.records import from_table, to_table


def _personas(n):
    return [
        {
            "persona_id": S.persona_id(0, i),
            "seed": 0,
            "index": i,
            "taxonomy": "t@1",
            "name": f"Ana Souza {i}",
            "attributes": [{"path": "a.b", "value": str(i), "source": "sampled"}],
            "narrative": "text " * 20,
            "sections": {"background": "bg"},
            "model": "m",
            "scores": {"faithfulness": 4.0},
        }
        for i in range(n)
    ]


def test_records_round_trip_through_the_contract_schema():
    records = _personas(3)
    table = to_table(records, S.PERSONAS)
    assert table.schema == S.PERSONAS
    assert from_table(table) == records


def test_shards_are_named_like_the_hub_and_zstd_compressed(tmp_path):
    table = to_table(_personas(10), S.PERSONAS)
    paths = write_shards(table, tmp_path / "personas", shards=3)
    assert [p.name for p in paths] == [f"train-{k:05d}-of-00003.parquet" for k in range(3)]
    assert sum(pq.read_metadata(p).num_rows for p in paths) == 10
    meta = pq.read_metadata(paths[0])
    assert meta.row_group(0).column(0).compression == "ZSTD"


def test_rewriting_with_fewer_shards_removes_stale_ones(tmp_path):
    table = to_table(_personas(10), S.PERSONAS)
    write_shards(table, tmp_path, shards=3)
    write_shards(table, tmp_path, shards=1)
    assert sorted(p.name for p in tmp_path.glob("*.parquet")) == ["train-00000-of-00001.parquet"]


def test_a_failing_write_leaves_the_previous_file_intact(tmp_path):
    target = tmp_path / "x.parquet"
    write_table_atomic(pa.table({"a": [1, 2]}), target)
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half a file")
        raise RuntimeError("disk full")
    assert pq.read_table(target).column("a").to_pylist() == [1, 2]
    assert [p.name for p in tmp_path.iterdir()] == ["x.parquet"]


# A real write failure: the child process may not write files larger than FSIZE bytes (the
# kernel answers EFBIG, as for a full disk), so the new set's first shard is written and the
# second one fails half way.
FSIZE = 200_000
FAILING_WRITER = """
import base64, os, resource, signal, sys
import pyarrow as pa
from personaloom import schema as S
from personaloom.state.run_state import RunState
from personaloom.publish.shards import write_shards
from tests.test_shards import _personas

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[3]), int(sys.argv[3])))
rows = _personas(9)
for row in rows[3:]:  # shards 1 and 2 each hold about 900 kB of incompressible text
    row["narrative"] = base64.b64encode(os.urandom(300_000)).decode()
table = pa.Table.from_pylist(rows, schema=S.PERSONAS)
try:
    if sys.argv[1] == "shards":
        write_shards(table, sys.argv[2], shards=3)
    else:
        RunState(sys.argv[2]).write_batch(1, {"personas": table}, {"batch": 1})
except OSError as exc:
    print("failed:", exc.errno, flush=True)
    sys.exit(3)
"""


def _fail_writing(what: str, folder) -> None:
    import subprocess
    import sys
    from pathlib import Path

    done = subprocess.run(
        [sys.executable, "-c", FAILING_WRITER, what, str(folder), str(FSIZE)],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
        timeout=120,
    )
    assert done.returncode == 3, done.stderr
    assert done.stdout.startswith("failed: 27"), done.stdout  # EFBIG


def _files(folder) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def test_a_shard_set_that_fails_half_way_leaves_the_previous_set_intact(tmp_path):
    folder = tmp_path / "personas"
    write_shards(to_table(_personas(6), S.PERSONAS), folder, shards=3)
    before = _files(folder)
    _fail_writing("shards", folder)
    assert _files(folder) == before  # same names, same bytes, no temporary file left


def test_a_batch_that_fails_to_commit_is_not_marked_done(tmp_path):
    from personaloom.state.run_state import RunState

    state = RunState(tmp_path)
    state.write_batch(0, {"personas": to_table(_personas(2), S.PERSONAS)}, {"batch": 0})
    before = _files(tmp_path)
    _fail_writing("batch", tmp_path)
    assert state.completed() == [0] and not state.is_done(1)
    assert _files(tmp_path) == before
    assert state.clean_orphans() == 0
