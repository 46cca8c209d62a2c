"""Benchmark: vLLM on CPU with the model's bfloat16 vs float32, with and without Intel OpenMP
preloaded (what vLLM's CPU backend asks for on every start: "libiomp is not found in
LD_PRELOAD").

Each configuration runs in its own process (a fresh engine; LD_PRELOAD only takes effect
when a process starts) on the same requests with the same seeds:
- decode: 32 chats with short prompts, 64 new tokens each (output tokens/s);
- prefill: 4 chats with ~1,500-token prompts and 1 new token, the prefix cache defeated by
  a distinct opening per request (prompt tokens/s).
Prints one table, with each figure's ratio to the first configuration measured in the
same run (the model's own bfloat16, nothing preloaded).

    .venv/bin/python bench/cpu_speed.py
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

CONFIGS = [  # (label, dtype, preload Intel OpenMP)
    ("bfloat16 (model's own)", "bfloat16", False),
    ("float32", "float32", False),
    ("bfloat16 + libiomp5", "bfloat16", True),
    ("float32 + libiomp5", "float32", True),
]


def iomp_path() -> Path | None:
    """libiomp5.so of the intel-openmp wheel in this environment, if installed."""
    found = Path(sys.prefix) / "lib" / "libiomp5.so"
    return found if found.exists() else None


def worker(dtype: str) -> dict:
    from personaloom.engine import EngineSpec, GenerationRequest, create_engine

    started = time.perf_counter()
    engine = create_engine(EngineSpec(extra={"dtype": dtype}))
    load_s = time.perf_counter() - started

    def chat(i: int, words: int, max_tokens: int) -> GenerationRequest:
        opening = f"Request {i}: " + " ".join(f"w{i}x{k}" for k in range(8))
        text = opening + " " + "the quiet river runs past the old mill " * (words // 8)
        return GenerationRequest(
            request_id=str(i),
            stage="bench",
            messages=[{"role": "user", "content": text + "\nDescribe a person in one paragraph."}],
            max_tokens=max_tokens,
            temperature=0.8,
            seed=i,
        )

    engine.generate([chat(i, 40, 8) for i in range(4)])  # warm-up
    t = time.perf_counter()
    decoded = engine.generate([chat(100 + i, 40, 64) for i in range(32)])
    decode_s = time.perf_counter() - t
    t = time.perf_counter()
    prefilled = engine.generate([chat(200 + i, 1500, 1) for i in range(4)])
    prefill_s = time.perf_counter() - t
    engine.close()
    return {
        "load_s": round(load_s, 1),
        "decode_tok_s": sum(c.output_tokens for c in decoded) / decode_s,
        "prefill_tok_s": sum(c.prompt_tokens for c in prefilled) / prefill_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", metavar="DTYPE", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print("RESULT " + json.dumps(worker(args.worker)), flush=True)
        return

    iomp = iomp_path()
    rows = []
    for label, dtype, preload in CONFIGS:
        env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
        env["PERSONALOOM_NO_PRELOAD"] = "1"  # the bench decides, not the engine
        if preload:
            if iomp is None:
                rows.append((label, None))
                continue
            env["LD_PRELOAD"] = str(iomp)
        done = subprocess.run(
            [sys.executable, __file__, "--worker", dtype],
            env=env,
            capture_output=True,
            text=True,
            timeout=1800,
        )
        line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
        if done.returncode != 0 or line is None:
            print(f"{label}: failed (exit {done.returncode})\n{done.stderr[-2000:]}")
            rows.append((label, None))
            continue
        rows.append((label, json.loads(line[len("RESULT ") :])))

    base = rows[0][1]
    print(
        f"\nvLLM CPU, embedded SmolLM2-135M, {os.cpu_count()} cores (libiomp5: {iomp or 'absent'})"
    )
    print("| configuration | decode tok/s | x | prefill tok/s | x | engine load s |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, r in rows:
        if r is None:
            print(f"| {label} | - | - | - | - | - |")
            continue
        dx = r["decode_tok_s"] / base["decode_tok_s"] if base else float("nan")
        px = r["prefill_tok_s"] / base["prefill_tok_s"] if base else float("nan")
        print(
            f"| {label} | {r['decode_tok_s']:.0f} | {dx:.2f} | {r['prefill_tok_s']:.0f} | "
            f"{px:.2f} | {r['load_s']:.0f} |"
        )


if __name__ == "__main__":
    main()
