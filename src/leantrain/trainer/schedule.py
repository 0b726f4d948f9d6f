"""The learning rate as a pure function of the optimizer step (warmup, then decay).

The loop calls it before every optimizer step, so resuming needs no scheduler state. The
layer-token schedule is `leantrain.random_ltd.layer_token_lr_multiplier`, a pure function of the
consumed layer-tokens (saved with the leantrain handle).
"""

from __future__ import annotations

import math

__all__ = ["decayed", "lr_at_step"]


def decayed(progress: float, *, peak: float, floor: float, shape: str) -> float:
    """LR at `progress` in [0, 1] of the decay phase: cosine, linear or constant."""
    progress = min(max(progress, 0.0), 1.0)
    if shape == "constant":
        return peak
    if shape == "linear":
        return peak - (peak - floor) * progress
    if shape == "cosine":
        return floor + 0.5 * (1.0 + math.cos(math.pi * progress)) * (peak - floor)
    raise ValueError(f"decay: got {shape!r}; expected 'cosine', 'linear' or 'constant'")


def lr_at_step(
    step: int,
    *,
    peak: float,
    warmup_steps: int,
    max_steps: int,
    decay: str = "cosine",
    min_ratio: float = 0.1,
) -> float:
    """LR of optimizer step `step` (0-based): linear warmup, then decay to peak·min_ratio."""
    if step < warmup_steps:
        return peak * (step + 1) / (warmup_steps + 1)
    progress = (step - warmup_steps) / max(1, max_steps - warmup_steps)
    return decayed(progress, peak=peak, floor=peak * min_ratio, shape=decay)
