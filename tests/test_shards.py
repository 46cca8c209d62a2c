import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from personaloom import schema as S
from personaloom.records import from_table, to_table
from personaloom.shards import atomic_path, write_shards, write_table_atomic


def _personas(n):
    return [
        {
            "persona_id": S.persona_id(0, i),
            "seed": 0,
            "index": i,
            "taxonomy": "t@1",
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
