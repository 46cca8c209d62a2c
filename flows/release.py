"""Prefect flow `release`: publish a dataset folder under a version tag (thin wrapper)."""

from __future__ import annotations

from dataclasses import asdict, is_dataclass
from typing import Any

from prefect import flow, get_run_logger

from personaloom.release import release


@flow(name="release")
def release_corpus(
    folder: str, to: str, tag: str | None = None, private: bool = False, create_pr: bool = False
) -> dict[str, Any]:
    logger = get_run_logger()
    outcome = release(folder, to, tag=tag, private=private, create_pr=create_pr, log=logger.info)
    return asdict(outcome) if is_dataclass(outcome) else {"outcome": str(outcome)}


if __name__ == "__main__":
    release_corpus()
