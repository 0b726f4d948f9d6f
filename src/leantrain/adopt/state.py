"""The handle's versioned state: every technique's state, the data order and the counters.

Version 2 keeps each technique's state under its name (`techniques`). Version 1 (leantrain 0.1)
kept the controllers and the curriculum schedules apart; each technique reads its own part of
such a state (`Technique.state_from_v1`), so old checkpoints still load.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from leantrain.adopt.compose import TECHNIQUES
from leantrain.adopt.data import ShuffledBatchSampler
from leantrain.errors import LeantrainError, StateError, check_state_version

if TYPE_CHECKING:
    from leantrain.adopt.handle import LeantrainHandle

__all__ = ["STATE_VERSION", "handle_state", "load_handle_state", "upgrade_v1"]

#: Version of `LeantrainHandle.state_dict()`; bumped when its layout changes.
STATE_VERSION = 2
#: Top-level keys of a state besides the counters'.
_KEYS = ("global_step", "sampler", "techniques")


def _require(state: Mapping[str, Any], keys: Sequence[str], where: str) -> None:
    """Refuse an incomplete state, naming the first missing key."""
    missing = [k for k in keys if k not in state]
    if missing:
        raise StateError(
            f"{where}: missing key {missing[0]!r}; expected a whole handle.state_dict() "
            f"(it has {sorted(state)})"
        )


def handle_state(handle: LeantrainHandle) -> dict[str, Any]:
    """The state of `handle`."""
    sampler = handle.batch_sampler
    return {
        "version": STATE_VERSION,
        "global_step": handle.global_step,
        **handle.counter.state_dict(),
        "seq_length": handle.seq_length,
        "sampler": sampler.state_dict() if isinstance(sampler, ShuffledBatchSampler) else None,
        "techniques": {t.name: t.state_dict() for t in handle.techniques},
    }


def upgrade_v1(state: Mapping[str, Any]) -> dict[str, Any]:
    """A version-1 state (leantrain 0.1) in the version-2 layout."""
    _require(state, ("controllers", "curricula"), "leantrain state (version 1)")
    techniques = {}
    for technique in TECHNIQUES:
        saved = technique.state_from_v1(state)
        if saved is not None:
            techniques[technique.name] = saved
    kept = {k: v for k, v in state.items() if k not in ("controllers", "curricula")}
    return {**kept, "version": 2, "techniques": techniques}


def load_handle_state(handle: LeantrainHandle, state: Mapping[str, Any]) -> None:
    """Restore `handle_state()` into `handle` (its techniques, data order and counters)."""
    if state.get("version") == 1:
        state = upgrade_v1(state)
    _require(state, ("version",), "leantrain state")
    check_state_version(state, STATE_VERSION, "leantrain")
    _require(state, (*_KEYS, *handle.counter.state_dict()), "leantrain state")
    saved, mine = sorted(state["techniques"]), sorted(t.name for t in handle.techniques)
    if saved != mine:
        raise LeantrainError(
            f"leantrain state: checkpoint has techniques {saved}, this run has {mine}; resume "
            "with the same config"
        )
    if isinstance(handle.batch_sampler, ShuffledBatchSampler) and state["sampler"] is not None:
        handle.batch_sampler.load_state_dict(state["sampler"])
    for technique in handle.techniques:
        try:
            technique.load_state_dict(state["techniques"][technique.name])
        except KeyError as err:
            raise StateError(
                f"leantrain state: techniques.{technique.name}: missing key {err.args[0]!r}; "
                "expected a whole handle.state_dict()"
            ) from None
    handle.counter.load_state_dict(state)
