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
            "import sys, time; from personaloom.state.lock import RunLock; "
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
from personaloom.state.lock import RunLock
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
    from personaloom.cli import build_parser
    from personaloom.cli.generate import build_config
    from personaloom.run import pipeline

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

    from personaloom.state.run_state import RunState

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


# A value away from the default for every run setting, as typed on the command line.
NON_DEFAULT = {
    "taxonomy": ("k12_student", "k12_student"),
    "personas": ("3", 3),
    "sessions": ("2", 2),
    "turns": ("4", 4),
    "seed": ("11", 11),
    "model": ("some-org/some-model", "some-org/some-model"),
    "engine": ("openai", "openai"),
    "base_url": ("http://127.0.0.1:9/v1", "http://127.0.0.1:9/v1"),
    "concurrency": ("16", 16),
    "critic_rounds": ("1", 1),
    "judges": ("filter", "filter"),
    "judge_model": ("some-org/judge", "some-org/judge"),
    "judge_engine": ("openai", "openai"),
    "judge_base_url": ("http://127.0.0.1:8/v1", "http://127.0.0.1:8/v1"),
    "shard": ("1/2", {"index": 1, "count": 2}),
    "preset": ("deep", "deep"),
    "batch_size": ("5", 5),
    "max_candidates": ("7", 7),
    "min_sessions": ("1", 1),
    "quotas": ("demographics.gender=uniform", ["demographics.gender=uniform"]),
    "conversation_mode": ("one_call", "one_call"),
    "update_probability": ("0.25", 0.25),
    "dedup_threshold": ("0.9", 0.9),
    "max_tokens_section": ("64", 64),
    "max_tokens_narrative": ("80", 80),
    "max_tokens_turn": ("40", 40),
    "compact_json": (None, True),
    "engine_options": ("max_num_seqs=16", {"max_num_seqs": 16}),
    "fidelity_margin": ("0.2", 0.2),
    "fidelity_min_group": ("5", 5),
    "license": ("cc-by-4.0", "cc-by-4.0"),
    "pretty_name": ("My personas", "My personas"),
}


def test_every_run_setting_is_a_generate_option():
    from personaloom.run.config import RunConfig

    assert set(NON_DEFAULT) == set(RunConfig.model_fields)


@pytest.mark.parametrize("field", sorted(NON_DEFAULT))
def test_each_option_reaches_the_run_config(tmp_path, capsys, field):
    import yaml

    from personaloom.cli.generate import option_name

    typed, expected = NON_DEFAULT[field]
    args = [option_name(field)] + ([typed] if typed is not None else [])
    if field in ("engine", "base_url"):  # the HTTP engine needs both
        args = ["--engine", "openai", "--base-url", "http://127.0.0.1:9/v1", "--model", "m"]
    if field in ("judge_engine", "judge_base_url"):  # a judge endpoint needs all three
        args = ["--judge-model", "j", "--judge-engine", "openai"]
        args += ["--judge-base-url", "http://127.0.0.1:8/v1"]
    if field == "min_sessions":  # at most the sessions a persona gets
        args += ["--sessions", "2"]
    out = tmp_path / "corpus"
    assert main(["generate", "--out", str(out), "--dry-run", *args]) == 0
    resolved = yaml.safe_load(capsys.readouterr().out)
    assert resolved[field] == expected
    assert not out.exists()  # a dry run writes nothing


@pytest.mark.parametrize("judges", ["off", "filter", "advisory", "auto"])
def test_every_judges_mode_is_accepted(tmp_path, capsys, judges):
    import yaml

    assert main(["generate", "--out", str(tmp_path / "c"), "--dry-run", "--judges", judges]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["judges"] == judges


def test_options_override_the_config_file(tmp_path, capsys):
    import yaml

    config = tmp_path / "run.yaml"
    config.write_text("personas: 5\nseed: 9\njudges: 'off'\n")
    args = ["generate", "--out", str(tmp_path / "c"), "--dry-run", "--config", str(config)]
    assert main([*args, "--seed", "2"]) == 0
    resolved = yaml.safe_load(capsys.readouterr().out)
    assert (resolved["personas"], resolved["seed"], resolved["judges"]) == (5, 2, "off")


def test_the_flow_file_sees_the_clis_prefect_settings(tmp_path):
    """Prefect reads its settings when a flow file first imports it: the CLI's defaults
    (a 180 s start timeout for the temporary API server, instead of Prefect's 20 s that a
    busy machine overran) must be in the environment by then. In a fresh interpreter
    without the test session's own value."""
    import os
    import subprocess
    import sys

    code = (
        "from personaloom.cli.flow_runner import load_flow_module\n"
        "from personaloom.project import Project\n"
        "load_flow_module(Project.locate(None))\n"
        "from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS as s\n"
        "print(s.value())\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_SERVER_EPHEMERAL")}
    env["PREFECT_HOME"] = str(tmp_path / "prefect")
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-1] == "180"
