"""Benchmark: JSON structured outputs with and without xgrammar's `disable_any_whitespace`.

In vLLM 0.32 the whitespace setting is engine-level, so each setting runs in its own
process with its own engine, on the same persona-section prompts and seeds. Reports the
share of outputs valid on the first try, output tokens/s, and two text-quality proxies
(mean words per field, distinct-2 over all field values).

    .venv/bin/python bench/structured.py [--personas 32]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def worker(compact: bool, personas: int) -> dict:
    from personaloom.engine import EngineSpec, create_engine, set_engine
    from personaloom.engine.structured import validate_against
    from personaloom.generate.personas import enrich
    from personaloom.run import pipeline
    from personaloom.run.config import RunConfig

    spec = EngineSpec(compact_json=compact)
    engine = create_engine(spec)
    set_engine(spec, engine)
    with tempfile.TemporaryDirectory() as tmp:
        run = pipeline.prepare(RunConfig(personas=personas), Path(tmp) / "out")
        drafts, _ = pipeline.sample_drafts(run, run.persona_ids())
        sent = []

        class Recorder:
            model_name = engine.model_name
            stats = engine.stats

            def generate(self, requests):
                sent.append(list(requests))
                return engine.generate(requests)

        enrich(Recorder(), run.prompts(), drafts, seed=0)
    first_pass = [b for b in sent][: max(1, len(sent))]
    total = valid = tokens = 0
    seconds = 0.0
    values: list[str] = []
    for batch in first_pass:
        t0 = time.perf_counter()
        outs = engine.generate(batch)
        seconds += time.perf_counter() - t0
        for request, out in zip(batch, outs, strict=True):
            total += 1
            tokens += out.output_tokens
            try:
                parsed = validate_against(request.json_schema)(out.text)
                valid += 1
                values += [str(v) for v in parsed.values()]
            except ValueError:
                pass
    words = [v.split() for v in values]
    bigrams = [tuple(w[i : i + 2]) for w in words for i in range(len(w) - 1)]
    return {
        "setting": "compact (disable_any_whitespace)" if compact else "natural whitespace",
        "requests": total,
        "valid_first_try": valid / total if total else 0.0,
        "tokens_per_s": tokens / seconds if seconds else 0.0,
        "words_per_field": sum(map(len, words)) / len(words) if words else 0.0,
        "distinct_2": len(set(bigrams)) / len(bigrams) if bigrams else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--personas", type=int, default=32)
    parser.add_argument("--worker", choices=["compact", "natural"])
    args = parser.parse_args()
    if args.worker:
        print("RESULT " + json.dumps(worker(args.worker == "compact", args.personas)))
        return
    rows = []
    for setting in ("natural", "compact"):
        proc = subprocess.run(
            [sys.executable, __file__, "--worker", setting, "--personas", str(args.personas)],
            capture_output=True,
            text=True,
            check=True,
        )
        line = next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))
        rows.append(json.loads(line[len("RESULT ") :]))
    print(
        f"\n{args.personas} personas, enrichment sections (JSON schema per section), same seeds\n"
    )
    print(
        "| setting | requests | valid JSON, first try | output tokens/s | words per field | distinct-2 |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['setting']} | {r['requests']} | {r['valid_first_try']:.1%} | {r['tokens_per_s']:.0f} "
            f"| {r['words_per_field']:.1f} | {r['distinct_2']:.2f} |"
        )


if __name__ == "__main__":
    main()
