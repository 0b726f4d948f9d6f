"""Convert chosen blocks of a model to random-LTD layers and back, keeping checkpoint keys.

`convert_to_random_ltd` finds the block list, checks the layers against the model family and
makes one `LayerPlan` per converted block (`plan.py`), whose class then gains `RandomLTDMixin`
(`layer.py`: same parameters, same `state_dict` keys, same module names). `revert_random_ltd`
undoes it; `remove_random_ltd_state_dict` reads checkpoints with DeepSpeed's wrapper keys.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from leantrain.config import RandomLTDConfig
from leantrain.errors import ConfigError
from leantrain.models import BlockList, Route, find_block_list
from leantrain.random_ltd.layer import convert_block, revert_block
from leantrain.random_ltd.moe import attach_moe_aux_loss
from leantrain.random_ltd.padding import PaddingWatch, sample_non_padding_only
from leantrain.random_ltd.plan import LayerPlan
from leantrain.random_ltd.scheduler import RandomLTDScheduler, resolve_random_ltd_config
from leantrain.surgery import (
    DepthCounter,
    SurgeryError,
    conversions,
    ensure_plain_model,
    forget_conversion,
    forward_slots,
    record_conversion,
)

__all__ = [
    "TECHNIQUE",
    "RandomLTDConversion",
    "convert_to_random_ltd",
    "converted_layer_ids",
    "kept_indices",
    "random_ltd_scheduler_of",
    "remove_random_ltd_state_dict",
    "revert_random_ltd",
]

#: Name of the conversion record (`leantrain.surgery.conversions(model)[TECHNIQUE]`).
TECHNIQUE = "random_ltd"
_DEEPSPEED_WRAPPER = "random_ltd_layer"


@dataclass(frozen=True)
class RandomLTDConversion:
    """What `convert_to_random_ltd` changed: the block list, the layer ids and the scheduler."""

    path: str
    layer_ids: tuple[int, ...]
    scheduler: RandomLTDScheduler
    plans: tuple[LayerPlan, ...] = ()
    #: Blocks converted (each once, also when shared across depths).
    blocks: tuple[nn.Module, ...] = ()
    #: Hooks to remove on revert (depth counters, MoE router taps).
    hooks: tuple[Any, ...] = ()


def _family_name(found: BlockList) -> str:
    """The model type named in messages ("custom blocks" without a registered family)."""
    if found.family is None:
        return "custom blocks"
    model_type = getattr(getattr(found.owner, "config", None), "model_type", None)
    return model_type if isinstance(model_type, str) else found.family.model_types[0]


def _check_stack(
    found: BlockList, cfg: Any, layer_ids: tuple[int, ...], section: str, mask_arg: str | None
) -> None:
    """Refuse stacks and layers the family says random-LTD cannot route, and a `model_type`
    that contradicts the blocks where it matters."""
    stack = found.stack
    name = _family_name(found)
    if stack is not None and stack.random_ltd is not None:
        raise SurgeryError(f"random-LTD cannot convert {name} ({found.path}): {stack.random_ltd}")
    refused = {i: why for i, why in (stack.ltd_refused if stack else {}).items() if i in layer_ids}
    if refused:
        raise ConfigError(
            f"{section}.random_ltd_layer_id: {name} block {min(refused)} cannot drop tokens: "
            f"{refused[min(refused)]}"
        )
    # DeepSpeed reads model_type only to choose how to cut the mask, and DeepSpeedExamples' ViT
    # configs say "decoder" (its mask-less path); leantrain gathers masks the same way for both,
    # so a mismatch is refused only where masks are in use (a config written for another model).
    kind = cfg.model_type
    masked = mask_arg is not None and not (stack is not None and stack.patches)
    if stack is not None and kind is not None and kind != stack.kind and masked:
        raise ConfigError(
            f"{section}.model_type: got {cfg.model_type!r}; {found.path} holds {stack.kind} blocks"
        )


def convert_to_random_ltd(
    model: nn.Module,
    config: Any,
    layers: nn.ModuleList | str | BlockList | None = None,
    *,
    data_parallel_rank: int | None = None,
) -> nn.Module:
    """Convert the chosen blocks of `model` to random-LTD in place and return the model.

    `config`: the `random_ltd` section (dict or `RandomLTDConfig`), a whole config, or a
    `RandomLTDScheduler` (the layers then read its reserved length). `layers`: the block list
    or its dotted path (default: from the model-family registry; the encoder of an
    encoder-decoder). Converted blocks are the config's `random_ltd_layer_id`, else all but the
    first and last. Draws come from the device's default generator, decorrelated per
    `data_parallel_rank` (default: the torch.distributed rank; pass the data-parallel rank under
    tensor/pipeline parallelism). Convert before torch.compile, DDP or FSDP.
    """
    ensure_plain_model(model, "random-LTD")
    if TECHNIQUE in conversions(model):
        raise SurgeryError("the model is already converted by random_ltd; revert it first")
    cfg = resolve_random_ltd_config(config)
    found = find_block_list(model, layers)
    layer_ids = converted_layer_ids(cfg, found)
    if isinstance(config, RandomLTDScheduler):
        scheduler = config
        scheduler.set_layer_counts(len(found), len(layer_ids))  # checks, or fills counts left out
    else:
        scheduler = RandomLTDScheduler(
            cfg, total_layer_num=len(found), random_ltd_layer_num=len(layer_ids)
        )
    section = "data_efficiency.data_routing.random_ltd"
    stack, family = found.stack, found.family
    mask_arg = cfg.model_mask_name or (stack.mask_arg if stack else None)
    _check_stack(found, cfg, layer_ids, section, mask_arg)
    routes: dict[str, Route] = dict(stack.routes) if stack else {}
    if mask_arg is not None:
        routes[mask_arg] = "pairs"
    keep = cfg.keep_positions
    keep_positions = tuple(keep) if keep is not None else (stack.keep_positions if stack else ())
    non_padding = sample_non_padding_only(cfg, stack.kind if stack else None)
    watch = PaddingWatch()
    depth = DepthCounter(found, "random-LTD") if found.shared else None
    by_block: dict[nn.Module, set[int]] = {}
    for i in layer_ids:  # depth i runs block i (or, when shared, block i·G // L of G)
        by_block.setdefault(found.blocks[i * len(found.blocks) // len(found)], set()).add(i)
    plans = []
    for block, ids in by_block.items():
        slots = forward_slots(block)
        if mask_arg is not None and mask_arg not in slots.names and not slots.var_keyword:
            raise ConfigError(
                f"{section}.model_mask_name: {type(block).__name__}.forward has no argument "
                f"{mask_arg!r} (it takes {sorted(slots.names)})"
            )
        plan = LayerPlan(
            scheduler=scheduler,
            layer_ids=frozenset(ids),
            batch_first=cfg.hidden_state_order == "batch_seq_dim",
            slots=slots,
            mask_arg=mask_arg,
            routes=routes,
            keep_positions=keep_positions,
            sample_non_padding_only=non_padding,
            data_parallel_rank=data_parallel_rank,
            family=_family_name(found),
            echo=dict(stack.echo_outputs) if stack else {},
            shared_draw=stack.shared_draw if stack else False,
            index=min(ids),
            depth=depth,
            padding_watch=watch,
        )
        plans.append((block, plan))
    hooks: list[Any] = [depth] if depth else []
    if family is not None and family.moe is not None:
        moe = attach_moe_aux_loss(model, found, dict(plans), family.moe)
        hooks += [moe] if moe else []
    record = RandomLTDConversion(
        found.path, layer_ids, scheduler, tuple(p for _, p in plans), tuple(by_block), tuple(hooks)
    )
    record_conversion(model, TECHNIQUE, record)
    for block, plan in plans:
        convert_block(block, plan)
    return model


def converted_layer_ids(section: RandomLTDConfig, blocks: BlockList) -> tuple[int, ...]:
    """The blocks random-LTD converts: `random_ltd_layer_id`, else all but the first and last,
    checked against the block list."""
    num_layers = len(blocks)
    key = "data_efficiency.data_routing.random_ltd"
    if section.total_layer_num is not None and section.total_layer_num != num_layers:
        raise ConfigError(
            f"{key}.total_layer_num: got {section.total_layer_num}; {blocks.path} has "
            f"{num_layers} blocks"
        )
    ids = section.random_ltd_layer_id
    layer_ids = tuple(ids) if ids is not None else tuple(range(1, num_layers - 1))
    bad = [i for i in layer_ids if not 0 <= i < num_layers]
    if bad:
        raise ConfigError(f"{key}.random_ltd_layer_id: {bad} out of range for {num_layers} blocks")
    if not layer_ids:
        raise SurgeryError(
            f"random-LTD: no layers to convert in {blocks.path} ({num_layers} blocks); "
            "set random_ltd_layer_id"
        )
    return layer_ids


def revert_random_ltd(model: nn.Module) -> nn.Module:
    """Restore the plain blocks converted by `convert_to_random_ltd`; returns the model."""
    info: RandomLTDConversion = forget_conversion(model, TECHNIQUE)
    for hook in info.hooks:
        hook.remove()
    for block in info.blocks:
        revert_block(block)
    return model


def _conversion(model: nn.Module) -> RandomLTDConversion:
    info = conversions(model).get(TECHNIQUE)
    if info is None:
        raise SurgeryError("the model is not converted by random_ltd")
    return info


def random_ltd_scheduler_of(model: nn.Module) -> RandomLTDScheduler:
    """The scheduler the converted layers of `model` read."""
    return _conversion(model).scheduler


def kept_indices(model: nn.Module) -> dict[int, Tensor | None]:
    """Kept positions [B, r] of each converted layer's last dropping forward, by layer id."""
    info = _conversion(model)
    last = {i: t for plan in info.plans for i, t in plan.last_indices.items()}
    return {i: last.get(i) for i in info.layer_ids}


def _strip_wrapper(key: str) -> str:
    return ".".join(part for part in key.split(".") if part != _DEEPSPEED_WRAPPER)


def remove_random_ltd_state_dict(state_dict: Mapping[str, Any]) -> OrderedDict[str, Any]:
    """Plain checkpoint keys: drop DeepSpeed's `random_ltd_layer` wrapper segments.

    leantrain's own keys are already plain and pass through unchanged.
    """
    out: OrderedDict[str, Any] = OrderedDict()
    for key, value in state_dict.items():
        plain = _strip_wrapper(key)
        if plain in out:
            raise SurgeryError(f"state_dict: {key!r} and another key both map to {plain!r}")
        out[plain] = value
    metadata = getattr(state_dict, "_metadata", None)
    if metadata is not None:
        out._metadata = {_strip_wrapper(k): v for k, v in metadata.items()}  # type: ignore[attr-defined]
    return out
