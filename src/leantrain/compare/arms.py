"""The arms of a comparison and each run's recipe: technique subsets, scaled to a budget.

An *arm* is the recipe with some of its techniques: `baseline` (none: every technique section
removed), `leantrain` (all the recipe enables), or a `+`-joined subset of `pld`, `cl`
(curriculum learning: sequence-length warmup or Data Efficiency sampling) and `ltd`
(random-LTD), e.g. `pld+ltd`, for ablations.

Each run gets its own complete schedule. A recipe states its schedules for its own
`optim.max_steps`; a run of B steps scales every step-valued schedule by B / max_steps: the LR
warmup, PLD's γ (inversely), the curriculum's `total_curriculum_step` (and `max_step` lists),
random-LTD's `require_steps`, and the layer-token LR schedule's token totals. So LR warmup and
decay, the curriculum and random-LTD's growth end where they end in the recipe, relative to the
run. An arm without random-LTD whose recipe decays the LR by layer-tokens decays it by steps
instead (cosine, warmup converted at full length): that schedule needs random-LTD's counter.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from leantrain.errors import ConfigError

__all__ = [
    "BASELINE",
    "LEANTRAIN",
    "TECHNIQUES",
    "arm_recipe",
    "arm_techniques",
    "budgets_from",
    "parse_arms",
    "recipe_techniques",
    "scale_to_budget",
]

BASELINE, LEANTRAIN = "baseline", "leantrain"
#: Short names of the techniques an arm can hold, in composition order.
TECHNIQUES = {"cl": "curriculum learning", "ltd": "random-LTD", "pld": "progressive layer drop"}


def _section(raw: Mapping[str, Any], *path: str) -> Mapping[str, Any]:
    node: Any = raw
    for key in path:
        node = node.get(key) if isinstance(node, Mapping) else None
    return node if isinstance(node, Mapping) else {}


def _on(raw: Mapping[str, Any], *path: str) -> bool:
    """Whether every section along `path` is present and enabled."""
    return all(_section(raw, *path[: i + 1]).get("enabled", False) for i in range(len(path)))


def recipe_techniques(raw: Mapping[str, Any]) -> frozenset[str]:
    """The techniques a raw recipe (or DeepSpeed config) dict enables."""
    found = set()
    if _on(raw, "progressive_layer_drop"):
        found.add("pld")
    if _on(raw, "curriculum_learning") or _on(
        raw, "data_efficiency", "data_sampling", "curriculum_learning"
    ):
        found.add("cl")
    if _on(raw, "data_efficiency", "data_routing", "random_ltd"):
        found.add("ltd")
    return frozenset(found)


def arm_techniques(arm: str, available: frozenset[str]) -> frozenset[str]:
    """The techniques of arm `arm` given those the recipe enables."""
    if arm == BASELINE:
        return frozenset()
    if arm == LEANTRAIN:
        return available
    parts = arm.split("+")
    unknown = [p for p in parts if p not in TECHNIQUES]
    if unknown or len(set(parts)) != len(parts):
        raise ConfigError(
            f"--arms: '{arm}' is not an arm; expected baseline, leantrain or a '+'-joined "
            f"subset of {sorted(TECHNIQUES)} (e.g. pld+ltd)"
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


def _strip(raw: dict[str, Any], keep: frozenset[str]) -> None:
    """Remove (in place) the sections of the techniques not in `keep`."""
    if "pld" not in keep:
        raw.pop("progressive_layer_drop", None)
    de = raw.get("data_efficiency")
    if "cl" not in keep:
        raw.pop("curriculum_learning", None)
        if isinstance(de, dict):
            de.pop("data_sampling", None)
    if "ltd" not in keep and isinstance(de, dict):
        ltd = _section(de, "data_routing", "random_ltd")
        de.pop("data_routing", None)
        optim = raw.get("optim")
        if isinstance(optim, dict) and optim.get("decay") == "layer_tokens":
            _steps_instead_of_layer_tokens(raw, ltd)
    if isinstance(de, dict) and not ({"data_sampling", "data_routing"} & set(de)):
        raw.pop("data_efficiency")


def _steps_instead_of_layer_tokens(raw: dict[str, Any], ltd: Mapping[str, Any]) -> None:
    """Cosine decay by steps, the warmup converted from layer-tokens at full length."""
    optim = raw["optim"]
    optim["decay"] = "cosine"
    warm = _section(ltd, "layer_token_lr_schedule").get("warmup_layer_tokens", 0) or 0
    data, model = _section(raw, "data"), _section(raw, "model", "config")
    layers = ltd.get("total_layer_num") or model.get("n_layer") or model.get("num_hidden_layers")
    per_step = (
        int(optim.get("micro_batch_size", 8))
        * int(optim.get("grad_accum", 1))
        * int(data.get("seq_len", 128))
        * int(layers or 1)
    )
    optim["warmup_steps"] = round(warm / per_step)


def arm_recipe(raw: Mapping[str, Any], arm: str) -> dict[str, Any]:
    """A copy of the raw recipe dict with only arm `arm`'s techniques."""
    out = copy.deepcopy(dict(raw))
    _strip(out, arm_techniques(arm, recipe_techniques(raw)))
    return out


def _scaled(value: int, factor: float) -> int:
    return max(1, round(value * factor))


def _node(raw: Mapping[str, Any], *path: str) -> dict[str, Any] | None:
    """The dict at `path` (for editing in place), or None."""
    node = _section(raw, *path)
    return node if isinstance(node, dict) and node else None


def _scale_schedule(section: dict[str, Any], factor: float) -> None:
    """A curriculum schedule's step counts, in place."""
    cfg = section.get("schedule_config")
    if not isinstance(cfg, dict):
        return
    if isinstance(cfg.get("total_curriculum_step"), int):
        cfg["total_curriculum_step"] = _scaled(cfg["total_curriculum_step"], factor)
    if isinstance(cfg.get("max_step"), list):
        cfg["max_step"] = [_scaled(int(s), factor) for s in cfg["max_step"]]


def scale_to_budget(raw: Mapping[str, Any], steps: int, *, reference: int) -> dict[str, Any]:
    """A copy of `raw` trained for `steps` steps, its schedules scaled by steps / `reference`
    (the recipe's own `optim.max_steps`)."""
    if steps < 1 or reference < 1:
        raise ConfigError(f"budget: {steps} steps of a recipe for {reference}; expected >= 1")
    out = copy.deepcopy(dict(raw))
    f = steps / reference
    optim = out.setdefault("optim", {})
    optim["max_steps"] = steps
    if optim.get("warmup_steps"):
        optim["warmup_steps"] = _scaled(int(optim["warmup_steps"]), f)
    pld = out.get("progressive_layer_drop")
    if isinstance(pld, dict) and pld.get("gamma") is not None:
        pld["gamma"] = float(pld["gamma"]) / f
    if isinstance(out.get("curriculum_learning"), dict):
        _scale_schedule(out["curriculum_learning"], f)
    metrics = _section(
        out, "data_efficiency", "data_sampling", "curriculum_learning", "curriculum_metrics"
    )
    for section in metrics.values():
        if isinstance(section, dict):
            _scale_schedule(section, f)
    ltd = ("data_efficiency", "data_routing", "random_ltd")
    cfg = _node(out, *ltd, "random_ltd_schedule", "schedule_config")
    if cfg is not None and isinstance(cfg.get("require_steps"), int):
        cfg["require_steps"] = _scaled(cfg["require_steps"], f)
    lr = _node(out, *ltd, "layer_token_lr_schedule")
    for key in ("total_layer_tokens", "warmup_layer_tokens"):
        if lr is not None and lr.get(key):
            lr[key] = _scaled(int(lr[key]), f)
    return out


def budgets_from(text: str | Sequence[int]) -> list[int]:
    """Step budgets from '100,200,400' (or a list), each >= 1, ascending, no repeats."""
    values = [int(v) for v in text.split(",") if v.strip()] if isinstance(text, str) else list(text)
    if not values or any(v < 1 for v in values):
        raise ConfigError(f"--budgets: got {text!r}; expected step counts >= 1, e.g. 100,200,400")
    return sorted(set(values))
