"""Crash safety of `personaloom generate` on the real engine, through real processes.

One interrupted run, followed end to end (each `generate` is a subprocess in its own
session, so killing its process group also kills vLLM's engine process):

A. `generate` is killed with SIGKILL (the whole process group) as soon as its first batch
   is committed, while the next one is being generated;
D. the same folder with a changed configuration is refused (exit 2), nothing touched;
   a copy of the interrupted folder is restarted with `--restart` (see the restart test);
B. the same command resumes, generates the missing batches and is killed by the named kill
   point `finalize-after-shards` (after the personas shards, before the card and manifest);
C. the same command again: every batch is done, so it only finalizes (no engine at all).

Then the folder is released to the Hub stand-in. `HF_TOKEN` holds a known value in every
run; the last test looks for it in every output, file and released file.
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from personaloom import schema as S
from personaloom.errors import UserError
from personaloom.lock import RunLock
from personaloom.release import release
from personaloom.runstate import RunState
from tests.support.hubstub import HubStub

pytestmark = [pytest.mark.engine, pytest.mark.timeout(1800)]

TOKEN = "hf_ResumeAfterKillSecret0123456789"
SEED = 11
N = 3
ARGS = [
    "--personas", str(N), "--batch-size", "1", "--sessions", "0", "--seed", str(SEED),
    "--critic-rounds", "0",
]  # fmt: skip
CHANGED = [*ARGS[:-3], str(SEED + 1), *ARGS[-2:]]  # the same, with another --seed
ENGINE_LOADED = "Loading safetensors checkpoint"  # vLLM's line when it loads the weights


@dataclass
class Run:
    name: str
    pid: int
    returncode: int
    stdout: str
    stderr: str
    seconds: float


@dataclass
class Story:
    out: Path
    restart_copy: Path
    prefect_home: Path
    env: dict[str, str]
    runs: dict[str, Run] = field(default_factory=dict)
    after_kill: dict[str, bytes] = field(default_factory=dict)  # the folder after run A
    done_after_kill: list[int] = field(default_factory=list)
    group_gone_after: float | None = None  # seconds until A's process group had vanished
    lock_after_kill: dict | None = None
    after_finalize_kill: dict[str, bytes] = field(default_factory=dict)
    release_refusal: str = ""  # what `release` said about the folder after run B

    def outputs(self) -> list[str]:
        return [text for run in self.runs.values() for text in (run.stdout, run.stderr)]


def files(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _command(out: Path, args: list[str]) -> list[str]:
    return [sys.executable, "-m", "personaloom.cli", "generate", "--out", str(out), *args]


def _run(story: Story, name: str, args: list[str], **env: str) -> Run:
    """Run `generate` to its end (an exit or a self-kill), in its own session."""
    started = time.monotonic()
    out = story.restart_copy if name == "restart" else story.out
    proc = subprocess.Popen(
        _command(out, args),
        env={**story.env, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    stdout, stderr = proc.communicate(timeout=1500)
    run = Run(name, proc.pid, proc.returncode, stdout, stderr, time.monotonic() - started)
    story.runs[name] = run
    return run


def _run_and_kill_after_first_batch(story: Story) -> Run:
    marker = RunState(story.out).done_marker(0)
    log_out, log_err = story.out.parent / "a.stdout", story.out.parent / "a.stderr"
    started = time.monotonic()
    with open(log_out, "w") as so, open(log_err, "w") as se:
        proc = subprocess.Popen(
            _command(story.out, ARGS), env=story.env, stdout=so, stderr=se, start_new_session=True
        )
        try:
            while not marker.exists():
                if proc.poll() is not None:
                    raise AssertionError(
                        f"generate ended before its first batch:\n{log_err.read_text()}"
                    )
                if time.monotonic() - started > 1200:
                    raise AssertionError("no batch committed in 20 minutes")
                time.sleep(0.05)
            os.killpg(proc.pid, signal.SIGKILL)  # kill -9 of generate and vLLM's engine
            proc.wait(timeout=60)
            gone = time.monotonic()
            while _group_alive(proc.pid) and time.monotonic() - gone < 60:
                time.sleep(0.1)
            story.group_gone_after = (
                None if _group_alive(proc.pid) else round(time.monotonic() - gone, 2)
            )
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    run = Run(
        "A", proc.pid, proc.returncode, log_out.read_text(), log_err.read_text(),
        time.monotonic() - started,
    )  # fmt: skip
    story.runs["A"] = run
    return run


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory) -> Story:
    base = tmp_path_factory.mktemp("kill")
    env = {k: v for k, v in os.environ.items() if k != "PERSONALOOM_KILL_AT"}
    env.update(
        PERSONALOOM_ENFORCE_EAGER="1",
        HF_HUB_OFFLINE="1",
        VLLM_NO_USAGE_STATS="1",
        HF_TOKEN=TOKEN,
        PREFECT_HOME=str(base / "prefect-home"),
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="600",  # a busy 2-core machine
    )
    story = Story(base / "corpus", base / "restarted", base / "prefect-home", env)
    state = RunState(story.out)

    _run_and_kill_after_first_batch(story)  # A
    story.after_kill = files(story.out)
    story.done_after_kill = state.completed()
    story.lock_after_kill = RunLock(state.root / "lock").read()

    _run(story, "D", CHANGED)  # a changed configuration: refused
    shutil.copytree(story.out, story.restart_copy)

    _run(story, "B", ARGS, PERSONALOOM_KILL_AT="finalize-after-shards")
    story.after_finalize_kill = files(story.out)
    try:
        release(story.out, str(base / "release-repo"))
    except UserError as exc:
        story.release_refusal = str(exc)
    _run(story, "C", ARGS)
    for run in story.runs.values():
        print(f"run {run.name}: exit {run.returncode} in {run.seconds:.0f} s", file=sys.stderr)
    return story


def batch_done_events(out: Path) -> list[dict]:
    return [e for e in RunState(out).events() if e["event"] == "batch_done"]


# -- A: killed while generating --------------------------------------------------------------
def test_the_kill_lands_mid_run_and_takes_the_engine_process_with_it(story: Story) -> None:
    a = story.runs["A"]
    assert a.returncode == -signal.SIGKILL
    assert story.done_after_kill and story.done_after_kill[0] == 0
    assert len(story.done_after_kill) < N  # batches were still to do: the kill was mid-run
    assert story.group_gone_after is not None  # no process of the group (vLLM's) survived
    # the killed run's lock is left behind, recognisably stale
    assert story.lock_after_kill is not None and story.lock_after_kill["pid"] == a.pid
    assert not os.path.exists(f"/proc/{a.pid}")


def test_a_changed_configuration_is_refused_and_touches_nothing(story: Story) -> None:
    d = story.runs["D"]
    assert d.returncode == 2, d.stderr
    assert "holds a run with a different configuration" in d.stderr and "--restart" in d.stderr
    assert "Traceback" not in d.stderr
    assert files(story.restart_copy) == story.after_kill  # the copy was taken after D


def test_restart_discards_the_interrupted_run(story: Story) -> None:
    """--restart accepts the changed configuration and starts from nothing (an engine that
    is not there makes the new run stop at its first batch: exit 1, state saved)."""
    old = json.loads(story.after_kill[".personaloom/manifest.json"])
    engine = ["--engine", "openai", "--model", "m", "--base-url", "http://127.0.0.1:9"]
    run = _run(story, "restart", [*CHANGED, *engine, "--restart"])
    assert run.returncode == 1, run.stderr
    assert "endpoint unreachable" in run.stderr
    state = RunState(story.restart_copy)
    assert state.completed() == []  # batch 0 of the old run is gone
    manifest = state.read_manifest()
    assert manifest["fingerprint"] != old["fingerprint"]
    assert manifest["config"]["seed"] == SEED + 1
    assert next(e["restart"] for e in state.events() if e["event"] == "prepare") is True
    assert not any(story.restart_copy.rglob("*.parquet"))
    assert not (state.root / "lock").exists()


# -- B: killed by the named kill point after writing the personas shards --------------------
def test_a_run_killed_while_finalizing_is_not_releasable_and_resumes(story: Story) -> None:
    b, c = story.runs["B"], story.runs["C"]
    assert b.returncode == -signal.SIGKILL, b.stderr
    written = story.after_finalize_kill
    assert "personas/train-00000-of-00001.parquet" in written
    assert "README.md" not in written  # killed before the card
    manifest = json.loads(written[".personaloom/manifest.json"])
    assert manifest["status"] != "complete"
    assert "missing dataset card" in story.release_refusal
    assert not (story.out.parent / "release-repo").exists()

    assert c.returncode == 0, c.stderr
    assert ENGINE_LOADED not in c.stderr  # nothing left to generate: no engine at all
    assert RunState(story.out).read_manifest()["status"] == "complete"
    assert (story.out / "README.md").read_text().startswith("---")


def test_every_persona_id_is_accounted_for_exactly_once(story: Story) -> None:
    shards = sorted((story.out / "personas").glob("*.parquet"))
    assert [p.name for p in shards] == ["train-00000-of-00001.parquet"]
    table = pq.read_table(shards[0])
    kept = table.column("persona_id").to_pylist()
    assert len(kept) == len(set(kept))
    rejected_files = sorted((story.out / ".personaloom" / "rejected").glob("*.parquet"))
    rejected = {
        r["record_id"]
        for p in rejected_files
        for r in pq.read_table(p).to_pylist()
        if r["kind"] == "persona"
    }
    expected = {S.persona_id(SEED, i) for i in range(N)}
    assert set(kept) <= expected and set(kept) | rejected == expected
    counts = RunState(story.out).read_manifest()["counts"]
    assert counts["personas_requested"] == N and counts["personas_kept"] == len(kept)
    assert sorted(table.column("index").to_pylist()) == sorted(
        int(pid.rsplit("-", 1)[1]) for pid in kept
    )


def test_completed_batches_were_not_generated_again(story: Story) -> None:
    events = batch_done_events(story.out)
    assert collections.Counter(e["batch"] for e in events) == {b: 1 for b in range(N)}
    a_pid = story.runs["A"].pid
    assert {e["batch"] for e in events if e["pid"] == a_pid} == set(story.done_after_kill)
    # batch 0's files are byte for byte those the killed run committed
    for name, data in story.after_kill.items():
        if name.startswith(".personaloom/batches/b000000."):
            assert (story.out / name).read_bytes() == data, name
    # B generated exactly the batches A had not finished, C generated nothing
    b_pid = story.runs["B"].pid
    assert {e["batch"] for e in events if e["pid"] == b_pid} == set(range(N)) - set(
        story.done_after_kill
    )
    assert {e["pid"] for e in events} == {a_pid, b_pid}  # C and the refused D: none
    assert ENGINE_LOADED in story.runs["B"].stderr


def test_no_partial_orphan_or_lock_files_remain(story: Story) -> None:
    names = [str(p.relative_to(story.out)) for p in story.out.rglob("*") if p.is_file()]
    assert not [n for n in names if ".tmp" in n or ".stale." in n], names
    assert not (story.out / ".personaloom" / "lock").exists()
    batch_files = sorted(n for n in names if n.startswith(".personaloom/batches/"))
    assert {n.split("/")[-1].split(".")[0] for n in batch_files} == {f"b{b:06d}" for b in range(N)}
    for name in names:
        if name.endswith(".parquet"):
            pq.read_metadata(story.out / name)  # every Parquet file is complete


# -- the token ---------------------------------------------------------------------------
def test_the_token_is_in_no_output_log_file_or_release(story: Story, tmp_path: Path) -> None:
    repo = "acme/resumed"
    with HubStub(TOKEN) as hub:
        env = {k: v for k, v in story.env.items() if not k.startswith(("HF_", "HUGGING_FACE"))}
        env.update(
            HF_ENDPOINT=hub.url,
            HF_TOKEN=TOKEN,
            HF_HUB_DISABLE_XET="1",
            HF_HUB_OFFLINE="0",
            HF_HUB_DISABLE_TELEMETRY="1",
            HF_HOME=str(tmp_path / "hf-home"),
        )
        released = subprocess.run(
            [sys.executable, "-m", "personaloom.cli", "release", str(story.out),
             "--to", f"hf://datasets/{repo}", "--tag", "v1.0.0"],
            env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert released.returncode == 0, released.stderr  # the stand-in accepted the token
        hub_files = hub.files_at(repo, "v1.0.0")
        messages = [c.message for c in hub.history(repo, "v1.0.0")]
    assert "personas/train-00000-of-00001.parquet" in hub_files
    outputs = [*story.outputs(), released.stdout, released.stderr]
    assert all(TOKEN not in text for text in outputs)
    assert all(TOKEN not in m for m in messages)
    assert all(TOKEN.encode() not in data for data in hub_files.values())
    searched = 0
    for folder in (story.out, story.restart_copy, story.prefect_home):
        for path in folder.rglob("*"):
            if path.is_file():
                searched += 1
                assert TOKEN.encode() not in path.read_bytes(), path
    assert searched > 20
