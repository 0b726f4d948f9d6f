"""Progressive Layer Dropping: the schedule as pure functions of the step, and its controller.

θ(t) = (1 − θ̄)·exp(−γ·t) + θ̄ is the global keep ratio at global step t; block i (0-based) of L
is kept with probability p_i = 1 − ((i + 1)/L)·(1 − θ(t)) and, when kept, its residual branch is
scaled by 1/p_i (stochastic depth; Zhang & He 2020).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from leantrain.config import ProgressiveLayerDropConfig, resolve
from leantrain.config.resolve import validate_section
from leantrain.errors import ConfigError, StateError, check_state_version

__all__ = [
    "ProgressiveLayerDrop",
    "coin_seed",
    "draw_layer_coins",
    "expected_keep_fraction",
    "layer_keep_prob",
    "layer_keep_probs",
    "pld_theta",
]

logger = logging.getLogger("leantrain.pld")

_MASK64 = (1 << 64) - 1
_STATE_VERSION = 1


def pld_theta(step: int, theta: float = 0.5, gamma: float = 0.001) -> float:
    """Global keep ratio θ(t) = (1 − θ̄)·e^(−γ·t) + θ̄: 1 at step 0, tending to θ̄."""
    if step < 0:
        raise ValueError(f"step: got {step}; expected a global step ≥ 0")
    if not 0.0 < theta <= 1.0:
        raise ValueError(f"theta: got {theta}; expected a keep ratio in (0, 1]")
    if gamma < 0.0:
        raise ValueError(f"gamma: got {gamma}; expected a decay rate ≥ 0")
    return (1.0 - theta) * math.exp(-gamma * step) + theta


def layer_keep_prob(layer_index: int, num_layers: int, theta_t: float) -> float:
    """Keep probability p_i = 1 − ((i+1)/L)·(1 − θ_t) of 0-based block i of L.

    The same p is used for keeping and for the 1/p scaling (DeepSpeed's example BERT uses i/L for
    one and (i+1)/L for the other; see the method card).
    """
    if num_layers < 1:
        raise ValueError(f"num_layers: got {num_layers}; expected at least 1")
    if not 0 <= layer_index < num_layers:
        raise ValueError(f"layer_index: got {layer_index}; expected 0 ≤ index < {num_layers}")
    if not 0.0 < theta_t <= 1.0:
        raise ValueError(f"theta_t: got {theta_t}; expected a keep ratio in (0, 1]")
    return 1.0 - (layer_index + 1) / num_layers * (1.0 - theta_t)


def layer_keep_probs(num_layers: int, theta_t: float) -> list[float]:
    """Keep probabilities of every block, first to last."""
    return [layer_keep_prob(i, num_layers, theta_t) for i in range(num_layers)]


def expected_keep_fraction(num_layers: int, theta_t: float) -> float:
    """Mean keep probability over L blocks, 1 − (1 − θ_t)(L + 1)/(2L): the block compute kept."""
    return sum(layer_keep_probs(num_layers, theta_t)) / num_layers


def _splitmix64(x: int) -> int:
    """One round of splitmix64: a bijective 64-bit mixer (counter-based seeding)."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def coin_seed(seed: int, step: int, forward_index: int) -> int:
    """Generator seed of the coins of one forward: a hash of (seed, global step, forward index).

    Every data-parallel rank computes the same value without communication.
    """
    return _splitmix64(_splitmix64(_splitmix64(seed) ^ step) ^ forward_index) >> 1


def draw_layer_coins(keep_probs: Sequence[float], generator: torch.Generator) -> list[bool]:
    """One Bernoulli draw per block: True where the block is kept (u < p_i), on the host."""
    draws = torch.rand(len(keep_probs), generator=generator, dtype=torch.float64).tolist()
    return [u < p for u, p in zip(draws, keep_probs, strict=True)]


class ProgressiveLayerDrop:
    """Holds θ(t) and the coin counter; the converted model reads both at every forward.

    Call `step(global_step)` (DeepSpeed's `update_state`) at the start of each optimizer step,
    and read θ with `get_theta()`. The coins of a forward depend only on (seed, global step,
    index of the training forward within the step), so every rank draws the same ones.
    """

    def __init__(self, theta: float = 0.5, gamma: float = 0.001, seed: int = 1234) -> None:
        section = _validate({"enabled": True, "theta": theta, "gamma": gamma, "seed": seed})
        self.theta = section.theta
        self.gamma = section.gamma
        self.seed = section.seed
        self.global_step = 0
        self.forward_index = 0
        self.current_theta = 1.0
        logger.info(
            "Enabled progressive layer dropping (theta = %s, gamma = %s)", self.theta, self.gamma
        )

    @classmethod
    def from_config(cls, config: Any) -> ProgressiveLayerDrop:
        """Build from the `progressive_layer_drop` section (typed or a dict) or a whole config
        (a path, a dict or a `LeantrainConfig`); the section must be enabled."""
        section = resolve(config, ProgressiveLayerDropConfig).section
        if not section.enabled:
            raise ConfigError(
                "progressive_layer_drop.enabled: got false; set it to true to use progressive "
                "layer dropping (or do not convert the model)"
            )
        return cls(theta=section.theta, gamma=section.gamma, seed=section.seed)

    def step(self, global_step: int) -> None:
        """Set θ to θ(global_step); a new step restarts the forward counter of the coins."""
        if isinstance(global_step, bool) or not isinstance(global_step, int) or global_step < 0:
            raise ValueError(f"global_step: got {global_step!r}; expected an int ≥ 0")
        if global_step != self.global_step:
            self.forward_index = 0
        self.global_step = global_step
        self.current_theta = pld_theta(global_step, self.theta, self.gamma)

    #: DeepSpeed's name for `step`.
    update_state = step

    def get_theta(self) -> float:
        """The current global keep ratio θ(t)."""
        return self.current_theta

    def keep_probs(self, num_layers: int) -> list[float]:
        """Keep probabilities of `num_layers` blocks at the current θ."""
        return layer_keep_probs(num_layers, self.current_theta)

    def layer_coins(self, num_layers: int) -> tuple[list[bool], list[float]]:
        """Draw the coins of the next training forward: (kept per block, p per block).

        Advances the forward counter. Subclass and override to force a pattern (benchmarks).
        """
        probs = self.keep_probs(num_layers)
        seed = coin_seed(self.seed, self.global_step, self.forward_index)
        self.forward_index += 1
        return draw_layer_coins(probs, torch.Generator().manual_seed(seed)), probs

    def state_dict(self) -> dict[str, Any]:
        """Versioned state: hyperparameters, step, θ and the coin counter (for exact resume)."""
        return {
            "version": _STATE_VERSION,
            "theta": self.theta,
            "gamma": self.gamma,
            "seed": self.seed,
            "global_step": self.global_step,
            "forward_index": self.forward_index,
            "current_theta": self.current_theta,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore `state_dict()`; refuses unknown versions, missing keys and a state saved for
        another schedule (θ̄, γ or seed), so that what runs is what the config says."""
        check_state_version(state, _STATE_VERSION, "ProgressiveLayerDrop")
        missing = sorted(set(self.state_dict()) - set(state))
        if missing:
            raise StateError(f"ProgressiveLayerDrop state: missing keys {missing}")
        section = _validate(
            {
                "enabled": True,
                "theta": state["theta"],
                "gamma": state["gamma"],
                "seed": state["seed"],
            }
        )
        for key in ("theta", "gamma", "seed"):
            if getattr(section, key) != getattr(self, key):
                raise StateError(
                    f"ProgressiveLayerDrop state: progressive_layer_drop.{key} "
                    f"{getattr(section, key)} was saved, the config has {getattr(self, key)}; "
                    "resume with the same schedule"
                )
        self.global_step = int(state["global_step"])
        self.forward_index = int(state["forward_index"])
        self.current_theta = float(state["current_theta"])

    def __repr__(self) -> str:
        return (
            f"ProgressiveLayerDrop(theta={self.theta}, gamma={self.gamma}, seed={self.seed}, "
            f"step={self.global_step}, current_theta={self.current_theta:.4f})"
        )


def _validate(section: Mapping[str, Any]) -> ProgressiveLayerDropConfig:
    """Validate the section's values (ConfigError naming `progressive_layer_drop.<key>`)."""
    return validate_section(ProgressiveLayerDropConfig, section, "progressive_layer_drop")
