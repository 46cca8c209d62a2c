"""Sampling settings: how many attributes a persona gets and how they are chosen.

A Pydantic model that round-trips to YAML/JSON, so a run's sampling is part of its saved
configuration. Two presets: `quick` (CPU demos: ~32 sampled attributes, 6 generated ones)
and `deep` (DeepPersona-sized: ~280 sampled attributes, 40 generated). A taxonomy file
may override preset values in its `sampling:` block.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

PresetName = Literal["quick", "deep"]


class Mix(BaseModel):
    """Relative shares of near / mid / far attributes (see docs/taxonomy.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    near: float = Field(5.0, ge=0)
    mid: float = Field(3.0, ge=0)
    far: float = Field(2.0, ge=0)

    @model_validator(mode="after")
    def _not_all_zero(self) -> Mix:
        if self.near + self.mid + self.far <= 0:
            raise ValueError("near + mid + far must be > 0")
        return self


PRESETS: dict[str, dict[str, Any]] = {
    "quick": {
        "attributes_per_persona": 32,
        "generated_per_persona": 6,
        "focus_subcategories": 3,
    },
    "deep": {
        "attributes_per_persona": 280,
        "generated_per_persona": 40,
        "focus_subcategories": 24,
    },
}


class _PresetAccessor:
    """`SamplingSettings.preset("deep")` on the class, the `preset` field on an instance.

    A non-data descriptor: an instance's own `preset` value (in its __dict__) wins.
    """

    def __get__(self, obj: Any, cls: type | None = None) -> Any:
        if obj is not None:  # pragma: no cover - instance __dict__ normally wins
            return obj.__dict__["preset"]
        assert cls is not None
        return cls.from_preset


class SamplingSettings(BaseModel):
    """Everything that decides which attributes a persona gets (values come from the taxonomy)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    preset: PresetName = "quick"
    attributes_per_persona: int = Field(32, ge=1, le=100_000)
    generated_per_persona: int = Field(6, ge=0, le=100_000)
    focus_subcategories: int = Field(3, ge=0, le=10_000)
    mix: Mix = Mix()
    category_weights: dict[str, float] = Field(default_factory=dict)
    max_rule_retries: int = Field(8, ge=0, le=1000)

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> SamplingSettings:
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r} (known: {', '.join(PRESETS)})")
        return cls(**{"preset": name, **PRESETS[name], **overrides})

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    @classmethod
    def from_yaml(cls, text: str) -> SamplingSettings:
        import yaml

        return cls.model_validate(yaml.safe_load(text) or {})


type.__setattr__(SamplingSettings, "preset", _PresetAccessor())


class TaxonomySampling(BaseModel):
    """The `sampling:` block of a taxonomy file: defaults and per-preset overrides."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    mix: Mix = Mix()
    category_weights: dict[str, float] = Field(default_factory=dict)
    max_rule_retries: int = Field(8, ge=0, le=1000)
    presets: dict[PresetName, dict[str, Any]] = Field(default_factory=dict)

    def settings(self, preset: str = "quick", **overrides: Any) -> SamplingSettings:
        base = {
            "mix": self.mix,
            "category_weights": self.category_weights,
            "max_rule_retries": self.max_rule_retries,
        }
        base.update(self.presets.get(preset, {}))  # type: ignore[call-overload]
        base.update(overrides)
        return SamplingSettings.from_preset(preset, **base)


__all__ = ["PRESETS", "Mix", "SamplingSettings", "TaxonomySampling", "ValidationError"]
