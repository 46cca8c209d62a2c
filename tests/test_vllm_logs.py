"""The relay that carries vLLM's log lines from all its processes to the flow run's log
(personaloom/engine/vllm_logs.py). The real engine's lines reaching a Prefect server's log are
checked in tests/test_prefect_server.py; here a child process applies the same dictConfig
file vLLM's processes apply, and the parent drains what it wrote."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from personaloom.engine import vllm_logs

CHILD = """
import json, logging, logging.config, os
logging.config.dictConfig(json.load(open(os.environ["VLLM_LOGGING_CONFIG_PATH"])))
log = logging.getLogger("vllm.v1.core.kv_cache_utils")
log.debug("debug lines stay out")
log.info("CPU KV cache size: 93,184 tokens")
log.warning("token %s leaked", os.environ["HF_TOKEN"])
logging.getLogger("other").warning("not vLLM's")
"""


@pytest.fixture
def clean_env(monkeypatch):
    monkeypatch.delenv("VLLM_LOGGING_CONFIG_PATH", raising=False)
    monkeypatch.delenv("VLLM_CONFIGURE_LOGGING", raising=False)
    monkeypatch.setenv("VLLM_LOGGING_LEVEL", "WARNING")
    monkeypatch.setenv("HF_TOKEN", "hf_relaysecret123")


def test_child_process_lines_reach_the_parent_redacted(clean_env):
    with vllm_logs.relay_vllm_logs() as relay:
        assert relay is not None
        assert os.environ["VLLM_LOGGING_CONFIG_PATH"] == str(relay.config_path)
        relay.drain()  # whatever an earlier test in this process left
        child = subprocess.run(
            [sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=120
        )
        assert child.returncode == 0, child.stderr
        records = relay.drain()
    assert "VLLM_LOGGING_CONFIG_PATH" not in os.environ  # restored on leaving
    assert [(r.name, r.levelname) for r in records] == [
        ("vllm.v1.core.kv_cache_utils", "INFO"),
        ("vllm.v1.core.kv_cache_utils", "WARNING"),
    ]
    messages = [r.getMessage() for r in records]
    assert "CPU KV cache size: 93,184 tokens" in messages[0]
    assert messages[0].startswith("(MainProcess) [<string>:")
    assert "hf_relaysecret123" not in messages[1] and "***" in messages[1]
    assert "hf_relaysecret123" not in relay.path.read_text()  # not on disk either
    # The console keeps vLLM's format and the user's level: the INFO line is not printed.
    assert "KV cache" not in child.stdout and "WARNING" in child.stdout
    assert relay.drain() == []  # read once


def test_a_partial_line_waits_for_its_end(clean_env):
    with vllm_logs.relay_vllm_logs() as relay:
        assert relay is not None
        relay.drain()
        line = json.dumps(
            {"name": "vllm.x", "levelno": 20, "levelname": "INFO", "created": 1.0, "message": "m"}
        )
        with open(relay.path, "a") as handle:
            handle.write(line[:10])
        assert relay.drain() == []
        with open(relay.path, "a") as handle:
            handle.write(line[10:] + "\n")
        (record,) = relay.drain()
        assert record.getMessage() == "m" and record.created == 1.0


def test_the_users_own_vllm_logging_is_left_alone(clean_env, monkeypatch, tmp_path):
    mine = tmp_path / "mine.json"
    monkeypatch.setenv("VLLM_LOGGING_CONFIG_PATH", str(mine))
    with vllm_logs.relay_vllm_logs() as relay:
        assert relay is None
        assert os.environ["VLLM_LOGGING_CONFIG_PATH"] == str(mine)
    assert os.environ["VLLM_LOGGING_CONFIG_PATH"] == str(mine)
    monkeypatch.delenv("VLLM_LOGGING_CONFIG_PATH")
    monkeypatch.setenv("VLLM_CONFIGURE_LOGGING", "0")
    with vllm_logs.relay_vllm_logs() as relay:
        assert relay is None
        assert "VLLM_LOGGING_CONFIG_PATH" not in os.environ


def test_relay_folders_of_dead_processes_are_removed(tmp_path):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    orphan = tmp_path / f"personaloom-vllm-log-{gone.pid}-abc"
    mine = tmp_path / f"personaloom-vllm-log-{os.getpid()}-def"
    other = tmp_path / "personaloom-vllm-log-notapid-ghi"
    for folder in (orphan, mine, other):
        folder.mkdir()
        (folder / "vllm-log.jsonl").write_text("{}\n")
    assert vllm_logs.remove_orphans(tmp_path) == [orphan]
    assert not orphan.exists() and mine.exists() and other.exists()
