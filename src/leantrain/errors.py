"""Errors leantrain raises for bad user input."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["ConfigError", "LeantrainError", "StateError", "check_state_version"]


class LeantrainError(Exception):
    """Base class of every error leantrain raises on purpose."""


class ConfigError(LeantrainError, ValueError):
    """A configuration (file, dict or keyword) is invalid.

    The message names the dotted key path, the bad value and what was expected.
    """


class StateError(LeantrainError, ValueError):
    """A saved state cannot be restored here (another version, schedule, index or setup)."""


def check_state_version(state: Mapping[str, Any], expected: int, owner: str) -> None:
    """Refuse a `state_dict` written in another format version than `expected`."""
    version = state.get("version")
    if version != expected:
        raise StateError(
            f"{owner} state: version {version!r} is not supported; "
            f"this leantrain reads version {expected}"
        )
