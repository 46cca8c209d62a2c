"""Benchmark: raw `vllm.LLM.chat` vs the pipeline's engine layer and persona stages.

The same persona prompts (same messages, sampling parameters and seeds) go once straight
through `vllm.LLM.chat` and once through `personaloom.generate.personas.enrich/narrate` (request
building, structured-output parsing and validation, record assembly) plus writing the
Parquet shard, on the same engine in the same run. Prints output tokens/s for both and the
pipeline/raw ratio (target >= 0.9), and what writing the sections in order costs in prompt
tokens: the prompt tokens per persona with the earlier sections in every prompt (the
fields generated before, the earlier narrative paragraphs) and without them
(`context=False`, one extra warm-up pass; the outputs of that pass differ, so the
difference is an estimate of the extra tokens, not an exact count).

    .venv/bin/python bench/generation.py [--personas 32] [--repeat 2]

`--preload-compare` measures instead the raw `vllm.LLM.chat` output tokens/s of the same
requests with the CPU libraries preloaded into vLLM's processes (the default,
personaloom/engine/cpu_libs.py) and without (`PERSONALOOM_NO_PRELOAD=1`): each in its own
process (a preload only takes effect when a process starts), alternated `--repeat` times.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--personas", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--preload-compare", action="store_true")
    parser.add_argument("--raw-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.preload_compare:
        return preload_compare(args)

    from personaloom import schema as S
    from personaloom.engine import EngineSpec, GenerationRequest, create_engine, set_engine
    from personaloom.engine.base import Completion
    from personaloom.generate.personas import enrich, narrate
    from personaloom.publish.shards import write_shards
    from personaloom.records import to_table
    from personaloom.run import pipeline
    from personaloom.run.config import RunConfig

    spec = EngineSpec()
    started = time.perf_counter()
    engine = create_engine(spec)
    set_engine(spec, engine)
    load_s = time.perf_counter() - started

    with tempfile.TemporaryDirectory() as tmp:
        run = pipeline.prepare(RunConfig(personas=args.personas, seed=args.seed), Path(tmp) / "out")
        drafts, _ = pipeline.sample_drafts(run, run.persona_ids())
        prompts = run.prompts()

        # Record the exact requests the stages send, by wrapping the engine once (warm-up).
        sent: list[list[GenerationRequest]] = []

        class Recorder:
            model_name = engine.model_name
            stats = engine.stats

            def generate(self, requests):
                sent.append(list(requests))
                return engine.generate(requests)

        warm = copy.deepcopy(drafts)
        tokens_before = engine.stats.prompt_tokens
        enrich(Recorder(), prompts, warm, seed=args.seed)
        narrate(Recorder(), prompts, warm, seed=args.seed)
        with_context = engine.stats.prompt_tokens - tokens_before
        if args.raw_only:  # a child of --preload-compare: one raw pass
            tokens, t0 = 0, time.perf_counter()
            for batch in sent:
                params = [engine._params(r) for r in batch]
                outs = engine._llm.chat(
                    [r.messages for r in batch], sampling_params=params, use_tqdm=False
                )
                tokens += sum(len(o.outputs[0].token_ids) for o in outs)
            seconds = time.perf_counter() - t0
            result = {"tok_s": tokens / seconds, "preloaded": engine.preloaded, "load_s": load_s}
            print("RESULT " + json.dumps(result), flush=True)
            engine.close()  # left to interpreter exit, vLLM's engine process may not stop
            return
        # The same stages without the earlier sections in the prompts (not recorded).
        blind = copy.deepcopy(drafts)
        tokens_before = engine.stats.prompt_tokens
        enrich(engine, prompts, blind, seed=args.seed, context=False)
        narrate(engine, prompts, blind, seed=args.seed, context=False)
        without_context = engine.stats.prompt_tokens - tokens_before

        def raw_pass() -> tuple[int, float]:
            tokens, t0 = 0, time.perf_counter()
            for batch in sent:
                params = [engine._params(r) for r in batch]
                outs = engine._llm.chat(
                    [r.messages for r in batch], sampling_params=params, use_tqdm=False
                )
                tokens += sum(len(o.outputs[0].token_ids) for o in outs)
            return tokens, time.perf_counter() - t0

        def pipeline_pass() -> tuple[int, float]:
            fresh = copy.deepcopy(drafts)
            before, t0 = engine.stats.output_tokens, time.perf_counter()
            in_engine = engine.stats.seconds
            enrich(engine, prompts, fresh, seed=args.seed)
            narrate(engine, prompts, fresh, seed=args.seed)
            records = [d.record(engine.model_name) for d in fresh if d.rejected is None]
            write_shards(to_table(records, S.PERSONAS), Path(tmp) / "bench-shards")
            engine_seconds.append(engine.stats.seconds - in_engine)
            return engine.stats.output_tokens - before, time.perf_counter() - t0

        raw_rates: list[float] = []
        pipe_rates: list[float] = []
        raw_seconds: list[float] = []
        pipe_seconds: list[float] = []
        engine_seconds: list[float] = []
        for _ in range(args.repeat):  # interleaved so drift hits both sides alike
            tokens, seconds = raw_pass()
            raw_rates.append(tokens / seconds)
            raw_seconds.append(seconds)
            tokens, seconds = pipeline_pass()
            pipe_rates.append(tokens / seconds)
            pipe_seconds.append(seconds)
        _ = Completion  # keep import for type readers

    raw, pipe = statistics.median(raw_rates), statistics.median(pipe_rates)
    requests = sum(len(b) for b in sent)
    print(
        f"\nmodel: {engine.model_name}; engine load {load_s:.0f} s; {args.personas} personas, "
        f"{requests} requests in {len(sent)} engine calls per pass, median of {args.repeat}\n"
    )
    print("| path | output tokens/s | ratio vs raw |")
    print("|---|---:|---:|")
    print(f"| raw `vllm.LLM.chat` | {raw:.1f} | 1.00 |")
    print(f"| personaloom stages + Parquet | {pipe:.1f} | {pipe / raw:.2f} |")
    # Where the pipeline's extra time goes: inside engine.generate (vLLM plus the
    # engine layer's request/Completion conversion) or outside it (prompt rendering,
    # parsing and validation, record assembly, Parquet).
    med = statistics.median
    print(
        f"\nper pass (median): raw {med(raw_seconds):.1f} s; pipeline {med(pipe_seconds):.1f} s, "
        f"of which in engine.generate {med(engine_seconds):.1f} s and outside it "
        f"{med(pipe_seconds) - med(engine_seconds):.1f} s"
    )
    print(
        "per pass, raw vs pipeline:",
        [f"{r:.1f}/{p:.1f}" for r, p in zip(raw_rates, pipe_rates, strict=True)],
    )
    n = max(len(drafts), 1)
    print(
        f"prompt tokens per persona: {with_context / n:.0f} with the earlier sections, "
        f"{without_context / n:.0f} without; extra {(with_context - without_context) / n:.0f} "
        f"per persona ({(with_context - without_context) / max(without_context, 1):+.0%})"
    )


def preload_compare(args: argparse.Namespace) -> None:
    rates: dict[str, list[float]] = {"preloaded": [], "not preloaded": []}
    added: list[str] = []
    for _ in range(args.repeat):  # alternated so drift hits both sides alike
        for label in rates:
            env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
            env["PERSONALOOM_NO_PRELOAD"] = "0" if label == "preloaded" else "1"
            done = subprocess.run(
                [sys.executable, __file__, "--raw-only", "--personas", str(args.personas),
                 "--seed", str(args.seed)],
                env=env, capture_output=True, text=True, timeout=3600,
            )  # fmt: skip
            line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
            if done.returncode != 0 or line is None:
                raise SystemExit(f"{label}: exit {done.returncode}\n{done.stderr[-3000:]}")
            result = json.loads(line[len("RESULT ") :])
            rates[label].append(result["tok_s"])
            added = added or result["preloaded"]
    on, off = (statistics.median(rates[k]) for k in ("preloaded", "not preloaded"))
    print(
        f"\nraw `vllm.LLM.chat`, {args.personas} personas' requests, median of {args.repeat} "
        f"alternated processes each; preloaded: {', '.join(added) or 'nothing found'}\n"
    )
    print("| vLLM's processes | output tokens/s | ratio |")
    print("|---|---:|---:|")
    print(f"| nothing preloaded (`PERSONALOOM_NO_PRELOAD=1`) | {off:.1f} | 1.00 |")
    print(f"| CPU libraries preloaded (default) | {on:.1f} | {on / off:.2f} |")
    print("per process:", {k: [round(r, 1) for r in v] for k, v in rates.items()})


if __name__ == "__main__":
    main()
