"""Errors leantrain raises for bad user input."""

from __future__ import annotations

__all__ = ["ConfigError", "LeantrainError"]


class LeantrainError(Exception):
    """Base class of every error leantrain raises on purpose."""


class ConfigError(LeantrainError, ValueError):
    """A configuration (file, dict or keyword) is invalid.

    The message names the dotted key path, the bad value and what was expected.
    """
