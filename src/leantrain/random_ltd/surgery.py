"""Convert chosen blocks of a model to random-LTD layers and back, keeping checkpoint keys.

A converted block's class gains `RandomLTDMixin` (see `leantrain.surgery`): same parameters,
same `state_dict` keys, same module names. In training mode, while the scheduler's reserved
length is below the sequence length, the block runs on a random sorted subset of each sample's
tokens and its outputs are scattered back; dropped tokens pass through unchanged.
"""

from __future__ import annotations

import inspect
import logging
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import torch
from torch import Tensor, nn

from leantrain.config import RandomLTDConfig
from leantrain.errors import ConfigError
from leantrain.models import BlockList, find_block_list
from leantrain.random_ltd.routing import (
    RoutingError,
    gather_mask,
    gather_positions,
    gather_route,
    scatter_route,
)
from leantrain.random_ltd.scheduler import RandomLTDScheduler, resolve_random_ltd_config
from leantrain.random_ltd.selection import rank_key, sample_token_indices, token_validity
from leantrain.surgery import (
    SurgeryError,
    add_mixin,
    conversions,
    ensure_plain_model,
    forget_conversion,
    record_conversion,
    remove_mixin,
)

__all__ = [
    "TECHNIQUE",
    "LayerPlan",
    "PaddingWatch",
    "RandomLTDConversion",
    "RandomLTDMixin",
    "convert_to_random_ltd",
    "converted_layer_ids",
    "kept_indices",
    "random_ltd_scheduler_of",
    "remove_random_ltd_state_dict",
    "revert_random_ltd",
    "sample_non_padding_only",
]

TECHNIQUE = "random_ltd"
_PLAN_ATTR = "_leantrain_random_ltd"
logger = logging.getLogger(__name__)
_DEEPSPEED_WRAPPER = "random_ltd_layer"


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


@dataclass(eq=False)
class LayerPlan:
    """How one converted block finds its arguments and draws its tokens (not in state_dict)."""

    scheduler: RandomLTDScheduler
    layer_id: int
    batch_first: bool
    hidden_name: str
    #: Positional slot of each named forward argument (before any *args).
    positions: dict[str, int]
    mask_arg: str | None
    rotary_arg: str | None
    position_ids_arg: str | None
    keep_positions: tuple[int, ...]
    sample_non_padding_only: bool
    data_parallel_rank: int | None
    #: Shared by the blocks of one conversion.
    padding_watch: PaddingWatch = field(default_factory=PaddingWatch)
    #: The kept positions [B, r] of the last dropping forward (for inspection and tests).
    last_indices: Tensor | None = field(default=None, repr=False)

    def get(self, args: list[Any], kwargs: dict[str, Any], name: str | None) -> Any:
        """The value of forward argument `name` (keyword or positional), or None."""
        if name is None:
            return None
        if name in kwargs:
            return kwargs[name]
        pos = self.positions.get(name)
        return args[pos] if pos is not None and pos < len(args) else None

    def put(self, args: list[Any], kwargs: dict[str, Any], name: str, value: Any) -> None:
        """Replace forward argument `name` where the caller passed it."""
        pos = self.positions.get(name)
        if name not in kwargs and pos is not None and pos < len(args):
            args[pos] = value
        else:
            kwargs[name] = value

    def rank(self) -> int:
        """The data-parallel rank whose draws this process makes."""
        if self.data_parallel_rank is not None:
            return self.data_parallel_rank
        dist = torch.distributed
        return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


@dataclass(frozen=True)
class RandomLTDConversion:
    """What `convert_to_random_ltd` changed: the block list, the layer ids and the scheduler."""

    path: str
    layer_ids: tuple[int, ...]
    scheduler: RandomLTDScheduler


@torch.compiler.disable
def _draw(
    plan: LayerPlan, batch: int, seq_len: int, reserved: int, hidden: Tensor, mask: Any
) -> Tensor:
    """Kept positions [B, r] for one layer call; outside compiled regions, on the device."""
    attend = None
    if plan.sample_non_padding_only and isinstance(mask, Tensor):
        attend = token_validity(mask, batch, seq_len)  # [B, S]
    indices = sample_token_indices(
        batch,
        seq_len,
        reserved,
        device=hidden.device,
        keep_positions=plan.keep_positions,
        attend=attend,
        key=rank_key(plan.rank()),
    )
    plan.last_indices = indices
    if attend is None and isinstance(mask, Tensor) and plan.padding_watch.due():
        plan.padding_watch.check(plan.layer_id, token_validity(mask, batch, seq_len), indices)
    return indices


def _routed_forward(
    forward: Callable[..., Any],
    plan: LayerPlan,
    hidden: Tensor,
    args: list[Any],
    kwargs: dict[str, Any],
    reserved: int,
) -> Any:
    """Run `forward` on the kept tokens only and scatter its output back into `hidden`."""
    batch_dim, seq_dim = (0, 1) if plan.batch_first else (1, 0)
    batch, seq_len = hidden.shape[batch_dim], hidden.shape[seq_dim]
    mask = plan.get(args, kwargs, plan.mask_arg)
    indices = _draw(plan, batch, seq_len, reserved, hidden, mask)  # [B, r]
    kept, route = gather_route(hidden, indices, batch_first=plan.batch_first)  # [B, r, D]
    plan.put(args, kwargs, plan.hidden_name, kept)
    if isinstance(mask, Tensor):
        plan.put(args, kwargs, plan.mask_arg, gather_mask(mask, indices))  # type: ignore[arg-type]
    elif mask is not None:
        raise RoutingError(
            f"{plan.mask_arg}: got {type(mask).__name__}; random-LTD gathers dense mask tensors"
        )
    for name in (plan.rotary_arg, plan.position_ids_arg):
        value = plan.get(args, kwargs, name)
        if value is not None and name is not None:
            plan.put(args, kwargs, name, gather_positions(value, indices, seq_len))
    out = forward(*args, **kwargs)
    if isinstance(out, Tensor):
        return scatter_route(route, out)
    if isinstance(out, tuple) and out and isinstance(out[0], Tensor):
        return (scatter_route(route, out[0]), *out[1:])
    raise RoutingError(
        f"layer {plan.layer_id} returned {type(out).__name__}; random-LTD needs a tensor or a "
        "tuple whose first element is the hidden states"
    )


class RandomLTDMixin(nn.Module):
    """Forward of a random-LTD block: drop tokens in training while r < S, else run as is."""

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Run the block on a random subset of tokens (training) or on all of them."""
        plan: LayerPlan = self.__dict__[_PLAN_ATTR]
        hidden = args[0] if args else kwargs[plan.hidden_name]
        reserved = plan.scheduler.current_seq
        if not self.training or reserved >= hidden.shape[1 if plan.batch_first else 0]:
            return super().forward(*args, **kwargs)
        return _routed_forward(super().forward, plan, hidden, list(args), dict(kwargs), reserved)


def _plain_forward_signature(block: nn.Module) -> inspect.Signature:
    """Signature of the block's own forward, beneath any leantrain mixins."""
    mro = type(block).__mro__
    mixins = {k.__dict__["_leantrain_mixin"] for k in mro if "_leantrain_mixin" in k.__dict__}
    for klass in mro:
        if "_leantrain_mixin" in klass.__dict__ or klass in mixins:
            continue
        if "forward" in klass.__dict__:
            return inspect.signature(klass.__dict__["forward"])
    raise SurgeryError(f"{type(block).__name__} has no forward")  # pragma: no cover


def _argument_slots(block: nn.Module) -> tuple[str, dict[str, int], set[str], bool]:
    """First parameter name, positional slots, all names, and whether **kwargs is accepted."""
    params = list(_plain_forward_signature(block).parameters.values())[1:]  # drop self
    if not params or params[0].kind not in (
        inspect.Parameter.POSITIONAL_ONLY,
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
    ):
        raise SurgeryError(
            f"{type(block).__name__}.forward must take the hidden states as its first argument"
        )
    positions: dict[str, int] = {}
    for i, p in enumerate(params):
        if p.kind not in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            break
        positions[p.name] = i
    var_kw = any(p.kind is p.VAR_KEYWORD for p in params)
    return params[0].name, positions, {p.name for p in params}, var_kw


def convert_to_random_ltd(
    model: nn.Module,
    config: Any,
    layers: nn.ModuleList | str | None = None,
    *,
    data_parallel_rank: int | None = None,
) -> nn.Module:
    """Convert the chosen blocks of `model` to random-LTD in place and return the model.

    `config`: the `random_ltd` section (dict or `RandomLTDConfig`), a whole config, or a
    `RandomLTDScheduler` (the layers then read its reserved length). `layers`: the block list
    or its dotted path (default: from the model-family registry). Converted blocks are the
    config's `random_ltd_layer_id`, else all but the first and last. Draws come from the
    device's default generator, decorrelated per `data_parallel_rank` (default: the
    torch.distributed rank; pass the data-parallel rank under tensor/pipeline parallelism).
    Convert before torch.compile, DDP or FSDP.
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
    family = found.family
    mask_arg = cfg.model_mask_name or (family.mask_arg if family else None)
    # DeepSpeed reads model_type only to choose how to cut the mask, and DeepSpeedExamples' ViT
    # configs say "decoder" (its mask-less path); leantrain gathers masks the same way for both,
    # so a mismatch is refused only where there is a mask (a config written for another model).
    kind = cfg.model_type
    if family is not None and kind is not None and kind != family.kind and mask_arg is not None:
        raise ConfigError(
            f"{section}.model_type: got {kind!r}; {found.path} holds {family.kind} blocks"
        )
    keep = cfg.keep_positions
    keep_positions = tuple(keep) if keep is not None else (family.keep_positions if family else ())
    non_padding = sample_non_padding_only(cfg, family.kind if family else None)
    watch = PaddingWatch()
    plans = []
    for layer_id in layer_ids:
        block = found.blocks[layer_id]
        hidden_name, positions, names, var_kw = _argument_slots(block)
        if mask_arg is not None and mask_arg not in names and not var_kw:
            raise ConfigError(
                f"{section}.model_mask_name: {type(block).__name__}.forward has no argument "
                f"{mask_arg!r} (it takes {sorted(names)})"
            )
        plan = LayerPlan(
            scheduler=scheduler,
            layer_id=layer_id,
            batch_first=cfg.hidden_state_order == "batch_seq_dim",
            hidden_name=hidden_name,
            positions=positions,
            mask_arg=mask_arg,
            rotary_arg=family.rotary_arg if family else None,
            position_ids_arg=family.position_ids_arg if family else None,
            keep_positions=keep_positions,
            sample_non_padding_only=non_padding,
            data_parallel_rank=data_parallel_rank,
            padding_watch=watch,
        )
        plans.append((block, plan))
    record_conversion(model, TECHNIQUE, RandomLTDConversion(found.path, layer_ids, scheduler))
    for block, plan in plans:
        add_mixin(block, RandomLTDMixin)
        block.__dict__[_PLAN_ATTR] = plan
    return model


def sample_non_padding_only(cfg: RandomLTDConfig, kind: str | None) -> bool:
    """Whether kept tokens are drawn among non-padding ones first: the config's
    `sample_non_padding_only`, by default on for encoders (`kind`, the registry's kind of block,
    else the config's `model_type`), whose padded batches would otherwise spend the reserved
    length on padding, and off (DeepSpeed's draw) for decoders."""
    if cfg.sample_non_padding_only is not None:
        return cfg.sample_non_padding_only
    return (kind or cfg.model_type) == "encoder"


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
    blocks = cast(nn.ModuleList, model.get_submodule(info.path))
    for layer_id in info.layer_ids:
        block = blocks[layer_id]
        remove_mixin(block, RandomLTDMixin)
        del block.__dict__[_PLAN_ATTR]
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
    blocks = cast(nn.ModuleList, model.get_submodule(info.path))
    return {i: blocks[i].__dict__[_PLAN_ATTR].last_indices for i in info.layer_ids}


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
