"""RunLock: one live holder per folder, stale locks taken over, clear refusals."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from personaloom.errors import UserError
from personaloom.state.lock import RunLock

HOLDER = """
import sys
from personaloom.state.lock import RunLock
with RunLock(sys.argv[1], command="holder"):
    print("held", flush=True)
    sys.stdin.read()
"""


@pytest.fixture
def live_holder(tmp_path: Path):
    """Another process holding tmp_path/lock until the test ends."""
    path = tmp_path / "lock"
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "held"
        yield path, proc
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_lock_file_records_pid_and_host_and_is_removed_on_exit(tmp_path: Path) -> None:
    path = tmp_path / "state" / "lock"
    with RunLock(path, command="test"):
        info = json.loads(path.read_text())
        assert info["hostname"] == socket.gethostname()
        assert info["command"] == "test"
    assert not path.exists()


def test_second_holder_is_refused_while_the_first_lives(live_holder) -> None:
    path, proc = live_holder
    with pytest.raises(UserError) as err, RunLock(path):
        pass
    assert str(path) in str(err.value)
    assert f"pid {proc.pid}" in str(err.value)
    assert path.exists()  # the refusal leaves the holder's lock alone


def test_lock_of_a_dead_process_is_taken_over(tmp_path: Path) -> None:
    path = tmp_path / "lock"
    path.write_text(json.dumps({"pid": dead_pid(), "hostname": socket.gethostname()}))
    with RunLock(path) as lock:
        assert lock.read()["command"]
    assert not path.exists()


def test_lock_from_another_host_is_refused_with_the_file_to_remove(tmp_path: Path) -> None:
    path = tmp_path / "lock"
    path.write_text(json.dumps({"pid": 1, "hostname": "elsewhere.example"}))
    with pytest.raises(UserError, match=r"elsewhere\.example.*delete"), RunLock(path):
        pass


def test_lock_is_reentrant_within_one_process(tmp_path: Path) -> None:
    path = tmp_path / "lock"
    with RunLock(path):
        with RunLock(path):
            pass
        assert path.exists()  # the inner exit keeps the outer hold
    assert not path.exists()


def test_holder_reports_live_holders_only(live_holder, tmp_path: Path) -> None:
    path, proc = live_holder
    assert RunLock(path).holder()["pid"] == proc.pid
    stale = tmp_path / "stale"
    stale.write_text(json.dumps({"pid": dead_pid(), "hostname": socket.gethostname()}))
    assert RunLock(stale).holder() is None
