"""The arms of a comparison and each run's recipe: technique subsets, scaled to a budget.

An *arm* is the recipe with some of its techniques: `baseline` (none: every technique section
removed), `leantrain` (all the recipe enables), or a `+`-joined subset of the techniques' arm
names (`Technique.arm`: `pld`, `cl` for curriculum learning, `ltd` for random-LTD, and any a
registered technique adds), e.g. `pld+ltd`, for ablations. Each technique says whether a raw
recipe enables it (`enabled_in`) and removes its own sections from an arm without it
(`remove_from`; an arm without random-LTD whose recipe decays the LR by layer-tokens decays it by
steps instead).

Each run gets its own complete schedule. A recipe states its schedules for its own
`optim.max_steps`; a run of B steps scales the LR warmup and every technique's step-valued
schedule by B / max_steps (`Technique.scale_steps`: PLD's γ inversely, the curriculum's
`total_curriculum_step` and `max_step` lists, random-LTD's `require_steps` and layer-token LR
totals). So LR warmup and decay, the curriculum and random-LTD's growth end where they end in
the recipe, relative to the run.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from leantrain.adopt.compose import TECHNIQUES
from leantrain.config.raw import scaled_steps
from leantrain.errors import ConfigError

__all__ = [
    "BASELINE",
    "LEANTRAIN",
    "arm_names",
    "arm_recipe",
    "arm_techniques",
    "budgets_from",
    "parse_arms",
    "recipe_techniques",
    "scale_to_budget",
]

BASELINE, LEANTRAIN = "baseline", "leantrain"


def arm_names() -> list[str]:
    """Short names of the techniques an arm can hold (`Technique.arm`), in composition order."""
    return [t.arm for t in TECHNIQUES]


def recipe_techniques(raw: Mapping[str, Any]) -> frozenset[str]:
    """The techniques (arm names) a raw recipe (or DeepSpeed config) dict enables."""
    return frozenset(t.arm for t in TECHNIQUES if t.enabled_in(raw))


def arm_techniques(arm: str, available: frozenset[str]) -> frozenset[str]:
    """The techniques of arm `arm` given those the recipe enables."""
    if arm == BASELINE:
        return frozenset()
    if arm == LEANTRAIN:
        return available
    parts = arm.split("+")
    names = arm_names()
    unknown = [p for p in parts if p not in names]
    if unknown or len(set(parts)) != len(parts):
        raise ConfigError(
            f"--arms: '{arm}' is not an arm; expected {BASELINE}, {LEANTRAIN} or a '+'-joined "
            f"subset of {sorted(names)} (e.g. {'+'.join(names[:2])})"
        )
    missing = sorted(set(parts) - available)
    if missing:
        raise ConfigError(
            f"--arms: '{arm}' needs {missing}, which the recipe does not enable "
            f"(it enables {sorted(available) or 'nothing'})"
        )
    return frozenset(parts)


def parse_arms(text: str, available: frozenset[str]) -> list[str]:
    """Arm names from a comma list; the baseline always comes first (the speed-ups need it)."""
    arms = [a.strip() for a in text.split(",") if a.strip()]
    for arm in arms:
        arm_techniques(arm, available)
    if not available and any(a != BASELINE for a in arms):
        raise ConfigError("the recipe enables no technique: there is nothing to compare")
    rest = [a for a in dict.fromkeys(arms) if a != BASELINE]
    if not rest:
        raise ConfigError("--arms: name at least one arm besides the baseline")
    return [BASELINE, *rest]


def arm_recipe(raw: Mapping[str, Any], arm: str) -> dict[str, Any]:
    """A copy of the raw recipe dict with only arm `arm`'s techniques (each other technique
    removes its sections: `Technique.remove_from`)."""
    out = copy.deepcopy(dict(raw))
    keep = arm_techniques(arm, recipe_techniques(raw))
    for technique in TECHNIQUES:
        if technique.arm not in keep:
            technique.remove_from(out)
    return out


def scale_to_budget(raw: Mapping[str, Any], steps: int, *, reference: int) -> dict[str, Any]:
    """A copy of `raw` trained for `steps` steps, its LR warmup and every technique's schedules
    (`Technique.scale_steps`) scaled by steps / `reference` (the recipe's own `optim.max_steps`)."""
    if steps < 1 or reference < 1:
        raise ConfigError(f"budget: {steps} steps of a recipe for {reference}; expected >= 1")
    out = copy.deepcopy(dict(raw))
    factor = steps / reference
    optim = out.setdefault("optim", {})
    optim["max_steps"] = steps
    if optim.get("warmup_steps"):
        optim["warmup_steps"] = scaled_steps(int(optim["warmup_steps"]), factor)
    for technique in TECHNIQUES:
        technique.scale_steps(out, factor)
    return out


def budgets_from(text: str | Sequence[int]) -> list[int]:
    """Step budgets from '100,200,400' (or a list), each >= 1, ascending, no repeats."""
    values = [int(v) for v in text.split(",") if v.strip()] if isinstance(text, str) else list(text)
    if not values or any(v < 1 for v in values):
        raise ConfigError(f"--budgets: got {text!r}; expected step counts >= 1, e.g. 100,200,400")
    return sorted(set(values))
