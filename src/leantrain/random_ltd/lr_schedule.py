"""Learning-rate schedule by consumed layer-tokens, as the random-LTD paper trains with.

With token dropping a step consumes fewer layer-tokens early on, so the random-LTD paper
(Yao et al. 2022) replaces the step- or token-based LR decay by one on consumed layer-tokens; its
GPT pre-training keeps Megatron's shape, linear warmup then cosine decay, which is the default
here (linear decay is offered for BERT-style recipes). DeepSpeed's config carries the keys but
raises NotImplementedError; here it is a `torch.optim.lr_scheduler.LRScheduler`.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from torch import Tensor
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from leantrain.errors import ConfigError
from leantrain.random_ltd.scheduler import RandomLTDScheduler

__all__ = ["LayerTokenLRScheduler", "layer_token_lr_multiplier"]

Decay = Literal["cosine", "linear"]
Warmup = Literal["linear", "constant"]


def layer_token_lr_multiplier(
    consumed: int,
    *,
    total_layer_tokens: int,
    warmup_layer_tokens: int = 0,
    warmup_type: Warmup = "linear",
    decay: Decay = "cosine",
    min_ratio: float = 0.0,
) -> float:
    """LR / peak LR after `consumed` layer-tokens (pure).

    Warmup: `linear` ramps from 0 to 1 over `warmup_layer_tokens`; `constant` holds 1. Then
    `decay` (cosine or linear) from 1 to `min_ratio` at `total_layer_tokens`, flat after.
    """
    if total_layer_tokens <= 0 or not 0 <= warmup_layer_tokens <= total_layer_tokens:
        raise ValueError(
            f"layer-token LR: got warmup {warmup_layer_tokens} and total {total_layer_tokens}; "
            "expected 0 <= warmup <= total and total > 0"
        )
    if consumed < warmup_layer_tokens:
        return consumed / warmup_layer_tokens if warmup_type == "linear" else 1.0
    span = total_layer_tokens - warmup_layer_tokens
    progress = 1.0 if span == 0 else min(1.0, (consumed - warmup_layer_tokens) / span)
    shape = 0.5 * (1.0 + math.cos(math.pi * progress)) if decay == "cosine" else 1.0 - progress
    return min_ratio + (1.0 - min_ratio) * shape


class LayerTokenLRScheduler(LRScheduler):
    """Scales each param group's initial LR by `layer_token_lr_multiplier` of the scheduler's
    consumed layer-tokens. Call `step()` after `optimizer.step()`, as with any LR scheduler.

    Unset arguments come from the config's `layer_token_lr_schedule` (`total_layer_tokens`,
    `warmup_layer_tokens`, `warmup_type`).
    """

    def __init__(
        self,
        optimizer: Optimizer,
        scheduler: RandomLTDScheduler,
        *,
        total_layer_tokens: int | None = None,
        warmup_layer_tokens: int | None = None,
        warmup_type: Warmup | None = None,
        decay: Decay = "cosine",
        min_ratio: float = 0.0,
        last_epoch: int = -1,
    ) -> None:
        section = scheduler.config.layer_token_lr_schedule
        total = total_layer_tokens if total_layer_tokens is not None else section.total_layer_tokens
        if total is None:
            raise ConfigError(
                "data_efficiency.data_routing.random_ltd.layer_token_lr_schedule."
                "total_layer_tokens: required (or pass total_layer_tokens=)"
            )
        self.ltd = scheduler
        self.total_layer_tokens = total
        self.warmup_layer_tokens = (
            warmup_layer_tokens if warmup_layer_tokens is not None else section.warmup_layer_tokens
        )
        self.warmup_type: Warmup = warmup_type or section.warmup_type
        self.decay: Decay = decay
        self.min_ratio = min_ratio
        layer_token_lr_multiplier(  # validate the arguments now, not at the first step
            0,
            total_layer_tokens=self.total_layer_tokens,
            warmup_layer_tokens=self.warmup_layer_tokens,
        )
        super().__init__(optimizer, last_epoch)

    def multiplier(self) -> float:
        """The current LR multiplier (from the scheduler's consumed layer-tokens)."""
        return layer_token_lr_multiplier(
            self.ltd.consumed_layer_tokens,
            total_layer_tokens=self.total_layer_tokens,
            warmup_layer_tokens=self.warmup_layer_tokens,
            warmup_type=self.warmup_type,
            decay=self.decay,
            min_ratio=self.min_ratio,
        )

    def get_lr(self) -> list[float | Tensor]:
        """Each group's initial LR times the multiplier."""
        factor = self.multiplier()
        return [base * factor for base in self.base_lrs]

    def state_dict(self) -> dict[str, Any]:
        """LRScheduler state without the random-LTD scheduler (it saves its own)."""
        return {k: v for k, v in super().state_dict().items() if k != "ltd"}
