"""Prefect flow `release`: publish a dataset folder under a version tag (thin wrapper).

It also owns the Prefect Secret block lookup for the Hub token (`personaloom release` on
the command line loads this file for it), so the library never imports Prefect.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from prefect import flow, get_run_logger

from personaloom.publish.release import release

SECRET_BLOCK = "personaloom-hf-token"


def secret_block_token() -> str | None:
    """The Hub token held in the Prefect Secret block `personaloom-hf-token`, if any."""
    try:
        from prefect.blocks.system import Secret

        value = Secret.load(SECRET_BLOCK, _sync=True).get()
    except Exception:  # no block, no server: fall through to the other token sources
        return None
    return str(value) if value else None


TOKEN_SOURCE = (f"Prefect Secret block {SECRET_BLOCK}", secret_block_token)


@flow(name="release")
def release_corpus(
    folder: str, to: str, tag: str | None = None, private: bool = False, create_pr: bool = False
) -> dict[str, Any]:
    logger = get_run_logger()
    outcome = release(
        folder,
        to,
        tag=tag,
        private=private,
        create_pr=create_pr,
        log=logger.info,
        token_source=TOKEN_SOURCE,
    )
    return asdict(outcome)


if __name__ == "__main__":
    release_corpus()
