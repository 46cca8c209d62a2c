"""The installed environment must import the engine stack (a broken torchvision breaks it)."""

import subprocess
import sys


def test_transformers_and_vllm_import_in_a_fresh_interpreter():
    code = (
        "import transformers, vllm; from transformers import LlamaConfig; print(vllm.__version__)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip()


def test_embedded_model_wheel_ships_a_gguf_file():
    from personaloom.engine.embedded import gguf_file

    path = gguf_file()
    assert path.suffix == ".gguf" and path.stat().st_size > 50_000_000
