"""Timelines drawn from the shipped `human` catalogue (`taxonomies/human.topics.yaml`)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from personaloom.generate import timeline
from personaloom.generate.topics import load_catalogue
from personaloom.taxonomy.loader import load_taxonomy

REPO = Path(__file__).resolve().parents[2]
HUMAN = load_taxonomy(REPO / "taxonomies" / "human.yaml")
CATALOGUE = load_catalogue(REPO / "taxonomies" / "human.topics.yaml", HUMAN)


def build_timeline(persona: Mapping[str, Any], **options: Any) -> timeline.Timeline:
    """`personaloom.generate.timeline.build_timeline` with the shipped catalogue."""
    return timeline.build_timeline(persona, catalogue=CATALOGUE, **options)
