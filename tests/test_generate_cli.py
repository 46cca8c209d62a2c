"""`personaloom generate` on bad input and on a folder held by a live run (no model needed:
every case fails before the engine starts)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from personaloom.cli import main


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--personas", "-1"], "--personas"),
        (["--personas", "0"], "--personas"),
        (["--sessions", "61"], "--sessions"),
        (["--turns", "0"], "--turns"),
        (["--shard", "3/2"], "--shard"),
        (["--shard", "x"], "--shard"),
        (["--taxonomy", "no_such_taxonomy"], "--taxonomy"),
        (["--taxonomy", "missing/file.yaml"], "--taxonomy"),
        (["--engine", "tgi"], "--engine"),
        (["--engine", "openai"], "--base-url"),
        (["--engine", "openai", "--model", "m", "--base-url", "ftp://x"], "--base-url"),
        (["--preset", "huge"], "--preset"),
        (["--config", "no_such_config.yaml"], "--config"),
        (["--quota", "demographics.nope=uniform"], "demographics.nope"),
    ],
)
def test_bad_option_exits_2_names_it_and_writes_nothing(tmp_path, capsys, args, named):
    out = tmp_path / "corpus"
    assert main(["generate", "--out", str(out), *args]) == 2
    assert named in capsys.readouterr().err
    assert not out.exists()


def test_out_below_a_file_is_refused(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["generate", "--out", str(blocker / "corpus")]) == 2
    assert "--out" in capsys.readouterr().err


def test_folder_held_by_a_live_run_is_refused(tmp_path, capsys):
    out = tmp_path / "corpus"
    lock = out / ".personaloom" / "lock"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from personaloom.lock import RunLock; "
            f"RunLock({str(lock)!r}).acquire(); print('ready', flush=True); time.sleep(120)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "ready"
        assert main(["generate", "--out", str(out), "--personas", "2"]) == 2
        assert "held by a running personaloom" in capsys.readouterr().err
    finally:
        holder.kill()
        holder.wait()


FAST_FAILING_ENGINE = ["--engine", "openai", "--model", "m", "--base-url", "http://127.0.0.1:9"]
HOLD = """
import sys
from personaloom.lock import RunLock
with RunLock(sys.argv[1], command="holder"):
    print("held", flush=True)
    sys.stdin.read()
"""


@pytest.fixture
def hold():
    """hold(path): another live process holds the lock file `path` until the test ends."""
    procs = []

    def start(path):
        proc = subprocess.Popen(
            [sys.executable, "-c", HOLD, str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        procs.append(proc)
        assert proc.stdout.readline().strip() == "held"
        return proc

    yield start
    for proc in procs:
        proc.stdin.close()
        proc.wait(timeout=30)


def _files(folder):
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _prepared_run(out, args):
    """A run folder as a live `generate` leaves it (state prepared, a temporary file in
    flight), without an engine."""
    from personaloom import pipeline
    from personaloom.cli import build_parser
    from personaloom.commands.generate import build_config

    parsed = build_parser().parse_args(["generate", "--out", str(out), *args])
    run = pipeline.prepare(build_config(parsed), out)
    in_flight = run.state.batches / ".b000000.personas.parquet.1234abcd.tmp"
    in_flight.parent.mkdir(parents=True, exist_ok=True)
    in_flight.write_bytes(b"half a batch")
    return run


@pytest.mark.parametrize(
    ("extra", "lock"),
    [([], "lock"), (["--restart"], "lock"), ([], "release.lock"), (["--restart"], "release.lock")],
)
def test_a_refused_generate_leaves_the_live_holders_folder_untouched(
    tmp_path, capsys, hold, extra, lock
):
    out = tmp_path / "corpus"
    # an engine that fails fast (port 9: discard, closed) should the refusal ever regress
    args = ["--personas", "2", "--sessions", "0", *FAST_FAILING_ENGINE]
    run = _prepared_run(out, args)
    proc = hold(run.state.root / lock)
    before = _files(out)
    assert main(["generate", "--out", str(out), *args, *extra]) == 2
    err = capsys.readouterr().err
    assert "held by a running personaloom" in err and f"pid {proc.pid}" in err
    assert _files(out) == before  # no state rewritten, the writer's temporary file kept


def test_orphans_of_a_killed_run_are_cleaned_despite_its_stale_lock(tmp_path):
    import json
    import socket

    from personaloom.runstate import RunState

    out = tmp_path / "corpus"
    args = ["--personas", "2", "--sessions", "0"]
    run = _prepared_run(out, args)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (run.state.root / "lock").write_text(
        json.dumps({"pid": dead.pid, "hostname": socket.gethostname()})
    )
    card_tmp = out / ".README.md.0badc0de.tmp"
    card_tmp.write_text("half a card")
    aside = run.state.root / ".lock.stale.0badc0de"
    aside.write_text("{}")
    assert RunState(out).clean_orphans() == 3
    assert not card_tmp.exists() and not aside.exists()
    assert not any(out.rglob("*.tmp"))
