"""A separate judge model: `--judge-model`, `--judge-engine`, `--judge-base-url` send the
LLM judges to another model (typically a bigger one behind an OpenAI-compatible endpoint);
`--judges auto` filters whenever that model is not the embedded one; the card names both."""

from __future__ import annotations

import pytest

from personaloom.cli import main
from personaloom.engine.embedded import EMBEDDED_MODEL
from personaloom.project import Project
from personaloom.run.config import RunConfig
from personaloom.run.pipeline import critic_plan, judge_spec
from tests.httpstub import ChatServer

URL = "http://127.0.0.1:8/v1"


def test_concurrency_reaches_both_http_engines_and_not_the_fingerprint():
    from personaloom.run.pipeline import engine_spec

    config = RunConfig(concurrency=8, judge_model="j", judge_base_url=URL)
    http = config.model_copy(update={"engine": "openai", "base_url": URL, "model": "m"})
    assert engine_spec(http).concurrency == judge_spec(config).concurrency == 8
    # the offline engine keeps the spec's default: one engine per process is shared
    assert engine_spec(config).key() == engine_spec(RunConfig()).key()
    hashes = {"taxonomy": "t"}
    assert config.fingerprint(hashes) == config.model_copy(update={"concurrency": 128}).fingerprint(
        hashes
    )


def test_unset_concurrency_is_the_servers_max_num_seqs_else_64():
    """A server that reports its configuration on /server_info (vllm serve with
    VLLM_SERVER_DEV_MODE=1; the real one runs in tests/test_vllm_serve.py) sets the requests
    in flight; one that does not (404), a body without the number or no server: 64. An
    explicit --concurrency is never asked about."""
    from personaloom.run.pipeline import derived_batch_size, engine_spec, resolve_concurrency

    def served(url: str, **update) -> RunConfig:
        return RunConfig(engine="openai", base_url=url, model="m", **update)

    with ChatServer() as server:
        config = resolve_concurrency(served(server.url))
        assert config.concurrency == 64 and engine_spec(config).concurrency == 64
        assert derived_batch_size(config) == 64
        server.server_info = {"vllm_config": {"scheduler_config": {"max_num_seqs": 24}}}
        config = resolve_concurrency(served(server.url + "/v1"))
        assert config.concurrency == 24 and derived_batch_size(config) == 24
        assert server.gets == ["/server_info?config_format=json"] * 2
        assert resolve_concurrency(served(server.url, concurrency=5)).concurrency == 5
        assert len(server.gets) == 2
        server.server_info = {"vllm_config": "SchedulerConfig(max_num_seqs=24)"}
        assert resolve_concurrency(served(server.url)).concurrency == 64
    assert resolve_concurrency(served("http://127.0.0.1:9")).concurrency == 64
    # the offline engine is left alone
    assert resolve_concurrency(RunConfig()).concurrency is None


def test_without_judge_options_the_judges_use_the_generating_model():
    assert judge_spec(RunConfig()) is None


def test_a_judge_url_means_the_http_engine_with_that_model():
    spec = judge_spec(RunConfig(judge_model="org/judge-8b", judge_base_url=URL))
    assert (spec.engine, spec.model, spec.base_url) == ("openai", "org/judge-8b", URL)
    local = judge_spec(RunConfig(judge_model="org/judge-8b"))
    assert (local.engine, local.model, local.base_url) == ("vllm", "org/judge-8b", None)


def test_auto_filters_when_the_judge_is_not_the_embedded_model(repo_root):
    project = Project.locate(repo_root)
    assert critic_plan(project, RunConfig()).mode == "advisory"
    assert critic_plan(project, RunConfig(judge_model="org/judge-8b")).mode == "filter"
    same = RunConfig(model="org/gen", judge_model=EMBEDDED_MODEL)
    assert critic_plan(project, same).mode == "advisory"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--judge-base-url", URL], "--judge-model is required"),
        (["--judge-model", "j", "--judge-engine", "openai"], "--judge-base-url is required"),
        (
            ["--judge-model", "j", "--judge-base-url", "ftp://x"],
            "--judge-base-url ftp://x: expected",
        ),
        (
            ["--judge-model", "embedded:SmolLM2-135M-Instruct", "--judge-base-url", URL],
            "--judge-model: name the served model when using --judge-engine openai",
        ),
        (["--judge-model", "j", "--judge-engine", "vllm", "--judge-base-url", URL], "only with"),
    ],
)
def test_an_incomplete_judge_engine_exits_2_naming_the_option(tmp_path, capsys, args, message):
    out = tmp_path / "corpus"
    assert main(["generate", "--out", str(out), *args]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_the_judge_endpoint_is_not_part_of_the_fingerprint_and_the_model_is():
    hashes = {"taxonomy": "t"}
    base = RunConfig(judge_model="org/judge", judge_base_url=URL).fingerprint(hashes)
    moved = RunConfig(judge_model="org/judge", judge_base_url="http://other:9/v1")
    assert moved.fingerprint(hashes) == base
    assert RunConfig(judge_model="org/other", judge_base_url=URL).fingerprint(hashes) != base


CRITICS = """
rules: {}
judges: {persona: [faithfulness], conversation: []}
decision:
  hard_judges: {faithfulness: 3}
  judge_failure: reject
  weights: {faithfulness: 1.0}
  min_score: 0.0
"""


@pytest.mark.engine
def test_judges_run_on_their_own_endpoint_and_filter_there(engine, repo_root, tmp_path):
    """The embedded model generates (real vLLM); the judge is an OpenAI-compatible endpoint
    (tests/httpstub.py, a stand-in that answers every judge with score 1): `--judges auto`
    filters, so every persona is rejected by that judge, and only judge requests reach it."""
    import json
    import shutil

    import pyarrow.parquet as pq

    from tests.httpstub import ChatServer

    project = tmp_path / "project"
    (project / "taxonomies").mkdir(parents=True)
    shutil.copy(repo_root / "tests" / "data" / "taxonomies" / "clinic.yaml", project / "taxonomies")
    shutil.copytree(repo_root / "prompts", project / "prompts")
    (project / "validators" / "critics").mkdir(parents=True)
    (project / "validators" / "critics.yaml").write_text(CRITICS)
    out = tmp_path / "corpus"
    with ChatServer() as judge:
        judge.reply = json.dumps({"rationale": "The story contradicts the profile.", "score": 1})
        args = ["--project", str(project), "--taxonomy", "clinic", "--personas", "2"]
        args += ["--max-candidates", "2", "--critic-rounds", "1", "--judges", "auto"]
        args += ["--judge-model", "org/judge-8b", "--judge-base-url", judge.url]
        args += ["--max-tokens-section", "48", "--max-tokens-narrative", "48", "--seed", "8"]
        assert main(["generate", "--out", str(out), *args]) == 0
        asked = [r["body"] for r in judge.requests]
    assert len(asked) == 2 and {b["model"] for b in asked} == {"org/judge-8b"}
    assert all("faithful" in b["messages"][-1]["content"].lower() for b in asked)
    manifest = json.loads((out / ".personaloom" / "manifest.json").read_text())
    assert manifest["judge_model"] == "org/judge-8b"
    assert manifest["shortfall"] == "0 of 2 kept, budget exhausted"
    rejected = pq.read_table(out / ".personaloom" / "rejected").to_pylist()
    by_judge = [r for r in rejected if r["critic"] == "faithfulness"]
    assert {r["record_id"] for r in by_judge} == {"p8-00000000", "p8-00000001"}
    card = (out / "README.md").read_text()
    assert "| judge model | `org/judge-8b` |" in card
    assert "| model | `" + manifest["model"] in card


def test_generate_asks_the_server_once_and_the_flow_reuses_the_answer(tmp_path):
    """`generate` validates (and asks /server_info) before Prefect starts; the flow gets the
    validated config, so its own validation finds it cached and does not ask again."""
    with ChatServer() as server:
        code = main(
            ["generate", "--out", str(tmp_path / "out"), "--personas", "1",
             "--critic-rounds", "0", "--sessions", "0", "--max-candidates", "1",
             "--engine", "openai", "--base-url", server.url, "--model", "m"]
        )  # fmt: skip
        assert code == 0
        assert server.gets == ["/server_info?config_format=json"]
        assert server.requests  # the run did reach the endpoint
