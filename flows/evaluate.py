"""Prefect flow `evaluate`: benchmark one chat model on a corpus's memory probes (thin wrapper).

One run evaluates one model under one context policy; evaluate several models as several
one-off runs of the `evaluate/evaluate` deployment, e.g.
`prefect deployment run evaluate/evaluate -p dataset=hf://datasets/ORG/NAME@v1.0.0
-p model=Qwen/Qwen2.5-7B-Instruct -p out=/data/evals/qwen7b-full`.
The work is the library call `personaloom eval` makes (`personaloom.evaluate.runner`); a
re-run into the same `out` asks only the probes not answered yet. Each run publishes a
table artifact `eval-accuracy` with the headline accuracies.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact

from personaloom.engine import EMBEDDED_MODEL
from personaloom.engine.registry import close_engines, is_registered
from personaloom.evaluate.runner import execute, prepare


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


@task(name="evaluate-model")
def evaluate_model(
    dataset: str,
    model: str,
    engine: str,
    base_url: str | None,
    context: str,
    limit: int | None,
    out: str | None,
) -> dict[str, Any]:
    log = get_run_logger().info
    plan = prepare(
        dataset,
        out,
        model=model,
        engine=engine,
        base_url=base_url,
        context=context,
        limit=limit,
        log=log,
    )
    owned = not is_registered(plan.spec)
    try:
        report = execute(plan, log=log)
    finally:
        if owned:
            close_engines()
    report["out"] = str(plan.out.resolve())
    return report


@flow(name="evaluate", log_prints=True)
def evaluate(
    dataset: str,
    model: str = EMBEDDED_MODEL,
    engine: str = "vllm",
    base_url: str | None = None,
    context: str = "full",
    limit: int | None = None,
    out: str | None = None,
) -> dict[str, Any]:
    report = evaluate_model(dataset, model, engine, base_url, context, limit, out)
    rows = [
        {
            "probes": "all",
            "n": report["overall"]["n"],
            "accuracy": _pct(report["overall"]["accuracy"]),
            "95% CI": f"{_pct(report['overall']['ci_low'])} - {_pct(report['overall']['ci_high'])}",
            "chance": _pct(report["overall"]["chance"]),
        }
    ]
    for entry in report["by_type"]:
        rows.append(
            {
                "probes": entry["type"] + (" (leaks)" if entry["leak"] else ""),
                "n": entry["n"],
                "accuracy": _pct(entry["accuracy"]),
                "95% CI": f"{_pct(entry['ci_low'])} - {_pct(entry['ci_high'])}",
                "chance": _pct(entry["chance"]),
            }
        )
    create_table_artifact(
        key="eval-accuracy",
        table=rows,
        description=(
            f"{report['model_name']} on {report['dataset_label']}, context {report['context']}: "
            f"{report['out']}"
        ),
    )
    return report


if __name__ == "__main__":
    evaluate()
