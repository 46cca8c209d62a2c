"""The critic settings file: `validators/critics.yaml` and the overrides of a run.

`load_critic_config` loads and checks everything the critic stage needs before anything is
written: the rule-critic plug-ins with their `rules:` settings (`rule_critics`), the judges
of each record kind (`judges:`, each with a template that renders) and the thresholds of
the accept/reject decision (`decision:`, `Thresholds`). A bad setting is a `UserError`
naming the file and the setting; a YAML syntax error names file:line
(`rule_critics.load_critic_settings`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from personaloom.critic.judges import DEFAULT_JUDGES, check_judge_prompts
from personaloom.critic.rule_critics import (
    SETTINGS_FILE,
    RuleCritic,
    load_critic_settings,
    load_critics,
)
from personaloom.errors import UserError
from personaloom.generate.prompts import PromptLibrary


# -- sections ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Thresholds:
    """How rule results and judge scores turn into accept/reject (validators/critics.yaml)."""

    hard_judges: Mapping[str, int] = field(default_factory=lambda: {"faithfulness": 3, "safety": 4})
    judge_failure: str = "reject"  # a hard judge without a parseable answer: reject | ignore
    weights: Mapping[str, float] = field(default_factory=dict)  # judge -> weight (default 1)
    min_score: float = 0.5

    @classmethod
    def from_settings(
        cls, settings: Mapping[str, Any] | None, source: str = "decision"
    ) -> Thresholds:
        """From the `decision:` section of critics.yaml (unknown keys are errors)."""
        settings = dict(settings or {})
        known = {"hard_judges", "judge_failure", "weights", "min_score"}
        unknown = sorted(set(settings) - known)
        if unknown:
            raise UserError(
                f"{source}: unknown setting {', '.join(unknown)} (known: {', '.join(sorted(known))})"
            )
        out = cls()
        hard = settings.get("hard_judges", out.hard_judges)
        if not isinstance(hard, Mapping) or not all(
            isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 5 for v in hard.values()
        ):
            raise UserError(f"{source}.hard_judges: expected judge: minimum score 1-5")
        failure = settings.get("judge_failure", out.judge_failure)
        if failure not in ("reject", "ignore"):
            raise UserError(f"{source}.judge_failure: expected reject or ignore, got {failure!r}")
        weights = settings.get("weights", out.weights)
        if not isinstance(weights, Mapping) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0
            for v in weights.values()
        ):
            raise UserError(f"{source}.weights: expected judge: non-negative number")
        min_score = settings.get("min_score", out.min_score)
        if (
            isinstance(min_score, bool)
            or not isinstance(min_score, (int, float))
            or not 0 <= min_score <= 1
        ):
            raise UserError(f"{source}.min_score: expected a number in [0, 1], got {min_score!r}")
        return cls(dict(hard), failure, {k: float(v) for k, v in weights.items()}, float(min_score))


def judges_for(kind: str, settings: Mapping[str, Any] | None, source: str = "judges") -> list[str]:
    """The judges a record kind gets, from the `judges:` section of critics.yaml."""
    chosen = (settings or {}).get(kind, DEFAULT_JUDGES[kind])
    if not isinstance(chosen, (list, tuple)) or not all(
        isinstance(n, str) and re.fullmatch(r"[a-z][a-z0-9_]*", n) for n in chosen
    ):
        raise UserError(
            f"{source}.{kind}: expected a list of judge names (prompts/judge_<name>.j2)"
        )
    return list(chosen)


# -- the whole file ------------------------------------------------------------------------
@dataclass(frozen=True)
class CriticConfig:
    """The whole critic stage of a project: rule critics, judges per kind, thresholds."""

    critics: list[RuleCritic]
    judges: dict[str, list[str]]
    thresholds: Thresholds


def load_critic_config(
    validators: Path,
    prompts: PromptLibrary | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> CriticConfig:
    """Load and check everything the critic stage needs (call it before writing anything).

    Plug-ins come from `validators/critics/` and settings from `validators/critics.yaml`,
    each falling back to the packaged defaults when the project has none. `overrides` has
    the file's sections (`rules`, `judges`, `decision`) and wins over it. With `prompts`,
    the judge templates are rendered once, so a broken template fails here.
    """
    from personaloom.project import packaged_root

    validators = Path(validators)
    fallback = packaged_root() / "validators"
    folder = validators / "critics" if (validators / "critics").is_dir() else fallback / "critics"
    settings_file = validators / SETTINGS_FILE
    if not settings_file.exists():
        settings_file = fallback / SETTINGS_FILE
    settings = load_critic_settings(settings_file)
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - {"rules", "judges", "decision"})
    if unknown:
        raise UserError(
            f"critic settings: unknown section {', '.join(unknown)} (known: rules, judges, decision)"
        )
    prompts_dir = prompts.folder if prompts is not None else None
    critics = load_critics(
        folder, overrides.get("rules"), settings_file=settings_file, prompts_dir=prompts_dir
    )
    judge_settings = {**settings.get("judges", {}), **overrides.get("judges", {})}
    unknown = sorted(set(judge_settings) - set(DEFAULT_JUDGES))
    if unknown:
        raise UserError(f"{settings_file}: judges: unknown record kind {', '.join(unknown)}")
    judges = {
        kind: judges_for(kind, judge_settings, f"{settings_file}: judges")
        for kind in DEFAULT_JUDGES
    }
    thresholds = Thresholds.from_settings(
        {**settings.get("decision", {}), **overrides.get("decision", {})},
        f"{settings_file}: decision",
    )
    if prompts is not None:
        check_judge_prompts(prompts, sorted({j for names in judges.values() for j in names}))
    return CriticConfig(critics, judges, thresholds)
