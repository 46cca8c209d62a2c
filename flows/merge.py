"""Prefect flow `merge`: combine the part folders of a `--shard k/n` run (thin wrapper).

Run it after the n `build-corpus` runs of a split have completed, e.g.
`prefect deployment run merge/merge -p parts='["corpora/x/part-0", "corpora/x/part-1"]'
-p out=corpora/x/merged`. The work is one library call (`personaloom.run.merge.merge`).
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact

from personaloom.run.merge import merge


@task(name="merge-parts")
def merge_parts(parts: list[str], out: str, embeddings: bool) -> dict[str, Any]:
    return merge(parts, out, embeddings=embeddings, log=get_run_logger().info)


@flow(name="merge", log_prints=True)
def merge_corpus(parts: list[str], out: str, embeddings: bool = True) -> dict[str, Any]:
    result = merge_parts(parts, out, embeddings)
    figures = {**result["counts"], "parts": len(result["parts"]), "skipped": result["skipped"]}
    create_table_artifact(
        key="merge-figures",
        table=[{"figure": k, "value": v} for k, v in figures.items()],
        description=f"personaloom merge of {len(parts)} parts into {out}",
    )
    return result


if __name__ == "__main__":
    merge_corpus()
