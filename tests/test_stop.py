"""Stopping cleanly, with real processes (README "Failure semantics and resuming").

Dummy runs (fast): a command run by `personaloom.cli.stop.Stopper` (as `main()` runs every
command) that takes a RunLock, activates the parent watch and starts a stand-in for
vLLM's processes: a spawned "EngineCore" with a "Worker" of its own, a child that ignores
SIGTERM, a forked child, and multiprocessing's resource tracker.

- kill -9 of the parent alone: every process of the tree is gone within 10 s;
- SIGINT (to the pid, or to the process group as Ctrl-C sends it) and SIGTERM: exit 130 or
  143 within 10 s with one line on stderr, no traceback, no process left, lock released;
  a second signal exits at once;
- a stale lock's recorded processes: a later run ends those still alive (start time
  matching), leaves a recycled pid alone and, when it cannot end one, refuses naming it.

A real `personaloom generate` (with Prefect's temporary server): against an HTTP engine that
never answers (marker `server`), Ctrl-C to its process group and SIGTERM to its pid exit
within 10 s with the line and 130 / 143, leave no process and release the lock; with vLLM
(marker `engine`), SIGINT to its pid alone mid-batch does the same, and the same command
then completes with every id once.
"""

from __future__ import annotations

import collections
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from personaloom import schema as S
from personaloom.state.lock import RunLock, descendants, process_start, running
from personaloom.state.run_state import RunState

DEADLINE_S = 10.0
REPO = Path(__file__).resolve().parent.parent

DUMMY = textwrap.dedent(
    """
    import multiprocessing as mp
    import os
    import signal
    import subprocess
    import sys
    import time

    from personaloom.cli import stop
    from personaloom.engine._parent_watch import activate
    from personaloom.state.lock import RunLock

    # Children are quiet on Ctrl-C, as vLLM's and uvicorn's are on the terminal (they
    # write into the run's log): SIGINT's default action, no KeyboardInterrupt traceback.
    QUIET = "import signal, time; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    STUBBORN = QUIET + "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"


    def engine_core():
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        subprocess.Popen([sys.executable, "-c", QUIET + "time.sleep(600)"])  # its Worker
        time.sleep(600)


    def start_tree():
        activate()
        mp.get_context("spawn").Process(target=engine_core, name="EngineCore").start()
        subprocess.Popen([sys.executable, "-c", STUBBORN])
        if os.fork() == 0:
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            time.sleep(600)
            os._exit(0)


    def command(folder):
        with RunLock(os.path.join(folder, "lock"), command="dummy"):
            stop.describe(lambda: f"interrupted: 1 of 2 batches saved in {folder}; resume with: dummy")
            start_tree()
            print("ready", flush=True)
            with stop.hold():
                time.sleep(600)


    if __name__ == "__main__":
        mode, folder = sys.argv[1], sys.argv[2]
        if mode == "watch":  # no stopper: only the children's parent watch
            start_tree()
            print("ready", flush=True)
            time.sleep(600)
        else:
            sys.exit(stop.Stopper(["dummy"]).run(command, folder) or 0)
    """
)


# -- helpers -----------------------------------------------------------------------------
def snapshot(pid: int) -> dict[int, str]:
    """pid -> start time of every live descendant of `pid`."""
    procs = {}
    for child in descendants(pid):
        start = process_start(child)
        if start is not None:
            procs[child] = start
    return procs


def wait_gone(procs: dict[int, str], since: float, timeout: float = 30.0) -> dict[int, float]:
    """Seconds (from `since`) until each process had ended; those still running after
    `timeout` are missing from the result."""
    gone: dict[int, float] = {}
    while len(gone) < len(procs) and time.monotonic() - since < timeout:
        for pid, start in procs.items():
            if pid not in gone and not running(pid, start):
                gone[pid] = round(time.monotonic() - since, 2)
        time.sleep(0.05)
    return gone


def session_processes(sid: int) -> dict[int, str]:
    """Live processes of session `sid` (a command started with start_new_session=True and
    everything it started, re-parented or not)."""
    procs = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[-1].split()
        except OSError:
            continue
        if fields[0] not in ("Z", "X") and int(fields[3]) == sid and int(entry) != sid:
            procs[int(entry)] = fields[19]
    return procs


class Dummy:
    def __init__(self, folder: Path, mode: str) -> None:
        self.folder = folder
        script = folder / "dummy.py"
        script.write_text(DUMMY)
        self.stderr_path = folder / "stderr.txt"
        self.stderr_file = open(self.stderr_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, str(script), mode, str(folder)],
            stdout=subprocess.PIPE,
            stderr=self.stderr_file,
            text=True,
            start_new_session=True,
            cwd=folder,
        )
        assert self.proc.stdout.readline().strip() == "ready", self.stderr()
        # spawn child, its Worker, the stubborn child, the forked one, the resource tracker
        deadline = time.monotonic() + 30
        while len(snapshot(self.proc.pid)) < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        self.tree = snapshot(self.proc.pid)
        assert len(self.tree) == 5, self.tree

    def stderr(self) -> str:
        self.stderr_file.flush()
        return self.stderr_path.read_text()

    def close(self) -> None:
        for pid, start in {**self.tree, **session_processes(self.proc.pid)}.items():
            if running(pid, start):
                os.kill(pid, signal.SIGKILL)
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.stderr_file.close()


@pytest.fixture
def dummy(tmp_path: Path):
    made: list[Dummy] = []

    def start(mode: str = "stopper") -> Dummy:
        made.append(Dummy(tmp_path, mode))
        return made[-1]

    yield start
    for d in made:
        d.close()


# -- children die with their parent ------------------------------------------------------
def test_children_end_themselves_when_the_parent_is_killed_with_sigkill(dummy) -> None:
    run = dummy("watch")
    killed = time.monotonic()
    os.kill(run.proc.pid, signal.SIGKILL)
    run.proc.wait()
    gone = wait_gone(run.tree, killed)
    print(f"kill -9 of the parent alone: children gone after {sorted(gone.values())} s")
    assert set(gone) == set(run.tree), f"left running: {set(run.tree) - set(gone)}"
    assert max(gone.values()) <= DEADLINE_S
    assert not session_processes(run.proc.pid)


# -- Ctrl-C and SIGTERM ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("sig", "to_group"),
    [(signal.SIGINT, False), (signal.SIGINT, True), (signal.SIGTERM, False)],
    ids=["sigint-pid", "sigint-group", "sigterm-pid"],
)
def test_a_signal_stops_the_command_its_processes_and_says_what_is_saved(
    dummy, sig: int, to_group: bool
) -> None:
    run = dummy()
    lock = json.loads((run.folder / "lock").read_text())
    deadline = time.monotonic() + 10
    while len(lock["children"]) < 5 and time.monotonic() < deadline:  # refreshed every 1 s
        time.sleep(0.2)
        lock = json.loads((run.folder / "lock").read_text())
    assert {c["pid"]: c["start"] for c in lock["children"]} == run.tree

    sent = time.monotonic()
    (os.killpg if to_group else os.kill)(run.proc.pid, sig)
    code = run.proc.wait(timeout=30)
    took = time.monotonic() - sent
    gone = wait_gone(run.tree, sent)
    print(f"{signal.Signals(sig).name} to the {'group' if to_group else 'pid'}: exit {code} "
          f"after {took:.2f} s, children gone after {sorted(gone.values())} s")  # fmt: skip
    assert code == 128 + sig
    assert took <= DEADLINE_S
    err = run.stderr()
    assert err == f"interrupted: 1 of 2 batches saved in {run.folder}; resume with: dummy\n"
    assert set(gone) == set(run.tree) and max(gone.values()) <= DEADLINE_S
    assert not session_processes(run.proc.pid)
    assert not (run.folder / "lock").exists()  # released: nothing left to take over


def test_a_second_signal_exits_at_once(dummy) -> None:
    """The child that ignores SIGTERM holds the first stop for END_GRACE_S (4 s); a second
    Ctrl-C does not wait for it, and the children still end themselves."""
    run = dummy()
    sent = time.monotonic()
    os.kill(run.proc.pid, signal.SIGINT)
    time.sleep(0.5)
    os.kill(run.proc.pid, signal.SIGINT)
    code = run.proc.wait(timeout=30)
    took = time.monotonic() - sent
    assert code == 130
    assert took < 2.5, took
    assert run.stderr().startswith("interrupted: 1 of 2 batches saved")
    gone = wait_gone(run.tree, sent)
    assert set(gone) == set(run.tree) and max(gone.values()) <= DEADLINE_S


# -- taking over a stale lock -------------------------------------------------------------
def _sleeper() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _stale_lock(path: Path, children: list[dict]) -> None:
    record = {
        "pid": _dead_pid(),
        "hostname": socket.gethostname(),
        "process_start": "1",
        "command": "personaloom generate",
        "children": children,
    }
    path.write_text(json.dumps(record))


def test_a_takeover_ends_the_dead_runs_processes_but_not_a_recycled_pid(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    left_running, recycled = _sleeper(), _sleeper()
    try:
        path = tmp_path / "lock"
        _stale_lock(
            path,
            [
                {"pid": left_running.pid, "start": process_start(left_running.pid),
                 "name": "VLLM::EngineCore"},
                # this pid was reused: the recorded start time is another process's
                {"pid": recycled.pid, "start": "12345", "name": "VLLM::Worker"},
            ],
        )  # fmt: skip
        capfd.readouterr()
        started = time.monotonic()
        with RunLock(path) as lock:
            assert lock.read()["pid"] == os.getpid()
        took = time.monotonic() - started
        assert left_running.wait(timeout=1) == -signal.SIGTERM  # ended while taking over
        assert recycled.poll() is None  # untouched
        err = capfd.readouterr().err
        assert err.count("\n") == 1, err  # one line
        assert f"{left_running.pid} (VLLM::EngineCore)" in err and "ended" in err
        assert str(recycled.pid) not in err
        assert took < 5
    finally:
        for proc in (left_running, recycled):
            proc.kill()
            proc.wait()


def test_a_takeover_with_nothing_left_running_is_silent(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "lock"
    gone = _sleeper()
    start = process_start(gone.pid)
    gone.kill()
    gone.wait()
    _stale_lock(path, [{"pid": gone.pid, "start": start, "name": "python"}])
    capfd.readouterr()
    with RunLock(path):
        pass
    assert capfd.readouterr().err == ""


TAKEOVER = """
import sys
from personaloom.errors import UserError
from personaloom.state.lock import RunLock
try:
    RunLock(sys.argv[1]).acquire()
except UserError as exc:
    print(exc)
    sys.exit(2)
"""
NOBODY = 65534


def _python_for_nobody() -> str | None:
    """A Python interpreter the unprivileged user may run (the test venv's may live in
    /root), with this checkout on its path (the lock imports the standard library only)."""
    for candidate in (sys.executable, "/usr/bin/python3"):
        try:
            subprocess.run(
                [candidate, "-c", "import personaloom.state.lock"],
                user=NOBODY, group=NOBODY, extra_groups=[], check=True, capture_output=True,
                cwd="/tmp", env={"PYTHONPATH": str(REPO)}, timeout=60,
            )  # fmt: skip
        except (OSError, subprocess.SubprocessError):
            continue
        return candidate
    return None


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run the taker as another user")
def test_a_takeover_refuses_naming_the_processes_it_cannot_end() -> None:
    """The dead run's process belongs to root; the taker runs as nobody, which may not
    signal it (a folder shared between users)."""
    python = _python_for_nobody()
    if python is None:
        pytest.skip("no Python interpreter that user nobody may run")
    folder = Path(tempfile.mkdtemp(prefix="personaloom-takeover-", dir="/tmp"))
    folder.chmod(0o777)
    survivor = _sleeper()
    try:
        path = folder / "lock"
        start = process_start(survivor.pid)
        _stale_lock(path, [{"pid": survivor.pid, "start": start, "name": "VLLM::EngineCore"}])
        path.chmod(0o666)
        before = path.read_text()
        taker = subprocess.run(
            [python, "-c", TAKEOVER, str(path)],
            user=NOBODY, group=NOBODY, extra_groups=[], capture_output=True, text=True,
            cwd="/tmp", env={"PYTHONPATH": str(REPO)}, timeout=60,
        )  # fmt: skip
        assert taker.returncode == 2, taker.stderr
        assert re.search(rf"could not be ended: {survivor.pid} \(VLLM::EngineCore\)", taker.stdout)
        assert f"kill -9 {survivor.pid}" in taker.stdout
        assert survivor.poll() is None
        assert path.read_text() == before  # refused: the stale lock stays as it was
    finally:
        survivor.kill()
        survivor.wait()
        for entry in folder.iterdir():
            entry.unlink()
        folder.rmdir()


# -- a real generate, interrupted ----------------------------------------------------------
SEED = 37
N = 2
# The small clinic taxonomy of tests/data and short sections: what is tested is the run
# layer (kill, stop, resume), and a persona of the human taxonomy costs 4x the engine calls.
CLINIC = str(Path(__file__).resolve().parent / "data" / "taxonomies" / "clinic.yaml")
ARGS = [
    "--taxonomy", CLINIC, "--max-tokens-section", "48", "--max-tokens-narrative", "48",
    "--personas", str(N), "--batch-size", "1", "--sessions", "0", "--seed", str(SEED),
    "--critic-rounds", "0",
]  # fmt: skip


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PERSONALOOM_KILL_AT"}
    env.update(
        PERSONALOOM_ENFORCE_EAGER="1",
        HF_HUB_OFFLINE="1",
        PREFECT_HOME=str(tmp_path / "prefect-home"),
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="600",  # a busy 2-core machine
    )
    return env


def _interrupt(
    args: list[str], env: dict[str, str], log: Path, sig: int, to_group: bool, ready
) -> dict:
    """Start `personaloom generate ARGS` in its own session, send `sig` once `ready(log)`
    says so, and gather what happened."""
    out = Path(args[args.index("--out") + 1])
    with open(log, "w") as handle:
        proc = subprocess.Popen(
            [sys.executable, "-m", "personaloom.cli", "generate", *args],
            env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        state, started = RunState(out), time.monotonic()
        while not ready(log):
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() - started < 1200, "not ready in 20 minutes"
            time.sleep(0.05)
        # what a test can see of the run: its descendants and what its lock records
        procs = snapshot(proc.pid)
        lock = json.loads((state.root / "lock").read_text())
        procs.update({c["pid"]: c["start"] for c in lock.get("children", [])})
        sent = time.monotonic()
        (os.killpg if to_group else os.kill)(proc.pid, sig)
        code = proc.wait(timeout=60)
        took = round(time.monotonic() - sent, 2)
        return {
            "code": code,
            "took": took,
            "output": log.read_text(),
            "procs": procs,
            "names": [c["name"] for c in lock.get("children", [])],
            "gone": wait_gone(procs, sent),
            "left": session_processes(proc.pid),
            "saved": len(state.completed()),
            "lock": (state.root / "lock").exists(),
        }
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _check_stopped(run: dict, sig: int, out: Path, saved: int, command: str) -> None:
    print(f"{signal.Signals(sig).name}: exit {run['code']} after {run['took']} s; "
          f"{run['names']} gone after {sorted(run['gone'].values())} s")  # fmt: skip
    assert run["code"] == 128 + sig, run["output"]
    assert run["took"] <= DEADLINE_S
    assert "Traceback" not in run["output"], run["output"]
    assert "Error logging to API" not in run["output"], run["output"]
    line = (
        f"interrupted: {saved} of {N} batches saved in {out / '.personaloom'}; "
        f"resume with: {command}\n"
    )
    assert run["output"].endswith(line), run["output"][-2000:]
    assert run["saved"] == saved
    assert set(run["gone"]) == set(run["procs"]), set(run["procs"]) - set(run["gone"])
    assert max(run["gone"].values()) <= DEADLINE_S
    assert not run["left"]  # nothing of its session either
    assert not run["lock"]  # released


@pytest.mark.server
@pytest.mark.timeout(900)
def test_generate_stopped_mid_request_by_ctrl_c_or_sigterm(tmp_path: Path) -> None:
    """The whole command with Prefect's temporary server, against an HTTP engine whose
    requests never return: Ctrl-C to the process group (the server gets it too and dies at
    once, as in a terminal), then, resumed, SIGTERM to the pid alone."""
    from tests.httpstub import ChatServer

    out = tmp_path / "corpus"
    with ChatServer() as engine:
        engine.script.extend(["hang:600"] * 100)
        engine_args = ["--engine", "openai", "--model", "m", "--base-url", engine.url]
        args = ["--out", str(out), *ARGS, *engine_args]
        command = shlex.join(["personaloom", "generate", *args])
        runs = []
        for n, (sig, to_group) in enumerate(((signal.SIGINT, True), (signal.SIGTERM, False))):
            asked = len(engine.requests)
            runs.append(
                _interrupt(
                    args, _env(tmp_path), tmp_path / f"{n}.log", sig, to_group,
                    ready=lambda log, asked=asked: len(engine.requests) > asked,
                )
            )  # fmt: skip
    for run, sig in zip(runs, (signal.SIGINT, signal.SIGTERM), strict=True):
        assert any(name == "python" for name in run["names"]), run["names"]  # the server
        _check_stopped(run, sig, out, 0, command)


@pytest.mark.engine
@pytest.mark.timeout(3600)
def test_generate_interrupted_mid_batch_stops_within_10_s_and_resumes(tmp_path: Path) -> None:
    """SIGINT to the pid alone (vLLM's processes get no signal but ours) one second into
    batch 1, then the same command resumes and completes."""
    out = tmp_path / "corpus"
    args = ["--out", str(out), *ARGS]
    state = RunState(out)
    run = _interrupt(
        args, _env(tmp_path), tmp_path / "1.log", signal.SIGINT, to_group=False,
        ready=lambda log: state.is_done(0) and time.sleep(1.0) is None,
    )  # fmt: skip
    # names are /proc/PID/comm, cut at 15 characters: "VLLM::EngineCor"
    assert any("EngineCor" in name for name in run["names"]), run["names"]
    _check_stopped(run, signal.SIGINT, out, 1, shlex.join(["personaloom", "generate", *args]))

    final = subprocess.run(
        [sys.executable, "-m", "personaloom.cli", "generate", *args],
        env=_env(tmp_path), capture_output=True, text=True, timeout=1500,
    )  # fmt: skip
    assert final.returncode == 0, final.stderr
    assert state.read_manifest()["status"] == "complete"
    events = [e for e in state.events() if e["event"] == "batch_done"]
    assert collections.Counter(e["batch"] for e in events) == {b: 1 for b in range(N)}
    kept = pq.read_table(out / "personas" / "train-00000-of-00001.parquet").column("persona_id")
    kept = kept.to_pylist()
    rejected = {
        r["record_id"]
        for p in sorted((state.root / "rejected").glob("*.parquet"))
        for r in pq.read_table(p).to_pylist()
        if r["kind"] == "persona"
    }
    assert len(kept) == len(set(kept))
    assert set(kept) | rejected >= {S.persona_id(SEED, i) for i in range(N)}
