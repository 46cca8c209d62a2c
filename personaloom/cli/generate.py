"""`personaloom generate`: build a corpus into a dataset folder (runs the Prefect flow).

The options are the fields of `RunConfig` (personaloom/run/config.py), generated from the
model so that none can be dropped on the way: the command validates once, takes the run
lock and hands the flow one `RunConfig` together with the exact command line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import typing
from pathlib import Path
from typing import Any

from personaloom.errors import UserError
from personaloom.run.config import RunConfig

# Options of the command that are not run settings.
COMMAND_OPTIONS = ("out", "config", "project", "restart", "verbose", "model_cache", "dry_run")
# RunConfig fields whose option name differs from the field name.
OPTION_NAMES = {"quotas": "--quota", "engine_options": "--engine-option"}
METAVARS = {
    "quotas": "PATH=SHARES",
    "engine_options": "KEY=VALUE",
    "shard": "k/n",
    "base_url": "URL",
    "model": "M",
}


def option_name(field: str) -> str:
    return OPTION_NAMES.get(field, "--" + field.replace("_", "-"))


def _add_config_options(p: argparse.ArgumentParser) -> None:
    for field, info in RunConfig.model_fields.items():
        name = option_name(field)
        annotation = info.annotation
        default = info.get_default(call_default_factory=True)
        shown = f" (default: {default})" if default not in (None, [], "") else ""
        help_text = (info.description or "") + shown
        if annotation is bool:
            p.add_argument(
                name, action=argparse.BooleanOptionalAction, default=None, help=help_text
            )
        elif typing.get_origin(annotation) in (list, dict):
            p.add_argument(
                name, action="append", dest=field, metavar=METAVARS.get(field), help=help_text
            )
        elif annotation in (int, float):
            p.add_argument(name, type=annotation, default=None, help=help_text)
        else:  # str, Literal[...], str | None, ShardSpec ("k/n"): validated by RunConfig
            choices = (
                typing.get_args(annotation)
                if typing.get_origin(annotation) is typing.Literal
                else None
            )
            metavar = "|".join(choices) if choices else METAVARS.get(field)
            p.add_argument(name, default=None, metavar=metavar, help=help_text)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="generate a persona (and dialogue) corpus into a folder")
    p.add_argument(
        "--out", required=True, help="dataset folder to write (resumed if it holds the same run)"
    )
    _add_config_options(p)
    p.add_argument("--model-cache", default=None, help="where the embedded model is converted to")
    p.add_argument(
        "--config", default=None, help="YAML run config (options given here override it)"
    )
    p.add_argument("--project", default=None, help="corpus project folder (default: current dir)")
    p.add_argument("--restart", action="store_true", help="discard an earlier run in --out")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="validate everything and print the resolved run config as YAML; write nothing",
    )
    p.add_argument("--verbose", action="store_true", help="show engine and Prefect debug logs")
    p.set_defaults(func=run)


def build_config(args: argparse.Namespace) -> RunConfig:
    data: dict[str, Any] = {}
    if args.config:
        path = Path(args.config)
        if not path.is_file():
            raise UserError(f"--config {args.config}: no such file")
        data = RunConfig.load(path).model_dump()
    for field in RunConfig.model_fields:
        value = getattr(args, field)
        if value is None:
            continue
        if field == "engine_options":  # KEY=VALUE pieces, over the config file's mapping
            from personaloom.engine.options import parse_option

            value = {**data.get(field, {}), **dict(parse_option(v) for v in value)}
        data[field] = value
    return RunConfig.from_dict(data)


def run(args: argparse.Namespace) -> int:
    from personaloom import progress
    from personaloom.cli.console import ConsoleProgress, divert_output
    from personaloom.cli.flow_runner import (
        attach_redaction,
        configure_environment,
        load_flow_module,
    )
    from personaloom.project import Project
    from personaloom.run import pipeline
    from personaloom.state.lock import RUN_LOCK, RunLock
    from personaloom.state.run_state import RunState

    if args.model_cache:
        os.environ["PERSONALOOM_MODEL_CACHE"] = args.model_cache
    config = build_config(args)
    out = Path(args.out)
    # Validate everything (exit 2, nothing written) before the lock, Prefect or the engine:
    # the run's input, then the project's flow file. The flow's prepare reuses this result.
    checked = pipeline.validate(config, out, project_dir=args.project, restart=args.restart)
    if args.dry_run:
        print(config.to_yaml(), end="")
        return 0
    # From here on the validated config: its batch size and concurrency are resolved, so
    # the flow's prepare finds the validation cached and does not ask the server again.
    config = checked.config
    configure_environment(verbose=args.verbose)  # before the flow file imports Prefect
    flows = load_flow_module(Project.locate(args.project))
    from personaloom.cli import stop
    from personaloom.engine._parent_watch import activate as activate_parent_watch
    from personaloom.engine.registry import close_engines, is_registered

    # A second generate (or a release) into a folder a live run holds is refused; a lock
    # left by a killed run is taken over. The flow takes the same lock (re-entrant).
    state = RunState(out)
    with RunLock(state.root / RUN_LOCK):
        state.check_not_held()  # a live release: refuse before the log file is created
        attach_redaction()
        # Prefect's temporary server and vLLM's engine processes, started from here on, end
        # themselves if this process dies (personaloom/engine/_parent_watch).
        activate_parent_watch()
        engine_spec = pipeline.engine_spec(config)
        owned = not is_registered(engine_spec)  # close only an engine this command made
        log_path = state.root / "logs" / "console.log"
        command = ["personaloom", *args.argv]
        run_plan = pipeline.Run(
            config, out, checked.project, checked.taxonomy_path, checked.fingerprint
        )
        # On Ctrl-C or SIGTERM (personaloom/cli/stop.py): this line, the run's log.
        stop.describe(lambda: _interrupted_line(run_plan, command))
        stop.quiet_into(log_path)
        try:
            with divert_output(log_path, enabled=not args.verbose) as terminal:
                display = ConsoleProgress(terminal)
                stop.at_stop(display.close, early=True)
                try:
                    # stop.hold: a stopped run's thread never gets past here (the terminal
                    # stays diverted); the main thread exits the process.
                    with stop.hold(), progress.attached(stop.MutedSink(display)):
                        result = flows.build_corpus(
                            out=str(out),
                            config=config,
                            project=args.project,
                            restart=args.restart,
                            command=command,
                        )
                finally:
                    display.close()
        finally:
            if owned:
                close_engines()
    if not args.verbose:
        print(f"engine and Prefect messages: {log_path}")
    _print_summary(out, result)
    return 0


def _interrupted_line(run: Any, command: list[str]) -> str:
    """What an interrupted generate saved, and the command that resumes it."""
    from personaloom.cli.stop import resume_command

    done = len(run.state.completed())
    try:
        of = f" of {len(run.batches())}"
    except Exception:
        of = ""
    # --restart is dropped once this run has replaced the earlier one (prepare ran)
    prepared = run.state.read_manifest().get("fingerprint") == run.fingerprint
    resume = resume_command(command, drop=("--dry-run", "--restart") if prepared else ())
    return f"interrupted: {done}{of} batches saved in {run.state.root}; resume with: {resume}"


def _print_summary(out: Path, result: dict) -> None:
    import pyarrow.parquet as pq

    counts = result["counts"]
    print(f"\ncorpus written to {out.resolve()}")
    print(f"  personas kept: {counts['personas_kept']} of {counts['personas_requested']}")
    if result.get("shortfall"):
        budget = counts.get("max_candidates")
        print(
            f"warning: {result['shortfall']} ({counts.get('candidates')} candidates tried of "
            f"--max-candidates {budget}); raise it and re-run the same command to add more",
            file=sys.stderr,
        )
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
