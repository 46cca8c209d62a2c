"""The run configuration: one Pydantic model that fully describes a run.

It round-trips to YAML (`DIR/.personaloom/config.yaml`), so a run can be saved, diffed and
re-run; its fingerprint decides whether an interrupted run may be resumed into a folder.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from personaloom.engine.embedded import EMBEDDED_MODEL
from personaloom.errors import UserError, read_utf8


class ShardSpec(BaseModel):
    """`--shard k/n`: this worker handles persona ids i with i mod n == k."""

    model_config = ConfigDict(frozen=True)
    index: int = 0
    count: int = 1

    @model_validator(mode="after")
    def _in_range(self) -> ShardSpec:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(
                f"need count >= 1 and 0 <= index < count, got {self.index}/{self.count}"
            )
        return self

    @classmethod
    def parse(cls, text: str) -> ShardSpec:
        try:
            k, n = (int(part) for part in text.split("/"))
        except ValueError:
            raise UserError(f"--shard {text}: expected k/n with integers, e.g. 0/4") from None
        if n < 1 or not 0 <= k < n:
            raise UserError(f"--shard {text}: need n >= 1 and 0 <= k < n")
        return cls(index=k, count=n)

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


class RunConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    taxonomy: str = "human"
    personas: int = Field(8, ge=1, le=100_000_000)
    sessions: int = Field(0, ge=0, le=60)
    turns: int = Field(2, ge=1, le=20)
    seed: int = Field(0, ge=0, le=2**63 - 1)
    model: str = EMBEDDED_MODEL
    engine: str = "vllm"
    base_url: str | None = None
    critic_rounds: int = Field(2, ge=0, le=10)
    # LLM judges: auto (advisory for the embedded 135M model, filter otherwise) | filter |
    # advisory (scores stored, only rule critics reject) | off; see personaloom/rounds.py
    judges: str = "auto"
    shard: ShardSpec = ShardSpec()
    preset: str = "quick"
    batch_size: int = Field(64, ge=1, le=100_000)
    quotas: list[str] = Field(default_factory=list)
    conversation_mode: str = "turns"
    update_probability: float = Field(0.5, ge=0.0, le=1.0)
    dedup_threshold: float = Field(0.8, gt=0.0, le=1.0)
    max_tokens_section: int = Field(160, ge=16, le=4096)
    max_tokens_narrative: int = Field(200, ge=16, le=4096)
    compact_json: bool = False
    license: str = "apache-2.0"
    pretty_name: str | None = None

    @field_validator("engine")
    @classmethod
    def _engine(cls, value: str) -> str:
        if value not in ("vllm", "openai"):
            raise ValueError("expected vllm or openai")
        return value

    @field_validator("judges")
    @classmethod
    def _judges(cls, value: str) -> str:
        if value not in ("auto", "filter", "advisory", "off"):
            raise ValueError("expected auto, filter, advisory or off")
        return value

    @field_validator("conversation_mode")
    @classmethod
    def _mode(cls, value: str) -> str:
        if value not in ("turns", "one_call"):
            raise ValueError("expected turns or one_call")
        return value

    @field_validator("preset")
    @classmethod
    def _preset(cls, value: str) -> str:
        if value not in ("quick", "deep"):
            raise ValueError("expected quick or deep")
        return value

    # -- YAML round trip ---------------------------------------------------------------
    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    @classmethod
    def from_yaml(cls, text: str, source: str = "<config>") -> RunConfig:
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = f":{mark.line + 1}" if mark else ""
            raise UserError(f"{source}{line}: invalid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise UserError(f"{source}: expected a mapping of run options")
        return cls.from_dict(data, source)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "<options>") -> RunConfig:
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise UserError(config_error_message(exc, source)) from None

    @classmethod
    def load(cls, path: Path) -> RunConfig:
        return cls.from_yaml(read_utf8(path, "run config"), str(path))

    # -- identity ----------------------------------------------------------------------
    def fingerprint(self, content_hashes: dict[str, str]) -> str:
        """Hash of everything that changes the output (not how fast it is produced)."""
        # batch_size stays in: batch files on disk are keyed by it.
        data = self.model_dump(mode="json")
        blob = json.dumps({"config": data, "content": content_hashes}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def config_error_message(exc: ValidationError, source: str) -> str:
    lines = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"]) or "<root>"
        option = "--" + where.replace("_", "-") if source == "<options>" else where
        lines.append(f"{source}: {option}: {error['msg']} (got {error.get('input')!r})")
    return "\n".join(lines)
