"""The one resolver of leantrain's public entry points: any accepted config form -> a typed section.

The entry points (`prepare`, the controllers, `convert_to_*`, the curriculum sampler) accept a
config the way a DeepSpeed user holds it: a path to the whole JSON/YAML file, the whole config as
a dict or a `LeantrainConfig`, or only the section, as a dict or already typed. `resolve` turns
each form into the validated section (errors name the section's full dotted key) and, when a
whole config was given, keeps it too (for keys outside the section, such as the seed).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from pydantic import ValidationError

from leantrain.config.loader import LeantrainConfig, describe_error, load_config
from leantrain.config.schema import (
    CurriculumLearningConfig,
    LegacyCurriculumConfig,
    ProgressiveLayerDropConfig,
    RandomLTDConfig,
    Section,
)
from leantrain.errors import ConfigError

__all__ = ["SECTION_KEYS", "Resolved", "resolve", "section_of", "validate_section"]

S = TypeVar("S", bound=Section)

#: The dotted key of each typed section in a whole config.
SECTION_KEYS: dict[type[Section], str] = {
    ProgressiveLayerDropConfig: "progressive_layer_drop",
    LegacyCurriculumConfig: "curriculum_learning",
    CurriculumLearningConfig: "data_efficiency.data_sampling.curriculum_learning",
    RandomLTDConfig: "data_efficiency.data_routing.random_ltd",
}


@dataclass(frozen=True)
class Resolved(Generic[S]):
    """A section, and the whole config it came from (None when the section was given alone)."""

    section: S
    config: LeantrainConfig | None


def resolve(
    source: Any, kind: type[S], *, key: str | None = None, expected: str | None = None
) -> Resolved[S]:
    """The `kind` section of `source`, which is the section (typed or a dict) or a whole config
    (a path, a dict holding the section's top-level key, or a `LeantrainConfig`).

    `key` is the section's dotted key (default: `SECTION_KEYS[kind]`); `expected` replaces the
    list of accepted forms in the error raised for anything else.
    """
    key = key if key is not None else SECTION_KEYS.get(kind, "")
    if isinstance(source, kind):
        return Resolved(source, None)
    top = key.partition(".")[0]
    whole = isinstance(source, LeantrainConfig | str | Path) or (
        isinstance(source, Mapping) and bool(top) and top in source
    )
    if whole:
        config = load_config(source)
        return Resolved(section_of(config, kind, key), config)
    if isinstance(source, Mapping):
        return Resolved(validate_section(kind, source, key), None)
    forms = expected or (
        f"a {kind.__name__} or the section as a dict, or a whole config (a path, a dict or a "
        "LeantrainConfig)"
    )
    raise ConfigError(f"{key or kind.__name__}: got {type(source).__name__}; expected {forms}")


def section_of(config: LeantrainConfig, kind: type[S], key: str) -> S:
    """The section at dotted `key` of a whole config: one of its typed sections, or a top-level
    key it keeps as given (a registered technique's own section), validated as `kind`."""
    parts = key.split(".")
    if parts[0] in LeantrainConfig.model_fields:
        node: Any = config
        for part in parts:
            node = getattr(node, part)
        if not isinstance(node, kind):
            raise TypeError(f"{key} holds a {type(node).__name__}, not a {kind.__name__}")
        return node
    raw: Any = config.model_extra or {}
    for part in parts:
        raw = raw.get(part) if isinstance(raw, Mapping) else None
    if raw is not None and not isinstance(raw, Mapping):
        raise ConfigError(f"{key}: got {type(raw).__name__}; expected a mapping of keys")
    return validate_section(kind, raw or {}, key)


def validate_section(kind: type[S], data: Mapping[str, Any], key: str) -> S:
    """Validate one section given alone; errors name its keys under `key`."""
    try:
        return kind.model_validate(dict(data))
    except ValidationError as err:
        raise ConfigError(describe_error(err, kind, key)) from None
