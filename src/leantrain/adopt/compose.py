"""Composition as code: the ordered list of techniques, and the loops over it.

`TECHNIQUES` is the one place that names the techniques. Its order is the composition order,
documented here once (torchtitan's apply order is the model):

1. random-LTD converts its blocks first, so its forward is the innermost (it runs a block on a
   subset of tokens);
2. PLD wraps every block around that (a block PLD skips draws no token subset);
3. the curriculum touches data only: it cuts each batch and may draw the batch order.

`prepare` builds the enabled ones and applies them in this order (undoing what it did if one
fails); `revert` undoes them in reverse. Batches go through `process_batch`, and the token
accounting through `account`, in this order; `metrics()` and the state follow it too.
Incompatible mixes are rejected by `check_composition` before anything is built.
"""

from __future__ import annotations

import functools
import operator

from torch import nn

from leantrain.config import SECTIONS, LeantrainConfig
from leantrain.curriculum.technique import CurriculumTechnique
from leantrain.errors import ConfigError
from leantrain.pld.technique import PLDTechnique
from leantrain.random_ltd.technique import RandomLTDTechnique
from leantrain.technique import Facts, Requirements, Setup, Technique

__all__ = [
    "TECHNIQUES",
    "apply_techniques",
    "build_techniques",
    "check_composition",
    "composition_facts",
    "config_keys",
    "enabled_techniques",
    "register_technique",
    "revert_techniques",
    "technique_requirements",
]

#: Every technique leantrain composes, in composition order (see the module docstring).
TECHNIQUES: list[type[Technique]] = [RandomLTDTechnique, PLDTechnique, CurriculumTechnique]


def register_technique(technique: type[Technique], *, before: str | None = None) -> None:
    """Add a technique to the list: at the end, or just before the one named `before`."""
    names = [t.name for t in TECHNIQUES]
    if technique.name in names:
        raise ConfigError(f"register_technique: a technique named {technique.name!r} exists")
    if before is not None and before not in names:
        raise ConfigError(f"register_technique: before={before!r}; the techniques are {names}")
    TECHNIQUES.insert(names.index(before) if before is not None else len(names), technique)


def enabled_techniques(config: LeantrainConfig) -> list[type[Technique]]:
    """The techniques `config` turns on, in composition order."""
    return [t for t in TECHNIQUES if t.enabled(config)]


def composition_facts(config: LeantrainConfig) -> Facts:
    """What the enabled techniques' sections say together (longest lengths, the layer count)."""
    return functools.reduce(
        operator.or_, (t.facts(config) for t in enabled_techniques(config)), Facts()
    )


def technique_requirements(config: LeantrainConfig) -> Requirements:
    """What a host must respect for every enabled technique together."""
    return functools.reduce(
        operator.or_, (t.requirements(config) for t in enabled_techniques(config)), Requirements()
    )


def check_composition(config: LeantrainConfig) -> None:
    """Reject technique mixes leantrain cannot compose, before any surgery (raises ConfigError)."""
    facts = composition_facts(config)
    for technique in enabled_techniques(config):
        technique.check(config, facts)


def config_keys() -> tuple[str, ...]:
    """The top-level config keys the techniques read (DeepSpeed's sections, and any a registered
    technique adds)."""
    keys = dict.fromkeys(SECTIONS)
    keys.update(dict.fromkeys(s.partition(".")[0] for t in TECHNIQUES for s in t.sections))
    return tuple(keys)


def build_techniques(config: LeantrainConfig, setup: Setup) -> list[Technique]:
    """Every enabled technique, built complete, in composition order (no surgery yet)."""
    return [t.from_config(config, setup) for t in enabled_techniques(config)]


def apply_techniques(model: nn.Module, techniques: list[Technique]) -> None:
    """Apply `techniques` to `model` in order; all or nothing."""
    done: list[Technique] = []
    try:
        for technique in techniques:
            technique.apply(model)
            done.append(technique)
    except Exception:
        revert_techniques(model, done)
        raise


def revert_techniques(model: nn.Module, techniques: list[Technique]) -> None:
    """Undo `apply_techniques` (in reverse order)."""
    for technique in reversed(techniques):
        technique.revert(model)
