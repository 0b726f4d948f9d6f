"""The config half of `leantrain config check`: what a config holds besides the techniques.

Each technique describes its own sections (`Technique.describe`, in `leantrain.adopt.check`,
which runs the command); this module explains the rest: the `data_efficiency` switch that
encloses two techniques, the keys leantrain keeps without using, and why a section that is on
is still off (an enclosing switch).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import NamedTuple

from pydantic import BaseModel

from leantrain.config.loader import LeantrainConfig

__all__ = ["OffSection", "container_lines", "kept_key_lines", "off_sections", "why_off"]

_DE = "data_efficiency"
#: DeepSpeed batch keys that `leantrain.prepare` reads when not given as arguments.
_BATCH_KEYS = {
    "train_micro_batch_size_per_gpu": "read by leantrain.prepare as the default micro batch size",
    "gradient_accumulation_steps": "read by leantrain.prepare as the default accumulation steps",
    "train_batch_size": "read by leantrain.prepare: micro batch × accumulation × world size must "
    "equal it (a missing micro batch or accumulation is derived from it, as in DeepSpeed)",
}


def container_lines(config: LeantrainConfig) -> list[str]:
    """`data_efficiency` (on/off and its seed) and the parts of it leantrain does not implement."""
    if _DE not in config.model_fields_set:
        return []
    de = config.data_efficiency
    lines = [f"{_DE}: {'on' if de.enabled else 'off'}, seed {de.seed}"]
    if de.data_sampling.dynamic_batching.enabled:
        lines.append(f"{_DE}.data_sampling.dynamic_batching: kept, not implemented by leantrain")
    return lines


def kept_key_lines(config: LeantrainConfig, claimed: Collection[str]) -> list[str]:
    """One line per top-level key outside the typed sections and not `claimed` by a technique."""
    return [
        f"{key}: {_BATCH_KEYS.get(key, 'kept, not used by leantrain')}"
        for key in config.model_extra or {}
        if key not in claimed
    ]


def why_off(config: LeantrainConfig, key: str) -> str:
    """' (data_efficiency.enabled is false)' when the section at dotted `key` is enabled but an
    enclosing switch is off, else ''."""
    node: object = config
    switches: list[tuple[str, bool]] = []
    parts = key.split(".")
    for i, part in enumerate(parts):
        node = getattr(node, part)
        switches.append((".".join(parts[: i + 1]), bool(getattr(node, "enabled", True))))
    *enclosing, (_, section) = switches
    off = [name for name, on in enclosing if not on]
    return f" ({off[0]}.enabled is false)" if section and off else ""


class OffSection(NamedTuple):
    """A section a config gives that does not run, and why."""

    key: str
    why: str
    #: The section says `enabled: true` but an enclosing switch is off (likely a mistake).
    contradicts: bool


def off_sections(config: LeantrainConfig, keys: Iterable[str]) -> list[OffSection]:
    """Each dotted section key of `keys` that `config` gives (every part written in the file)
    but that does not run: its `enabled` is false, or an enclosing switch is off."""
    out = []
    for key in keys:
        node: object = config
        for part in key.split("."):
            if not isinstance(node, BaseModel) or part not in node.model_fields_set:
                break
            node = getattr(node, part)
        else:
            if not getattr(node, "enabled", True):
                out.append(OffSection(key, f"{key}.enabled is false", contradicts=False))
            elif enclosing := why_off(config, key):
                why = f"{key}.enabled is true, but {enclosing.strip(' ()')}"
                out.append(OffSection(key, why, contradicts=True))
    return out
