"""Padding under random-LTD: whether kept tokens are drawn among real tokens first, and a
warning when a padding-blind draw (DeepSpeed's) spends the reserved length on padding."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from torch import Tensor

from leantrain.config import RandomLTDConfig

__all__ = ["PaddingWatch", "sample_non_padding_only"]

logger = logging.getLogger(__name__)


def sample_non_padding_only(cfg: RandomLTDConfig, kind: str | None) -> bool:
    """Whether kept tokens are drawn among non-padding ones first: the config's
    `sample_non_padding_only`, by default on for encoders (`kind`, the registry's kind of block,
    else the config's `model_type`), whose padded batches would otherwise spend the reserved
    length on padding, and off (DeepSpeed's draw) for decoders."""
    if cfg.sample_non_padding_only is not None:
        return cfg.sample_non_padding_only
    return (kind or cfg.model_type) == "encoder"


@dataclass(eq=False)
class PaddingWatch:
    """Warns once when most tokens a padding-blind draw kept are padding.

    Checked on layer calls 1, 2, 4, 8, ... of a conversion (one host sync each, so a run of N
    calls pays about log2(N) of them), and only while `sample_non_padding_only` is off.
    """

    calls: int = 0
    warned: bool = False

    def due(self) -> bool:
        """Whether this layer call should be checked."""
        self.calls += 1
        return not self.warned and self.calls & (self.calls - 1) == 0

    def check(self, layer_id: int, valid: Tensor, indices: Tensor) -> None:
        """Warn if over half of the kept positions `indices` [B, r] are not `valid` [B, S]."""
        padding = float((~valid).gather(1, indices).float().mean())
        if padding > 0.5:
            self.warned = True
            logger.warning(
                "random-LTD: %.0f%% of the tokens kept in block %d are padding, so the reserved "
                "length is spent on padding (sample_non_padding_only is false: DeepSpeed's "
                "padding-blind draw). Set data_efficiency.data_routing.random_ltd."
                "sample_non_padding_only: true to keep real tokens first, or pad less",
                100 * padding,
                layer_id,
            )
