"""The run configuration: one Pydantic model that fully describes a run.

It round-trips to YAML (`DIR/.personaloom/config.yaml`), so a run can be saved, diffed and
re-run; its fingerprint decides whether an interrupted run may be resumed into a folder.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from personaloom.engine.embedded import EMBEDDED_MODEL
from personaloom.engine.options import fingerprinted
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


SHARD_SCHEMA = {
    "anyOf": [
        {"type": "string", "pattern": r"^\d+/\d+$"},
        {
            "type": "object",
            "properties": {"index": {"type": "integer"}, "count": {"type": "integer"}},
        },
    ]
}
Engine = Literal["vllm", "openai"]
Judges = Literal["auto", "filter", "advisory", "off"]
Preset = Literal["quick", "deep"]
ConversationMode = Literal["turns", "one_call"]


class RunConfig(BaseModel):
    """Every setting of a run. The descriptions are the `generate` options' help text:
    each field is a `--option` of `personaloom generate` (personaloom/cli/generate.py builds
    the parser from this model), a key of a `--config` YAML file, and a key of the flow's
    `config` parameter."""

    model_config = ConfigDict(extra="forbid")

    taxonomy: str = Field("human", description="taxonomy name in taxonomies/ or a YAML path")
    personas: int = Field(8, ge=1, le=100_000_000, description="persona ids 0..N-1 to generate")
    sessions: int = Field(0, ge=0, le=60, description="conversation sessions per persona (0-60)")
    min_sessions: int | None = Field(
        None,
        ge=1,
        le=60,
        description="sessions a persona must keep: a timeline still incomplete after the "
        "critic rounds keeps its complete prefix 0..k-1 when k >= this, else the persona is "
        "rejected whole (default: --sessions, i.e. complete timelines only)",
    )
    turns: int = Field(2, ge=1, le=20, description="user/assistant exchanges per session")
    seed: int = Field(0, ge=0, le=2**63 - 1, description="run seed (persona i of seed s is fixed)")
    model: str = Field(
        EMBEDDED_MODEL,
        description="Hugging Face model name or path; the default is the embedded SmolLM2-135M",
    )
    engine: Engine = Field("vllm", description="vllm (offline) or openai (HTTP)")
    base_url: str | None = Field(None, description="OpenAI-compatible endpoint for --engine openai")
    concurrency: int | None = Field(
        None,
        ge=1,
        le=4096,
        description="requests in flight to an OpenAI-compatible endpoint (--engine openai "
        "and the judge endpoint); unset: the server's max_num_seqs where it reports it "
        "(vllm serve with VLLM_SERVER_DEV_MODE=1), else 64",
    )
    critic_rounds: int = Field(
        2,
        ge=0,
        le=10,
        description="generator-critic rounds (0: no critic; 1: review once; R: regenerate "
        "rejects R-1 times)",
    )
    judges: Judges = Field(
        "auto",
        description="LLM judges: auto | filter | advisory | off (auto: advisory when the "
        "judge model is the embedded one, filter otherwise)",
    )
    judge_model: str | None = Field(
        None, description="model of the LLM judges, e.g. a bigger one (default: --model)"
    )
    judge_engine: Engine | None = Field(
        None,
        description="engine of the judge model: vllm or openai (default: openai when "
        "--judge-base-url is given, else vllm)",
    )
    judge_base_url: str | None = Field(
        None, description="OpenAI-compatible endpoint serving --judge-model"
    )
    # "k/n" is accepted wherever a config comes from (CLI, YAML, flow parameters): the JSON
    # schema says so too, since Prefect validates deployment parameters against it.
    shard: Annotated[ShardSpec, WithJsonSchema(SHARD_SCHEMA)] = Field(
        ShardSpec(), description="k/n: this worker takes ids i with i mod n == k"
    )
    preset: Preset = Field("quick", description="sampling preset: quick or deep")
    batch_size: int | None = Field(
        None,
        ge=1,
        le=100_000,
        description="personas per committed batch (default: derived from the engine: "
        "--engine-option max_num_seqs, else vLLM's own 256; --concurrency for --engine "
        "openai; recorded by the first run and kept on resume)",
    )
    max_candidates: int | None = Field(
        None,
        ge=1,
        le=1_000_000_000,
        description="persona ids a run may try to keep --personas (rejected and duplicate "
        "ones are replaced); default 3x the shard's share",
    )
    quotas: list[str] = Field(
        default_factory=list, description="PATH=SHARES quota, e.g. demographics.age_band=uniform"
    )
    conversation_mode: ConversationMode = Field(
        "turns", description="turns (one request per turn) or one_call (a session as one JSON)"
    )
    update_probability: float = Field(
        0.5, ge=0.0, le=1.0, description="chance of a preference change between sessions"
    )
    dedup_threshold: float = Field(
        0.8, gt=0.0, le=1.0, description="MinHash Jaccard threshold of near-duplicate personas"
    )
    max_tokens_section: int = Field(
        160, ge=16, le=4096, description="token limit of one enrichment section"
    )
    max_tokens_narrative: int = Field(
        200, ge=16, le=4096, description="token limit of one narrative section"
    )
    max_tokens_turn: int | None = Field(
        None, ge=16, le=4096, description="token limit of one conversation turn (default: 160)"
    )
    compact_json: bool = Field(
        False, description="structured output without free whitespace (engine-level setting)"
    )
    engine_options: dict[str, Any] = Field(
        default_factory=dict,
        description="vLLM engine argument KEY=VALUE passed to vllm.LLM, repeatable "
        "(tensor_parallel_size=4, gpu_memory_utilization=0.9, quantization=fp8, ...)",
    )
    fidelity_margin: float = Field(
        0.10,
        gt=0.0,
        lt=1.0,
        description="critic bias: flag an anchor value whose acceptance differs from the "
        "overall rate by more than this (0.10: 10 points)",
    )
    fidelity_min_group: int = Field(
        20, ge=1, description="critic bias: flag only groups with this many reviewed candidates"
    )
    license: str = Field("apache-2.0", description="license named in the dataset card")
    pretty_name: str | None = Field(None, description="dataset name shown in the card")

    @field_validator("shard", mode="before")
    @classmethod
    def _shard_text(cls, value: Any) -> Any:
        # "k/n" in YAML files, flow parameters and on the command line alike.
        if isinstance(value, str):
            try:
                k, n = (int(part) for part in value.split("/"))
            except ValueError:
                raise ValueError(f"expected k/n with integers, e.g. 0/4, got {value!r}") from None
            return {"index": k, "count": n}
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
        """Hash of everything that changes the rows (not how fast, nor how they are described
        or where the server is); a resume is refused when it differs."""
        data = {k: v for k, v in self.model_dump(mode="json").items() if k not in NOT_FINGERPRINTED}
        # Engine options that change only speed or placement may change on resume; the
        # key is left out when nothing remains, so runs without options keep their hash.
        options = fingerprinted(data.pop("engine_options", None) or {})
        if options:
            data["engine_options"] = options
        for key in ("judge_model", "judge_engine", "max_tokens_turn"):  # unset: as before
            # these options existed (a run of an older version keeps its fingerprint)
            if data.get(key) is None:
                data.pop(key, None)
        blob = json.dumps(
            {"version": FINGERPRINT_VERSION, "config": data, "content": content_hashes},
            sort_keys=True,
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


# Fields left out of the fingerprint, each with its reason. batch_size stays in: batch files
# on disk are keyed by it. Bump FINGERPRINT_VERSION whenever this table or the hashed
# encoding changes (runs fingerprinted by an older version must then --restart).
FINGERPRINT_VERSION = 2
NOT_FINGERPRINTED = {
    "base_url": "where the server is, not what it serves (model names the weights)",
    "judge_base_url": "where the judge's server is (judge_model names the weights)",
    "concurrency": "requests in flight: how fast, not what is generated",
    "fidelity_margin": "card figures only",
    "fidelity_min_group": "card figures only",
    "license": "card text only",
    "pretty_name": "card text only",
}


def config_error_message(exc: ValidationError, source: str) -> str:
    lines = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"]) or "<root>"
        option = "--" + where.replace("_", "-") if source == "<options>" else where
        lines.append(f"{source}: {option}: {error['msg']} (got {error.get('input')!r})")
    return "\n".join(lines)
