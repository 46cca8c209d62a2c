"""`personaloom generate`: build a corpus into a dataset folder (runs the Prefect flow)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from personaloom.config import RunConfig, ShardSpec


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="generate a persona (and dialogue) corpus into a folder")
    p.add_argument(
        "--out", required=True, help="dataset folder to write (resumed if it holds the same run)"
    )
    p.add_argument("--taxonomy", default=None, help="taxonomy name in taxonomies/ or a YAML path")
    p.add_argument("--personas", type=int, default=None, help="persona ids 0..N-1 to generate")
    p.add_argument(
        "--sessions", type=int, default=None, help="conversation sessions per persona (0-60)"
    )
    p.add_argument("--turns", type=int, default=None, help="user/assistant exchanges per session")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument(
        "--model",
        default=None,
        help="Hugging Face model name or path (default: embedded SmolLM2-135M)",
    )
    p.add_argument("--model-cache", default=None, help="where the embedded model is converted to")
    p.add_argument("--engine", default=None, help="vllm (offline) or openai (HTTP)")
    p.add_argument(
        "--base-url", default=None, help="OpenAI-compatible endpoint for --engine openai"
    )
    p.add_argument(
        "--critic-rounds",
        type=int,
        default=None,
        help="generator-critic rounds (0: no critic; 1: review once; R: regenerate rejects R-1 times)",
    )
    p.add_argument(
        "--judges",
        default=None,
        help="LLM judges: auto | filter | advisory | off (auto: advisory for the embedded model)",
    )
    p.add_argument("--shard", default=None, help="k/n: this worker takes ids i with i mod n == k")
    p.add_argument("--preset", default=None, help="sampling preset: quick or deep")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--quota", action="append", default=[], metavar="PATH=SHARES")
    p.add_argument(
        "--config", default=None, help="YAML run config (options given here override it)"
    )
    p.add_argument("--project", default=None, help="corpus project folder (default: current dir)")
    p.add_argument("--restart", action="store_true", help="discard an earlier run in --out")
    p.add_argument("--verbose", action="store_true", help="show engine and Prefect debug logs")
    p.set_defaults(func=run)


OPTION_FIELDS = {
    "taxonomy": "taxonomy",
    "personas": "personas",
    "sessions": "sessions",
    "turns": "turns",
    "seed": "seed",
    "model": "model",
    "engine": "engine",
    "base_url": "base_url",
    "critic_rounds": "critic_rounds",
    "judges": "judges",
    "preset": "preset",
    "batch_size": "batch_size",
}


def build_config(args: argparse.Namespace) -> RunConfig:
    data: dict = {}
    if args.config:
        path = Path(args.config)
        if not path.is_file():
            from personaloom.errors import UserError

            raise UserError(f"--config {args.config}: no such file")
        data = RunConfig.load(path).model_dump()
    for dest, field in OPTION_FIELDS.items():
        value = getattr(args, dest)
        if value is not None:
            data[field] = value
    if args.shard is not None:
        data["shard"] = ShardSpec.parse(args.shard)
    if args.quota:
        data["quotas"] = list(args.quota)
    return RunConfig.from_dict(data)


def run(args: argparse.Namespace) -> int:
    from personaloom import pipeline
    from personaloom.orchestration import attach_redaction, configure_environment, load_flow_module
    from personaloom.project import Project

    if args.model_cache:
        import os

        os.environ["PERSONALOOM_MODEL_CACHE"] = args.model_cache
    config = build_config(args)
    out = Path(args.out)
    # Validate everything (exit 2, nothing written) before the lock, Prefect or the engine:
    # the run's input, then the project's flow file.
    pipeline.validate(config, out, project_dir=args.project, restart=args.restart)
    flows = load_flow_module(Project.locate(args.project))
    from personaloom.engine.registry import close_engines, is_registered
    from personaloom.lock import RUN_LOCK, RunLock
    from personaloom.runstate import RunState

    # A second generate (or a release) into a folder a live run holds is refused; a lock
    # left by a killed run is taken over. Only the lock holder writes run state.
    with RunLock(RunState(out).root / RUN_LOCK):
        prepared = pipeline.prepare(
            config,
            out,
            project_dir=args.project,
            restart=args.restart,
            command=["personaloom", *sys.argv[1:]],
        )
        configure_environment(verbose=args.verbose)
        attach_redaction()
        # Close the engine this command created (not one a caller registered before).
        owned = not is_registered(prepared.engine_spec)
        try:
            result = _run_flow(flows, out, config, prepared, args)
        finally:
            if owned:
                close_engines()
    _print_summary(out, result)
    return 0


def _run_flow(flows, out: Path, config: RunConfig, prepared, args: argparse.Namespace) -> dict:
    return flows.build_corpus(
        out=str(out),
        taxonomy=config.taxonomy,
        personas=config.personas,
        sessions=config.sessions,
        turns=config.turns,
        seed=config.seed,
        model=config.model,
        engine=config.engine,
        base_url=config.base_url,
        critic_rounds=config.critic_rounds,
        shard=str(config.shard),
        preset=config.preset,
        batch_size=config.batch_size,
        quotas=config.quotas,
        project=str(prepared.project.root) if args.project else None,
        restart=False,
        options=config.model_dump(mode="json"),
    )


def _print_summary(out: Path, result: dict) -> None:
    import pyarrow.parquet as pq

    counts = result["counts"]
    print(f"\ncorpus written to {out.resolve()}")
    print(f"  personas kept: {counts['personas_kept']} of {counts['personas_requested']}")
    shards = sorted((out / "personas").glob("train-*.parquet"))
    if shards:
        rows = pq.read_table(shards[0]).slice(0, 1).to_pylist()
        if rows:
            record = rows[0]
            record["attributes"] = record["attributes"][:12] + (
                [{"...": f"{len(record['attributes']) - 12} more"}]
                if len(record["attributes"]) > 12
                else []
            )
            record.pop("sections", None)
            record["scores"] = dict(record.get("scores") or [])
            print("sample record (personas):")
            print(json.dumps(record, indent=2, default=str, ensure_ascii=False))
