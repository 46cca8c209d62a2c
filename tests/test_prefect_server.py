"""The deployments on a real Prefect server: `prefect server start`, a process work pool,
`prefect --no-prompt deploy --all` from the checkout, a one-off `build-corpus/adhoc` run with
parameters executed by `prefect worker start --run-once` (its flow run loads its own vLLM
engine), then a `merge/merge` run over the folder it wrote. Before that run, two with the
same parameters are stopped once their engine runs: one cancelled through the API, one
killed on the worker (kill -9 of the flow run's process alone). None of the processes they
started may outlive them (10 s after the kill, 30 s after the cancel request), and the
next run resumes the folder. Last, the adhoc deployment runs once more with `engine=openai`
against a real `vllm serve` of the embedded model.

The server runs with its scheduler service off, so the nightly deployment's schedule creates
no runs: the worker only sees the runs this test creates.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq
import pytest
import yaml

pytestmark = [pytest.mark.server, pytest.mark.engine]

PREFECT = str(Path(sys.executable).with_name("prefect"))
POOL = "personaloom-gpu"  # prefect.yaml's work pool
UUID = re.compile(r"UUID: ([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, lines: int = 40) -> str:
    return (
        "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""
    )


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=20)


class Prefect:
    """Runs `prefect` commands against one server, each logged to a file."""

    def __init__(self, env: dict[str, str], logs: Path, cwd: Path) -> None:
        self.env, self.logs, self.cwd = env, logs, cwd
        self.api = env["PREFECT_API_URL"]
        self.count = 0

    def start(self, *args: str) -> tuple[subprocess.Popen[bytes], Path]:
        self.count += 1
        log = self.logs / f"{self.count:02d}-{args[0]}.log"
        with open(log, "wb") as handle:
            process = subprocess.Popen(
                [PREFECT, *args],
                env=self.env,
                cwd=self.cwd,
                stdout=handle,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own group: vLLM's engine process goes with it
            )
        return process, log

    def run(self, *args: str, timeout: float = 180) -> str:
        process, log = self.start(*args)
        try:
            code = process.wait(timeout=timeout)
        finally:
            _kill_group(process)
        output = log.read_text(errors="replace")
        assert code == 0, f"prefect {' '.join(args)} exited {code}:\n{_tail(log)}"
        return output

    def wait_healthy(self, server: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert server.poll() is None, f"prefect server exited:\n{_tail(log)}"
            try:
                if httpx.get(f"{self.api}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(1)
        raise AssertionError(f"prefect server not healthy after {timeout} s:\n{_tail(log)}")

    def flow_run(self, run_id: str) -> dict[str, Any]:
        response = httpx.get(f"{self.api}/flow_runs/{run_id}", timeout=10)
        response.raise_for_status()
        return response.json()

    def run_logs(self, run_id: str) -> list[dict[str, Any]]:
        """Every log line the API holds for a flow run."""
        lines: list[dict[str, Any]] = []
        while True:
            response = httpx.post(
                f"{self.api}/logs/filter",
                json={
                    "logs": {"flow_run_id": {"any_": [run_id]}},
                    "limit": 200,
                    "offset": len(lines),
                },
                timeout=10,
            )
            response.raise_for_status()
            page = response.json()
            lines += page
            if len(page) < 200:
                return lines

    def deploy_run(self, deployment: str, **params: Any) -> str:
        args = ["deployment", "run", deployment]
        for key, value in params.items():
            args += ["-p", f"{key}={json.dumps(value)}"]
        output = self.run(*args)
        match = UUID.search(output)
        assert match, f"no flow run id in:\n{output}"
        return match.group(1)

    def work_once(self, run_id: str, timeout: float) -> dict[str, Any]:
        """`prefect worker start --run-once`, then the flow run's final state."""
        worker, log = self.start("worker", "start", "--pool", POOL, "--run-once")
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                run = self.flow_run(run_id)
                if run["state"]["type"] in {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}:
                    try:  # --run-once: the worker exits once its flow run has ended
                        worker.wait(timeout=90)
                    except subprocess.TimeoutExpired:
                        raise AssertionError(
                            f"worker still running after its flow run ended:\n{_tail(log)}"
                        ) from None
                    return run
                if worker.poll() is not None and run["state"]["type"] == "SCHEDULED":
                    raise AssertionError(f"the worker left run {run_id} alone:\n{_tail(log)}")
                time.sleep(2)
            raise AssertionError(f"flow run {run_id} not finished in {timeout} s:\n{_tail(log)}")
        finally:
            _kill_group(worker)


def _stop_flow_run_once_its_engine_runs(
    prefect: Prefect, run_id: str, out: Path, how: str, timeout: float = 600
) -> dict[str, Any]:
    """Run `run_id` on a `--run-once` worker; once the flow run's lock (which it refreshes
    every second with the processes it started) lists vLLM's EngineCore, stop it: `kill`
    sends kill -9 to the flow run's process alone (as an out-of-memory killer does),
    `cancel` cancels the run through the API (`prefect flow-run cancel`, as the UI does;
    the worker then sends the flow run's process SIGTERM). Assert that every process the
    flow run had started is gone within 10 s of the kill, or within 30 s of the cancel
    request (the worker notices it first); return the flow run as the server then has it."""
    from personaloom.state.lock import running
    from tests.test_stop import snapshot, wait_gone

    worker, log = prefect.start("worker", "start", "--pool", POOL, "--run-once")
    lock_path = out / ".personaloom" / "lock"
    deadline = time.monotonic() + timeout
    try:
        lock: dict[str, Any] = {}
        while not any("EngineCor" in c["name"] for c in lock.get("children", [])):
            assert time.monotonic() < deadline, f"no engine in {timeout} s:\n{_tail(log)}"
            assert worker.poll() is None, f"the worker ended first:\n{_tail(log)}"
            time.sleep(0.5)
            try:
                lock = json.loads(lock_path.read_text())
            except (FileNotFoundError, json.JSONDecodeError):
                lock = {}
        flow_pid = lock["pid"]
        procs = {**snapshot(flow_pid), **{c["pid"]: c["start"] for c in lock["children"]}}
        procs[flow_pid] = lock["process_start"]
        names = sorted(c["name"] for c in lock["children"])
        sent = time.monotonic()
        if how == "kill":
            os.kill(flow_pid, signal.SIGKILL)
        else:
            prefect.run("flow-run", "cancel", run_id)
        gone = wait_gone(procs, sent, timeout=60)
        print(f"flow run process {flow_pid} on the worker, {how}: it and {names} gone after "
              f"{sorted(gone.values())} s")  # fmt: skip
        left = [pid for pid, start in procs.items() if running(pid, start)]
        assert not left, f"left running after the flow run's {how}: {left} of {names}"
        assert max(gone.values()) <= (10.0 if how == "kill" else 30.0), gone
        while time.monotonic() < deadline:
            run = prefect.flow_run(run_id)
            if run["state"]["type"] not in {"SCHEDULED", "PENDING", "RUNNING", "CANCELLING"}:
                return run
            time.sleep(1)
        raise AssertionError(f"flow run {run_id} not ended after the {how}:\n{_tail(log)}")
    finally:
        _kill_group(worker)


@pytest.mark.timeout(1500)
def test_adhoc_deployment_runs_on_a_process_worker_then_merge(tmp_path, repo_root):
    port = _free_port()
    home = tmp_path / "prefect-home"
    home.mkdir()
    logs = tmp_path / "logs"
    logs.mkdir()
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_SERVER_UI_ENABLED": "false",
        "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false",  # no nightly runs
        "PERSONALOOM_PROJECT_DIR": str(repo_root),  # prefect.yaml's pull step
        "PERSONALOOM_ENFORCE_EAGER": "1",
        "HF_HUB_OFFLINE": "1",
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
        "HF_TOKEN": "hf_servertestsecret42",  # must not reach the API's logs
    }
    prefect = Prefect(env, logs, repo_root)
    server, server_log = prefect.start(
        "server", "start", "--host", "127.0.0.1", "--port", str(port)
    )
    try:
        prefect.wait_healthy(server, server_log, timeout=120)
        prefect.run("work-pool", "create", POOL, "--type", "process")
        deployed = prefect.run("--no-prompt", "deploy", "--all", timeout=300)
        for name in (
            "build-corpus/nightly",
            "build-corpus/adhoc",
            "release/release",
            "merge/merge",
            "evaluate/evaluate",
        ):
            flow, deployment = name.split("/")
            response = httpx.get(f"{prefect.api}/deployments/name/{flow}/{deployment}", timeout=10)
            assert response.status_code == 200, f"{name} not deployed:\n{deployed[-3000:]}"

        out = tmp_path / "corpus"
        # Every build-corpus parameter, and in `config` every run setting away from its
        # default where the run stays small (critic_rounds=0: this test counts rows).
        config = {
            "taxonomy": "human",
            "personas": 2,
            "sessions": 0,
            "turns": 3,
            "seed": 3,
            "critic_rounds": 0,
            "judges": "off",
            "shard": "0/1",
            "preset": "quick",
            "batch_size": 2,
            "quotas": ["demographics.gender=uniform"],
            "conversation_mode": "one_call",
            "update_probability": 0.25,
            "dedup_threshold": 0.9,
            "max_tokens_section": 48,
            "max_tokens_narrative": 48,
            "compact_json": False,
            "license": "cc-by-4.0",
            "pretty_name": "Server test personas",
        }
        command = ["prefect", "deployment", "run", "build-corpus/adhoc", "(server test)"]
        parameters = dict(
            out=str(out),
            config=config,
            project=str(repo_root),
            restart=False,
            seed_from_date=False,
            command=command,
        )
        # A flow run cancelled from the API, and one killed on the worker (kill -9 of its
        # process alone), leave no engine behind ...
        cancelled = _stop_flow_run_once_its_engine_runs(
            prefect, prefect.deploy_run("build-corpus/adhoc", **parameters), out, "cancel"
        )
        assert cancelled["state"]["type"] == "CANCELLED", cancelled["state"]
        killed = _stop_flow_run_once_its_engine_runs(
            prefect, prefect.deploy_run("build-corpus/adhoc", **parameters), out, "kill"
        )
        assert killed["state"]["type"] in {"CRASHED", "FAILED"}, killed["state"]
        # ... and the next flow run on the worker starts its own engine, resumes the folder
        # and completes.
        run_id = prefect.deploy_run("build-corpus/adhoc", **parameters)
        run = prefect.work_once(run_id, timeout=600)
        assert run["state"]["type"] == "COMPLETED", run["state"]
        assert run["parameters"]["config"]["personas"] == 2

        personas = pq.read_table(sorted((out / "personas").glob("train-*.parquet"))[0])
        assert personas.num_rows == 2
        assert sorted(personas.column("index").to_pylist()) == [0, 1]
        assert (out / "README.md").read_text().startswith("---")
        manifest = json.loads((out / ".personaloom" / "manifest.json").read_text())
        assert manifest["status"] == "complete"
        recorded = manifest["config"]
        for key, value in config.items():
            expected = {"index": 0, "count": 1} if key == "shard" else value
            assert recorded[key] == expected, key
        assert manifest["command"] == command
        card = (out / "README.md").read_text()
        settings = yaml.safe_load(
            card.split("All run settings")[1].split("```yaml\n")[1].split("```")[0]
        )
        assert {k: settings[k] for k in config if k != "shard"} == {
            k: v for k, v in config.items() if k != "shard"
        }
        assert shlex.join(command) in card and "Server test personas" in card
        assert not (out / "conversations").exists()

        # The flow run's log carries vLLM's important lines, including those of its
        # EngineCore and Worker processes (relayed, see personaloom/engine/vllm_logs.py).
        lines = prefect.run_logs(run_id)
        vllm = [line for line in lines if line["name"].startswith("vllm")]
        assert any("KV cache size" in line["message"] for line in vllm), [
            line["message"][:120] for line in lines
        ]
        assert any(line["message"].startswith("(EngineCore") for line in vllm)
        assert any(line["level"] >= 30 for line in vllm)  # warnings too (eager mode's)
        assert not any("hf_servertestsecret42" in line["message"] for line in lines)

        merged = tmp_path / "merged"
        run_id = prefect.deploy_run(
            "merge/merge", parts=[str(out)], out=str(merged), embeddings=False
        )
        run = prefect.work_once(run_id, timeout=240)
        assert run["state"]["type"] == "COMPLETED", run["state"]
        merged_personas = pq.read_table(sorted((merged / "personas").glob("train-*.parquet"))[0])
        assert merged_personas.equals(personas)
        assert json.loads((merged / ".personaloom" / "manifest.json").read_text())["merge"]

        # The same deployment with engine=openai: the flow run on the worker sends its
        # requests to a real `vllm serve` (tests/support/vllm_server.py) and loads no model.
        from personaloom.engine.embedded import embedded_model_dir
        from tests.support.vllm_server import VLLMServer

        served = VLLMServer(embedded_model_dir(), logs / "vllm-serve.log", max_num_seqs=8)
        served.start()
        try:
            over_http = tmp_path / "over-http"
            http_config = {
                **config,
                "engine": "openai",
                "base_url": served.url,
                "model": served.model,
                "concurrency": 4,
                "quotas": [],
            }
            run_id = prefect.deploy_run(
                "build-corpus/adhoc", **{**parameters, "out": str(over_http), "config": http_config}
            )
            run = prefect.work_once(run_id, timeout=600)
            assert run["state"]["type"] == "COMPLETED", run["state"]
            manifest = json.loads((over_http / ".personaloom" / "manifest.json").read_text())
            assert manifest["engine"] == "openai" and manifest["model"] == served.model
            http_personas = pq.read_table(over_http / "personas")
            assert http_personas.num_rows == 2
            lines = prefect.run_logs(run_id)
            assert not any("KV cache size" in line["message"] for line in lines)  # no engine
        finally:
            served.kill()
    finally:
        _kill_group(server)
