"""Random-LTD as a `Technique`: the `random_ltd` section, the reserved-length schedule, the
surgery, and the LR by layer-tokens."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any, ClassVar

from torch import nn

from leantrain.accounting import StepShape
from leantrain.config import LeantrainConfig, RandomLTDConfig
from leantrain.config.check import why_off
from leantrain.config.raw import scaled_steps, section_at
from leantrain.errors import ConfigError
from leantrain.models import BlockList
from leantrain.random_ltd.lr_schedule import layer_token_lr_multiplier
from leantrain.random_ltd.scheduler import RandomLTDScheduler, reserved_length
from leantrain.random_ltd.surgery import (
    convert_to_random_ltd,
    converted_layer_ids,
    revert_random_ltd,
)
from leantrain.technique import Facts, Requirements, Setup, Technique

__all__ = ["RandomLTDTechnique"]

_KEY = "data_efficiency.data_routing.random_ltd"
_R = "random_ltd/reserved_length"


class RandomLTDTechnique(Technique):
    """Middle blocks see a random subset of r tokens; r grows to the full length."""

    name = "random_ltd"
    arm = "ltd"
    sections = (_KEY,)
    columns: ClassVar[Mapping[str, str]] = {_R: "r"}
    lr_schedule_key = f"{_KEY}.layer_token_lr_schedule"

    def __init__(
        self,
        scheduler: RandomLTDScheduler,
        blocks: BlockList,
        layer_ids: tuple[int, ...],
        *,
        rank: int,
    ) -> None:
        """`scheduler` (complete) drives blocks `layer_ids` of `blocks`."""
        self.scheduler = scheduler
        self.blocks = blocks
        self.layer_ids = layer_ids
        self.rank = rank

    @classmethod
    def enabled(cls, config: LeantrainConfig) -> bool:
        """`random_ltd.enabled` and every enclosing switch."""
        return config.random_ltd_enabled

    @classmethod
    def title(cls, config: LeantrainConfig) -> str:
        """random-LTD."""
        return "random-LTD"

    @classmethod
    def requirements(cls, config: LeantrainConfig) -> Requirements:
        """Converts blocks (they run on fewer tokens; every parameter still gets a gradient)."""
        return Requirements(converts_model=True)

    @classmethod
    def facts(cls, config: LeantrainConfig) -> Facts:
        """`max_value` is the full sequence length; `total_layer_num` the model's blocks."""
        schedule = config.random_ltd.random_ltd_schedule
        return Facts(
            seq_length=schedule.max_value if schedule is not None else None,
            num_layers=config.random_ltd.total_layer_num,
        )

    @classmethod
    def check(cls, config: LeantrainConfig, facts: Facts) -> None:
        """`max_value` must cover the longest length a curriculum reaches."""
        schedule = config.random_ltd.random_ltd_schedule
        assert schedule is not None  # required by the schema when enabled
        if facts.paced_length is not None and facts.paced_length > schedule.max_value:
            raise ConfigError(
                f"{_KEY}.random_ltd_schedule.max_value: got {schedule.max_value}, below the "
                f"curriculum's maximum sequence length {facts.paced_length}; expected max_value "
                "to be the full sequence length"
            )

    @classmethod
    def schedules_lr(cls, config: LeantrainConfig) -> bool:
        """With `layer_token_lr_schedule` enabled: the LR follows consumed layer-tokens."""
        return config.random_ltd.layer_token_lr_schedule.enabled

    @classmethod
    def describe(cls, config: LeantrainConfig, *, num_layers: int, at_step: int) -> list[str]:
        """Layers, r at `at_step`, the layer-tokens kept at step 0 and the LR schedule."""
        if "data_efficiency" not in config.model_fields_set:
            return []
        ltd = config.random_ltd
        if not config.random_ltd_enabled:
            return [f"{_KEY}: off{why_off(config, _KEY)}"]
        schedule = ltd.random_ltd_schedule
        assert schedule is not None  # the schema requires it when enabled
        ids = _layer_ids(ltd, num_layers)
        params = schedule.schedule_config
        at = functools.partial(
            reserved_length,
            min_value=schedule.min_value,
            max_value=schedule.max_value,
            require_steps=params.require_steps,
            seq_per_step=params.seq_per_step,
        )
        full = schedule.max_value
        kept = (at(0) * len(ids) + full * (num_layers - len(ids))) / (full * num_layers)
        lr = ltd.layer_token_lr_schedule
        lr_text = (
            f"; LR by layer-tokens ({lr.warmup_type} warmup {lr.warmup_layer_tokens}, "
            f"total {lr.total_layer_tokens})"
            if lr.enabled
            else ""
        )
        return [
            f"{_KEY}: on, {ltd.model_type or 'model_type from the registry'}, layers "
            f"{_ranges(ids)} ({len(ids)} of {num_layers}) keep r of {full} tokens, r "
            f"{schedule.min_value} → {full} by {schedule.schedule_type} over "
            f"{params.require_steps} steps in multiples of {params.seq_per_step}; "
            f"r({at_step})={at(at_step)}; layer-tokens at step 0: {100 * kept:.1f}% of full; "
            f"{_draw_text(ltd)}{lr_text}"
        ]

    @classmethod
    def remove_from(cls, raw: dict[str, Any]) -> None:
        """Its section; a recipe whose LR decays by layer-tokens (`optim.decay: layer_tokens`,
        which needs random-LTD's counter) decays it by steps instead: cosine, the warmup
        converted from layer-tokens at full length."""
        section = section_at(raw, _KEY)
        super().remove_from(raw)
        optim = raw.get("optim")
        if not isinstance(optim, dict) or optim.get("decay") != "layer_tokens":
            return
        optim["decay"] = "cosine"
        warm = section_at(section, "layer_token_lr_schedule").get("warmup_layer_tokens", 0) or 0
        model = section_at(raw, "model.config")
        layers = (
            section.get("total_layer_num") or model.get("n_layer") or model.get("num_hidden_layers")
        )
        per_step = (
            int(optim.get("micro_batch_size", 8))
            * int(optim.get("grad_accum", 1))
            * int(section_at(raw, "data").get("seq_len", 128))
            * int(layers or 1)
        )
        optim["warmup_steps"] = round(warm / per_step)

    @classmethod
    def scale_steps(cls, raw: dict[str, Any], factor: float) -> None:
        """`require_steps`, and the layer-token LR schedule's token totals."""
        params = section_at(raw, f"{_KEY}.random_ltd_schedule.schedule_config")
        if isinstance(params, dict) and isinstance(params.get("require_steps"), int):
            params["require_steps"] = scaled_steps(params["require_steps"], factor)
        lr = section_at(raw, f"{_KEY}.layer_token_lr_schedule")
        for key in ("total_layer_tokens", "warmup_layer_tokens"):
            if isinstance(lr, dict) and lr.get(key):
                lr[key] = scaled_steps(int(lr[key]), factor)

    @classmethod
    def account_logged(
        cls, config: LeantrainConfig, row: Mapping[str, float], shape: StepShape
    ) -> None:
        """Its blocks see at most the logged r tokens."""
        r = row.get(_R)
        if r is not None:
            shape.cap(_layer_ids(config.random_ltd, shape.num_layers), int(r))

    @classmethod
    def from_config(cls, config: LeantrainConfig, setup: Setup) -> RandomLTDTechnique:
        """The scheduler, complete: layer counts from the blocks, the real global batch, and the
        run's token counter."""
        section = config.random_ltd
        layer_ids = converted_layer_ids(section, setup.blocks)
        scheduler = RandomLTDScheduler(
            section,
            total_layer_num=len(setup.blocks),
            random_ltd_layer_num=len(layer_ids),
            global_batch_size=setup.global_batch_size,
            counter=setup.counter,
        )
        return cls(scheduler, setup.blocks, layer_ids, rank=setup.rank)

    @property
    def controller(self) -> RandomLTDScheduler:
        """The scheduler: `step` (DeepSpeed's `update_seq`), `get_current_seq`."""
        return self.scheduler

    def summary(self) -> str:
        """The layers and the reserved-length schedule."""
        s = self.scheduler
        return (
            f"random-LTD: blocks {_ranges(list(self.layer_ids))} of {self.blocks.path} keep r "
            f"tokens, r {s.min_value} → {s.max_value} over {s.require_steps} steps"
        )

    def apply(self, model: nn.Module) -> None:
        """Convert the chosen blocks of `blocks`: the caller's `layers`, else the registry's
        first stack (the encoder of an encoder-decoder), called the way its family says."""
        convert_to_random_ltd(
            model, self.scheduler, layers=self.blocks, data_parallel_rank=self.rank
        )

    def revert(self, model: nn.Module) -> None:
        """Plain blocks again."""
        revert_random_ltd(model)

    def step(self, global_step: int) -> None:
        """r(global_step)."""
        self.scheduler.step(global_step)

    def account(self, shape: StepShape) -> None:
        """Converted blocks see at most r tokens."""
        shape.cap(self.layer_ids, int(self.scheduler.get_current_seq()))

    def metrics(self) -> dict[str, float]:
        """`random_ltd/reserved_length`."""
        return {_R: float(self.scheduler.get_current_seq())}

    def lr_multiplier(self, *, min_ratio: float) -> float | None:
        """The layer-token LR schedule at the run's consumed layer-tokens (None when off)."""
        lt = self.scheduler.config.layer_token_lr_schedule
        if not lt.enabled:
            return None
        assert lt.total_layer_tokens is not None  # required by the schema when enabled
        return layer_token_lr_multiplier(
            self.scheduler.consumed_layer_tokens,  # the run's one count
            total_layer_tokens=lt.total_layer_tokens,
            warmup_layer_tokens=lt.warmup_layer_tokens,
            warmup_type=lt.warmup_type,
            min_ratio=min_ratio,
        )

    def state_dict(self) -> dict[str, Any]:
        """The scheduler's state."""
        return self.scheduler.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the scheduler's state."""
        self.scheduler.load_state_dict(state)


def _layer_ids(ltd: RandomLTDConfig, num_layers: int) -> list[int]:
    """Its blocks in a model of `num_layers`: `random_ltd_layer_id`, else all but the first and
    last."""
    ids = ltd.random_ltd_layer_id
    return list(ids) if ids is not None else list(range(1, num_layers - 1))


def _draw_text(ltd: RandomLTDConfig) -> str:
    """Which tokens are drawn: real ones first, or DeepSpeed's padding-blind draw."""
    real, blind = "real tokens kept before padding", "padding-blind draw (DeepSpeed's)"
    if ltd.sample_non_padding_only is not None:
        return real if ltd.sample_non_padding_only else blind
    if ltd.model_type is None:
        return f"{real} for encoders, {blind} for decoders (sample_non_padding_only unset)"
    chosen = real if ltd.model_type == "encoder" else blind
    return f"{chosen}, the default for {ltd.model_type}s"


def _ranges(ids: list[int]) -> str:
    """'[1..10]' for consecutive ids, else the list."""
    if ids and ids == list(range(ids[0], ids[-1] + 1)) and len(ids) > 2:
        return f"[{ids[0]}..{ids[-1]}]"
    return str(ids)
