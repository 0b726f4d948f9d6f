"""PLD as a `Technique`: the `progressive_layer_drop` section, the θ schedule and the surgery."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from torch import nn

from leantrain.accounting import StepShape
from leantrain.config import LeantrainConfig
from leantrain.models import BlockList, find_stacks
from leantrain.pld.schedule import (
    ProgressiveLayerDrop,
    expected_keep_fraction,
    layer_keep_probs,
    pld_theta,
)
from leantrain.pld.surgery import convert_to_progressive_layer_drop, revert_progressive_layer_drop
from leantrain.technique import Requirements, Setup, Technique

__all__ = ["PLDTechnique"]

_KEY = "progressive_layer_drop"
_THETA = "pld/theta"


class PLDTechnique(Technique):
    """Skips whole blocks with a depth-scaled probability that falls with θ(t)."""

    name = "pld"
    sections = (_KEY,)
    columns: ClassVar[Mapping[str, str]] = {_THETA: "θ"}

    def __init__(
        self,
        schedule: ProgressiveLayerDrop,
        blocks: BlockList,
        layers: nn.ModuleList | str | None = None,
    ) -> None:
        """`schedule` drives the blocks of every stack of the model (`layers` None), else of
        the caller's `layers` (whose stack is `blocks`)."""
        self.schedule = schedule
        self.blocks = blocks
        self.layers = layers
        #: The converted stacks (known once applied; until then the first).
        self.stacks: tuple[BlockList, ...] = (blocks,)

    @classmethod
    def enabled(cls, config: LeantrainConfig) -> bool:
        """`progressive_layer_drop.enabled`."""
        return config.pld_enabled

    @classmethod
    def title(cls, config: LeantrainConfig) -> str:
        """PLD."""
        return "PLD"

    @classmethod
    def requirements(cls, config: LeantrainConfig) -> Requirements:
        """Converts blocks; a skipped block's parameters get no gradient in that step."""
        return Requirements(converts_model=True, find_unused_parameters=True)

    @classmethod
    def describe(cls, config: LeantrainConfig, *, num_layers: int, at_step: int) -> list[str]:
        """θ at `at_step` and the block compute kept at steady state."""
        if _KEY not in config.model_fields_set:
            return []
        section = config.progressive_layer_drop
        if not section.enabled:
            return [f"{_KEY}: off"]
        theta_t = pld_theta(at_step, section.theta, section.gamma)
        kept = expected_keep_fraction(num_layers, section.theta)
        return [
            f"{_KEY}: on, θ̄={section.theta:g} γ={section.gamma:g} → θ({at_step})={theta_t:.3f}; "
            f"expected block compute kept at steady state {100 * kept:.1f}% for {num_layers} "
            f"layers (whole blocks skipped, coin seed {section.seed})"
        ]

    @classmethod
    def scale_steps(cls, raw: dict[str, Any], factor: float) -> None:
        """γ, inversely: θ decays over the same share of a run `factor` times as long."""
        section = raw.get(_KEY)
        if isinstance(section, dict) and section.get("gamma") is not None:
            section["gamma"] = float(section["gamma"]) / factor

    @classmethod
    def account_logged(
        cls, config: LeantrainConfig, row: Mapping[str, float], shape: StepShape
    ) -> None:
        """Each block counts with its keep probability at the logged θ."""
        theta = row.get(_THETA)
        if theta is not None:
            shape.keep(layer_keep_probs(shape.num_layers, theta))

    @classmethod
    def from_config(cls, config: LeantrainConfig, setup: Setup) -> PLDTechnique:
        """The schedule of the `progressive_layer_drop` section, for the model's blocks."""
        schedule = ProgressiveLayerDrop.from_config(config.progressive_layer_drop)
        return cls(schedule, setup.blocks, setup.layers)

    @property
    def controller(self) -> ProgressiveLayerDrop:
        """The θ schedule: `step` (DeepSpeed's `update_state`), `get_theta`."""
        return self.schedule

    def summary(self) -> str:
        """θ̄, γ and the blocks of each stack."""
        s = self.schedule
        stacks = " and ".join(f"the {len(b)} blocks of {b.path}" for b in self.stacks)
        each = " within each stack" if len(self.stacks) > 1 else ""
        return (
            f"PLD: θ̄={s.theta:g} γ={s.gamma:g}, {stacks} skipped with a depth-scaled "
            f"probability{each}"
        )

    def apply(self, model: nn.Module) -> None:
        """Make every block skippable: of every stack (encoder and decoder), or of `layers`."""
        self.stacks = find_stacks(model, self.layers)
        convert_to_progressive_layer_drop(model, self.schedule, layers=self.layers)

    def revert(self, model: nn.Module) -> None:
        """Plain blocks again."""
        revert_progressive_layer_drop(model)

    def step(self, global_step: int) -> None:
        """θ(global_step)."""
        self.schedule.step(global_step)

    def account(self, shape: StepShape) -> None:
        """Each block counts with its keep probability."""
        shape.keep(self.schedule.keep_probs(shape.num_layers))

    def metrics(self) -> dict[str, float]:
        """`pld/theta`."""
        return {_THETA: float(self.schedule.get_theta())}

    def state_dict(self) -> dict[str, Any]:
        """The schedule's state."""
        return self.schedule.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the schedule's state."""
        self.schedule.load_state_dict(state)
