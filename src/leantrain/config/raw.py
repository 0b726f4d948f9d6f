"""Reading and editing raw config dicts by dotted section key, before any validation.

`leantrain compare` builds each arm's recipe from the raw dict (so a finished run's recipe, hashed,
is the dict as written): which sections are on, which to remove, which step counts to scale. The
techniques do that for their own sections (`Technique.enabled_in`, `remove_from`, `scale_steps`)
with these helpers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["is_on", "remove_section", "scaled_steps", "section_at"]


def section_at(raw: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    """The section at dotted `key`, or an empty mapping where it (or an enclosing one) is not a
    mapping."""
    node: Any = raw
    for part in key.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    return node if isinstance(node, Mapping) else {}


def is_on(raw: Mapping[str, Any], key: str) -> bool:
    """Whether the section at dotted `key` and every section enclosing it say `enabled`."""
    parts = key.split(".")
    return all(
        section_at(raw, ".".join(parts[: i + 1])).get("enabled", False) for i in range(len(parts))
    )


def remove_section(raw: dict[str, Any], key: str) -> None:
    """Remove the section at dotted `key` in place (if there), then each enclosing section left
    holding no section (only switches such as `enabled`)."""
    *outer, last = key.split(".")
    chain = [raw]
    for part in outer:
        node = chain[-1].get(part)
        if not isinstance(node, dict):
            return
        chain.append(node)
    chain[-1].pop(last, None)
    for depth in range(len(outer), 0, -1):
        if any(isinstance(v, Mapping) for v in chain[depth].values()):
            return
        chain[depth - 1].pop(outer[depth - 1])


def scaled_steps(value: int, factor: float) -> int:
    """A step count scaled by `factor`, rounded, at least 1."""
    return max(1, round(value * factor))
