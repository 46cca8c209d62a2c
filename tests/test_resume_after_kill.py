"""Crash safety of `personaloom generate` on the real engine, through real processes.

One interrupted run, followed end to end (each `generate` is a subprocess in its own
session, so killing its process group also kills vLLM's engine process):

A. `generate` is killed with SIGKILL (the whole process group) as soon as its first batch
   is committed, while the next one is being generated;
D. the same folder with a changed configuration is refused (exit 2), nothing touched;
   a copy of the interrupted folder is restarted with `--restart` (see the restart test);
P. the same command resumes and, once an engine request of its batch is on its way, only
   its main process is killed with SIGKILL (as a kill -9 of a pid, or an out-of-memory
   kill, does): vLLM's engine processes, Prefect's temporary server and the rest must end
   by themselves within 10 s (personaloom/engine/_parent_watch);
B. the same command resumes, generates the missing batches and is killed by the named kill
   point `finalize-after-shards` (after the personas shards, before the card and manifest);
C. the same command again: every batch is done, so it only finalizes (no engine at all).

The run needs a replacement (exact N): the project's one critic, planted below, rejects
persona 1, so after batches 0-2 the run plans batch 3 for id 3 in its place. B generates
that batch from the plan on disk, and C finalizes exactly N kept from the same plan.

Then the folder is released to the Hub stand-in. `HF_TOKEN` holds a known value in every
run; the last test looks for it in every output, file and released file.
"""

from __future__ import annotations

import collections
import json
import os
import re
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
from personaloom.publish.release import release
from personaloom.state.lock import RunLock
from personaloom.state.run_state import RunState
from tests.support.hubstub import HubStub

pytestmark = [pytest.mark.engine, pytest.mark.timeout(1800)]

TOKEN = "hf_ResumeAfterKillSecret0123456789"
SEED = 11
N = 3
REJECTED = 1  # the planted critic's one rejection; id N replaces it
BATCHES = N + 1  # N slots of one persona each, then the replacement batch
# The small clinic taxonomy of tests/data and short sections: what is tested is the run
# layer (kill, resume, exact N), and a persona of the human taxonomy costs 4x the calls.
CLINIC = Path(__file__).resolve().parent / "data" / "taxonomies" / "clinic.yaml"
ARGS = [
    "--taxonomy", "clinic", "--max-tokens-section", "48", "--max-tokens-narrative", "48",
    "--personas", str(N), "--batch-size", "1", "--sessions", "0",
    "--critic-rounds", "1", "--judges", "off", "--seed", str(SEED),
]  # fmt: skip
CHANGED = [*ARGS[:-1], str(SEED + 1)]  # the same, with another --seed
CRITICS = "rules: {}\njudges: {persona: [], conversation: []}\n"
PLANTED = f"""
from personaloom.critic.rule_critics import rule_critic


@rule_critic("planted_rejection", kinds=("persona",), defaults={{}})
def planted_rejection(record, ctx):
    if record.get("index") == {REJECTED}:
        return ctx.fail("planted: persona {REJECTED} is rejected by the test")
    return ctx.ok()
"""


def make_project(root: Path) -> Path:
    (root / "taxonomies").mkdir(parents=True)
    shutil.copy(CLINIC, root / "taxonomies")
    shutil.copytree(Path(__file__).resolve().parents[1] / "prompts", root / "prompts")
    (root / "validators" / "critics").mkdir(parents=True)
    (root / "validators" / "critics.yaml").write_text(CRITICS)
    (root / "validators" / "critics" / "planted.py").write_text(PLANTED)
    return root


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
    # run P (kill -9 of the main pid alone): its processes (pid -> start time, from /proc and
    # from its lock), seconds until each had ended, those of its session still alive after
    p_procs: dict[int, str] = field(default_factory=dict)
    p_names: list[str] = field(default_factory=list)
    p_gone: dict[int, float] = field(default_factory=dict)
    p_left: dict[int, str] = field(default_factory=dict)
    done_after_p: list[int] = field(default_factory=list)

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
    project = out.parent / "project"  # beside the corpus folder (and its restarted copy)
    return [
        sys.executable, "-m", "personaloom.cli", "generate", "--out", str(out),
        "--project", str(project), *args,
    ]  # fmt: skip


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


def _run_and_kill_main_pid_mid_batch(story: Story) -> Run:
    """Resume, and kill -9 the main process alone once an engine request is on its way
    (the progress line counting requests); watch what becomes of its processes."""
    from tests.test_stop import session_processes, snapshot, wait_gone

    log_out, log_err = story.out.parent / "p.stdout", story.out.parent / "p.stderr"
    started = time.monotonic()
    with open(log_out, "w") as so, open(log_err, "w") as se:
        proc = subprocess.Popen(
            _command(story.out, ARGS), env=story.env, stdout=so, stderr=se, start_new_session=True
        )
        try:
            while not re.search(r"\w+: \d+/[1-9]\d* requests", log_out.read_text()):
                if proc.poll() is not None:
                    raise AssertionError(f"generate ended early:\n{log_err.read_text()}")
                if time.monotonic() - started > 1200:
                    raise AssertionError("no engine request in 20 minutes")
                time.sleep(0.05)
            lock = json.loads((RunState(story.out).root / "lock").read_text())
            story.p_procs = {
                **snapshot(proc.pid),
                **{c["pid"]: c["start"] for c in lock.get("children", [])},
            }
            story.p_names = [c["name"] for c in lock.get("children", [])]
            killed = time.monotonic()
            os.kill(proc.pid, signal.SIGKILL)  # the main pid alone
            proc.wait(timeout=60)
            story.p_gone = wait_gone(story.p_procs, killed)
            story.p_left = session_processes(proc.pid)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    run = Run(
        "P", proc.pid, proc.returncode, log_out.read_text(), log_err.read_text(),
        time.monotonic() - started,
    )  # fmt: skip
    story.runs["P"] = run
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
    make_project(base / "project")
    state = RunState(story.out)

    _run_and_kill_after_first_batch(story)  # A
    story.after_kill = files(story.out)
    story.done_after_kill = state.completed()
    story.lock_after_kill = RunLock(state.root / "lock").read()

    _run(story, "D", CHANGED)  # a changed configuration: refused
    shutil.copytree(story.out, story.restart_copy)

    _run_and_kill_main_pid_mid_batch(story)  # P
    story.done_after_p = state.completed()

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


def test_killing_the_main_process_alone_mid_batch_leaves_no_process_behind(story: Story) -> None:
    p = story.runs["P"]
    print(f"kill -9 of pid {p.pid} alone: {story.p_names} gone after "
          f"{sorted(story.p_gone.values())} s")  # fmt: skip
    assert p.returncode == -signal.SIGKILL
    assert story.done_after_p == story.done_after_kill  # killed mid-batch: nothing new saved
    # vLLM's EngineCore and Worker, Prefect's server, the resource tracker: all recorded
    assert len(story.p_procs) >= 3, story.p_names
    # names are /proc/PID/comm, cut at 15 characters: "VLLM::EngineCor"
    assert any("EngineCor" in name for name in story.p_names), story.p_names
    assert set(story.p_gone) == set(story.p_procs), set(story.p_procs) - set(story.p_gone)
    assert max(story.p_gone.values()) <= 10.0
    assert not story.p_left  # nothing of its session either
    # the processes had ended by themselves: B's takeover of P's lock had nothing to end
    assert "ended the processes it left running" not in story.runs["B"].stderr


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
    # exactly N kept: the planted rejection replaced by the next id (the plan on disk)
    expected = {S.persona_id(SEED, i) for i in range(N + 1)}
    assert set(kept) == expected - {S.persona_id(SEED, REJECTED)}
    assert set(kept) | rejected == expected and S.persona_id(SEED, REJECTED) in rejected
    plan = json.loads((story.out / ".personaloom" / "replacements.json").read_text())
    assert {int(k): int(v) for k, v in plan["slot_of"].items()} == {N: REJECTED}
    counts = RunState(story.out).read_manifest()["counts"]
    assert counts["personas_requested"] == N and counts["personas_kept"] == len(kept) == N
    assert counts["replacements"] == 1
    assert sorted(table.column("index").to_pylist()) == sorted(
        int(pid.rsplit("-", 1)[1]) for pid in kept
    )


def test_completed_batches_were_not_generated_again(story: Story) -> None:
    events = batch_done_events(story.out)
    assert collections.Counter(e["batch"] for e in events) == {b: 1 for b in range(BATCHES)}
    a_pid = story.runs["A"].pid
    assert {e["batch"] for e in events if e["pid"] == a_pid} == set(story.done_after_kill)
    # batch 0's files are byte for byte those the killed run committed
    for name, data in story.after_kill.items():
        if name.startswith(".personaloom/batches/b000000."):
            assert (story.out / name).read_bytes() == data, name
    # P was killed before it finished a batch; B generated exactly the batches A had not
    # finished, C generated nothing
    b_pid, p_pid = story.runs["B"].pid, story.runs["P"].pid
    assert not [e for e in events if e["pid"] == p_pid]
    assert {e["batch"] for e in events if e["pid"] == b_pid} == set(range(BATCHES)) - set(
        story.done_after_kill
    )  # the replacement batch included
    assert {e["pid"] for e in events} == {a_pid, b_pid}  # C and the refused D: none
    # B loaded the engine (its lines are in the run's console log, not on the terminal)
    assert ENGINE_LOADED in (story.out / ".personaloom" / "logs" / "console.log").read_text()


def test_no_partial_orphan_or_lock_files_remain(story: Story) -> None:
    names = [str(p.relative_to(story.out)) for p in story.out.rglob("*") if p.is_file()]
    assert not [n for n in names if ".tmp" in n or ".stale." in n], names
    assert not (story.out / ".personaloom" / "lock").exists()
    batch_files = sorted(n for n in names if n.startswith(".personaloom/batches/"))
    assert {n.split("/")[-1].split(".")[0] for n in batch_files} == {
        f"b{b:06d}" for b in range(BATCHES)
    }
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
