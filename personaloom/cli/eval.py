"""`personaloom eval DATASET --model M`: a corpus's memory probes as a benchmark.

`personaloom eval --compare DIR...`: a leaderboard over result folders.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from personaloom.engine.embedded import EMBEDDED_MODEL
from personaloom.engine.registry import ENGINES
from personaloom.errors import UserError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="benchmark a chat model on a corpus's memory probes; --compare makes a leaderboard",
        description="Ask a chat model every memory probe of a corpus (a local folder or "
        "hf://datasets/ORG/NAME@TAG): the persona's sessions up to the probe as chat history "
        "(--context), then the multiple-choice question, the answer constrained to one of "
        "the choice letters. Writes DIR/results.parquet (one row per probe), "
        "DIR/report.md and report.json (accuracy per type and per distance, 95%% bootstrap "
        "intervals, chance) and DIR/accuracy_by_distance.png. Re-running the same command "
        "asks only the probes not answered yet.",
    )
    p.add_argument(
        "dataset", nargs="?", metavar="DATASET", help="corpus folder or hf://datasets/ORG/NAME@TAG"
    )
    p.add_argument(
        "--model",
        default=EMBEDDED_MODEL,
        metavar="M",
        help="Hugging Face model name or path (vllm), or the served model (openai); "
        "default: the embedded SmolLM2-135M",
    )
    p.add_argument(
        "--engine", default="vllm", choices=ENGINES, help="vllm (offline) or openai (HTTP)"
    )
    p.add_argument(
        "--base-url", metavar="URL", help="OpenAI-compatible endpoint, with --engine openai"
    )
    p.add_argument(
        "--context",
        default="full",
        metavar="full|recent:N|none",
        help="history given: every earlier session (full), the last N (recent:N) or none "
        "(the no-context baseline); default full",
    )
    p.add_argument(
        "--limit", type=int, metavar="K", help="ask only K probes (a fixed pseudo-random sample)"
    )
    p.add_argument(
        "--out", metavar="DIR", help="result folder (default evals/DATASET/MODEL-CONTEXT)"
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=64,
        metavar="B",
        help="probes per engine call (default 64)",
    )
    p.add_argument(
        "--max-context-tokens",
        type=int,
        metavar="T",
        help="prompt token budget; oldest sessions are dropped beyond it (default: the "
        "model's context length for vllm, none for openai)",
    )
    p.add_argument(
        "--compare",
        nargs="+",
        metavar="DIR",
        help="print a leaderboard over these result folders (with --out: also write "
        "leaderboard.md and leaderboard.json there)",
    )
    p.add_argument("--verbose", action="store_true", help="show the engine's own output")
    p.set_defaults(func=run)


def _compare(args: argparse.Namespace) -> int:
    from personaloom.evaluate.report import leaderboard, leaderboard_markdown, write_leaderboard

    entries = leaderboard(args.compare)
    print(leaderboard_markdown(entries), end="")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        write_leaderboard(out, entries)
        print(f"\nleaderboard written to {out.resolve()}")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.compare:
        if args.dataset:
            raise UserError("eval: give DATASET or --compare DIR..., not both")
        return _compare(args)
    if not args.dataset:
        raise UserError("eval: DATASET is required (a corpus folder or hf://datasets/ORG/NAME@TAG)")

    from personaloom import progress
    from personaloom.cli import stop
    from personaloom.cli.console import ConsoleProgress, divert_output
    from personaloom.cli.flow_runner import attach_redaction, configure_environment
    from personaloom.engine.registry import close_engines, is_registered
    from personaloom.evaluate.report import REPORT_MD
    from personaloom.evaluate.runner import execute, prepare

    def note(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    # Everything is validated and read (exit 2, nothing written) before the engine starts.
    plan = prepare(
        args.dataset,
        args.out,
        model=args.model,
        engine=args.engine,
        base_url=args.base_url,
        context=args.context,
        limit=args.limit,
        batch_size=args.batch_size,
        max_context_tokens=args.max_context_tokens,
        log=note,
    )
    configure_environment(verbose=args.verbose)
    attach_redaction()
    owned = not is_registered(plan.spec)  # close only an engine this command made
    log_path = plan.out / "console.log"
    # On Ctrl-C or SIGTERM (personaloom/cli/stop.py): this line; the engine's last words
    # go to the log, and a stopped run's thread never gets past stop.hold().
    resume = stop.resume_command(["personaloom", *getattr(args, "argv", ["eval", "..."])])
    stop.describe(
        lambda: f"interrupted: answered probes are saved in {plan.out}; resume with: {resume}"
    )
    stop.quiet_into(log_path)
    try:
        with divert_output(log_path, enabled=not args.verbose and bool(plan.pending)) as terminal:

            def log(message: str) -> None:
                print(message, file=terminal, flush=True)

            display = ConsoleProgress(terminal)
            stop.at_stop(display.close, early=True)
            try:
                with stop.hold(), progress.attached(stop.MutedSink(display)):
                    report = execute(plan, log=log)
            finally:
                display.close()
    finally:
        if owned:
            close_engines()
    out = plan.out
    print(f"\nresults written to {out.resolve()} ({REPORT_MD}, report.json, results.parquet)")
    print(
        f"  {report['model_name']} on {report['dataset_label']}, context {report['context']}: "
        f"accuracy {_interval(report['overall'])} over {report['overall']['n']} probes "
        f"(chance {_num(report['overall']['chance'])})"
    )
    for entry in report["by_type"]:
        flag = "  LEAKS its answer without context" if entry["leak"] else ""
        print(f"  {entry['type']:<24} {_interval(entry)} n={entry['n']}{flag}")
    if report["probes"].get("error"):
        print(
            f"warning: {report['probes']['error']} probes failed in the engine (not scored); "
            "re-run the same command to ask them again",
            file=sys.stderr,
        )
    return 0


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _interval(entry: dict) -> str:
    return f"{_num(entry['accuracy'])} [{_num(entry['ci_low'])}, {_num(entry['ci_high'])}]"
