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
