"""What `generate` shows while it runs: progress lines, and engine noise diverted to the run
folder's log (tested with real processes writing to their inherited descriptors)."""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap

from personaloom import progress
from personaloom.cli.console import ConsoleProgress


class _Request:
    def __init__(self, stage: str) -> None:
        self.stage = stage


class _Completion:
    def __init__(self, tokens: int) -> None:
        self.output_tokens = tokens


def test_engine_calls_and_run_units_reach_an_attached_display():
    stream = io.StringIO()
    display = ConsoleProgress(stream, live=False)
    requests = [_Request("persona sections"), _Request("persona sections"), _Request("judges")]
    with progress.attached(display):
        progress.advance("personas", 0, 4)
        progress.submitted(requests)
        progress.completed(requests, [_Completion(30), _Completion(10), _Completion(5)], 2.0)
        progress.advance("personas", 2, 4)
    progress.advance("personas", 3, 4)  # detached: not shown
    assert display.stages["persona sections"].done == 2
    assert display.stages["persona sections"].tokens == 40
    assert display.stages["judges"].sent == 1
    printed = stream.getvalue().splitlines()
    assert printed[-1].startswith("personas: 2/4 (50%), ETA ")
    assert "persona sections: 2/2 requests, 30 output tok/s" in printed[-1]
    assert not any("3/4" in line for line in printed)


def test_a_failing_display_is_detached_and_never_fails_the_run():
    class Broken:
        calls = 0

        def advance(self, unit, done, total):
            Broken.calls += 1
            raise OSError("terminal gone")

    with progress.attached(Broken()):
        progress.advance("personas", 1, 2)
        progress.advance("personas", 2, 2)
    assert Broken.calls == 1


def test_engine_processes_write_to_the_log_and_progress_to_the_terminal(tmp_path):
    log = tmp_path / "logs" / "console.log"
    script = textwrap.dedent(
        f"""
        import subprocess, sys
        from pathlib import Path
        from personaloom.cli.console import divert_output
        with divert_output(Path({str(log)!r})) as terminal:
            subprocess.run(["sh", "-c", "echo child-warning >&2; echo child-stdout"])
            print("own-print", flush=True)
            terminal.write("progress-line\\n")
        print("after", flush=True)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["progress-line", "after"]
    assert done.stderr == ""
    assert log.read_text().split() == ["child-warning", "child-stdout", "own-print"]
