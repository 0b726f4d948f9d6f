"""leantrain's version, written once (the package root and the wheel's metadata read it here)."""

__version__ = "0.1.0"
