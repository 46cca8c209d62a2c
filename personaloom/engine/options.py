"""vLLM engine arguments given by the user (`--engine-option KEY=VALUE`, `engine_options:`).

They go through to `vllm.LLM(...)` unchanged, after a check against vLLM's own
`EngineArgs`: an unknown key, or a value its declared type refuses, is the user's error
(exit 2, naming the option). A few keys are set from other options and may not be given
here. `SPEED_ONLY` names the arguments that change how fast or where the engine runs but
not what it generates; the run fingerprint leaves them out, so they may change on resume.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
from collections.abc import Mapping
from typing import Any

from personaloom.errors import UserError

# Set by personaloom from its own options (or fixed, for reproducibility).
MANAGED = {
    "model": "use --model",
    "tokenizer": "the tokenizer is the model's own (--model)",
    "seed": "every request carries its own seed, derived from --seed",
    "structured_outputs_config": "structured output is set by --compact-json",
}
# Speed, memory and placement only: the same requests give the same rows. Everything else
# (dtype, quantization, max_model_len, kv_cache_dtype, revision...) may change the rows and
# is part of the run fingerprint.
SPEED_ONLY = frozenset(
    {
        "tensor_parallel_size",
        "pipeline_parallel_size",
        "data_parallel_size",
        "distributed_executor_backend",
        "gpu_memory_utilization",
        "kv_cache_memory_bytes",
        "cpu_offload_gb",
        "swap_space",
        "max_num_seqs",
        "max_num_batched_tokens",
        "enable_prefix_caching",
        "enable_chunked_prefill",
        "enforce_eager",
        "block_size",
        "disable_log_stats",
        "max_parallel_loading_workers",
        "compilation_config",
    }
)


def option_label(key: str) -> str:
    return f"--engine-option {key}"


def parse_option(text: str) -> tuple[str, Any]:
    """`KEY=VALUE` from the command line; VALUE is read as a YAML scalar (4, 0.9, true,
    fp8, [1, 2]) so that it arrives with the type a YAML config would give it."""
    import yaml

    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise UserError(f"--engine-option {text}: expected KEY=VALUE, e.g. tensor_parallel_size=4")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key, value


@functools.cache
def _engine_fields() -> dict[str, Any]:
    from vllm.engine.arg_utils import EngineArgs

    return {f.name: f.type for f in dataclasses.fields(EngineArgs)}


def check_engine_options(options: Mapping[str, Any], engine: str) -> None:
    """Raise UserError naming the first option vLLM would not take (imports vLLM)."""
    if not options:
        return
    if engine != "vllm":
        first = next(iter(options))
        raise UserError(
            f"{option_label(first)}: engine options are vLLM engine arguments for "
            f"--engine vllm; a served model (--engine {engine}) takes them where it is served"
        )
    for key in options:
        if key in MANAGED:
            raise UserError(f"{option_label(key)}: set by personaloom ({MANAGED[key]})")
    fields = _engine_fields()
    from pydantic import TypeAdapter, ValidationError

    for key, value in options.items():
        if key not in fields:
            close = difflib.get_close_matches(key.replace("-", "_"), list(fields), n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise UserError(f"{option_label(key)}: not a vLLM engine argument{hint}")
        try:
            adapter = TypeAdapter(fields[key])
        except Exception:  # a type pydantic cannot build a validator for: vLLM checks it
            continue
        try:
            adapter.validate_python(value)
        except ValidationError as exc:
            first = exc.errors()[0]["msg"]
            raise UserError(f"{option_label(key)}={value!r}: {first}") from None


def fingerprinted(options: Mapping[str, Any]) -> dict[str, Any]:
    """The options that may change the rows (see SPEED_ONLY)."""
    return {k: v for k, v in sorted(options.items()) if k not in SPEED_ONLY}
