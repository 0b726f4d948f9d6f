"""Convert chosen blocks of a model to random-LTD layers and back, keeping checkpoint keys.

A converted block's class gains `RandomLTDMixin` (see `leantrain.surgery`): same parameters,
same `state_dict` keys, same module names. In training mode, while the scheduler's reserved
length is below the sequence length, the block runs on a random sorted subset of each sample's
tokens and its outputs are scattered back; dropped tokens pass through unchanged.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from leantrain.config import RandomLTDConfig
from leantrain.errors import ConfigError
from leantrain.models import BlockList, Route, find_block_list
from leantrain.random_ltd.moe import attach_moe_aux_loss
from leantrain.random_ltd.routing import (
    RoutingError,
    gather_route,
    route_argument,
    scatter_route,
)
from leantrain.random_ltd.scheduler import RandomLTDScheduler, resolve_random_ltd_config
from leantrain.random_ltd.selection import rank_key, sample_token_indices, token_validity
from leantrain.surgery import (
    DepthCounter,
    ForwardSlots,
    SurgeryError,
    add_mixin,
    conversions,
    ensure_plain_model,
    forget_conversion,
    forward_slots,
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
#: Flash-attention "varlen" keywords: the batch is packed into one unpadded row that these
#: cut into sequences; the kept tokens would need new offsets, which random-LTD does not build.
_PACKED_KEYS = ("cu_seq_lens_q", "cu_seq_lens_k", "max_length_q", "max_length_k", "seq_idx")


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
    #: Depths at which this block drops tokens (one id, unless the block is shared: ALBERT).
    layer_ids: frozenset[int]
    batch_first: bool
    slots: ForwardSlots
    mask_arg: str | None
    #: Every routed argument (the mask included) and how it follows the kept tokens.
    routes: dict[str, Route]
    keep_positions: tuple[int, ...]
    sample_non_padding_only: bool
    data_parallel_rank: int | None
    #: The family (or "custom blocks"), for messages.
    family: str
    #: Output slot -> input argument the block hands on (returned ungathered).
    echo: dict[int, str] = field(default_factory=dict)
    #: One kept subset per batch (DeBERTa).
    shared_draw: bool = False
    #: The block's depth (its layer id); a block shared across depths reads `depth` instead.
    index: int = 0
    #: Set for a block shared across depths: which depth the current call runs at.
    depth: DepthCounter | None = None
    #: Shared by the blocks of one conversion.
    padding_watch: PaddingWatch = field(default_factory=PaddingWatch)
    #: Kept positions [B, r] of each depth's last dropping forward (inspection and tests).
    last_indices: dict[int, Tensor] = field(default_factory=dict, repr=False)
    #: Kept positions of the latest dropping call (the MoE router taps read them).
    current: Tensor | None = field(default=None, repr=False)

    @property
    def hidden_name(self) -> str:
        """Name of the hidden-states argument."""
        return self.slots.first

    def get(self, args: list[Any], kwargs: dict[str, Any], name: str | None) -> Any:
        """The value of forward argument `name` (keyword or positional), or None."""
        if name is None:
            return None
        if name in kwargs:
            return kwargs[name]
        pos = self.slots.positions.get(name)
        return args[pos] if pos is not None and pos < len(args) else None

    def put(self, args: list[Any], kwargs: dict[str, Any], name: str, value: Any) -> None:
        """Replace forward argument `name` where the caller passed it."""
        pos = self.slots.positions.get(name)
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
    plans: tuple[LayerPlan, ...] = ()
    #: Blocks converted (each once, also when shared across depths).
    blocks: tuple[nn.Module, ...] = ()
    #: Hooks to remove on revert (depth counters, MoE router taps).
    hooks: tuple[Any, ...] = ()


@torch.compiler.disable
def _shared_depth(counter: DepthCounter) -> int:
    """The depth a shared block runs at in this call (outside compiled code)."""
    return counter.current


@torch.compiler.disable
def _draw(
    plan: LayerPlan, depth: int, batch: int, seq_len: int, reserved: int, hidden: Tensor, mask: Any
) -> Tensor:
    """Kept positions [B, r] for one layer call; outside compiled regions, on the device."""
    attend = None
    if plan.sample_non_padding_only and isinstance(mask, Tensor):
        attend = token_validity(mask, batch, seq_len)  # [B, S]
    rows = batch
    if plan.shared_draw:
        rows = 1
        attend = None if attend is None else attend.any(0, keepdim=True)
    indices = sample_token_indices(
        rows,
        seq_len,
        reserved,
        device=hidden.device,
        keep_positions=plan.keep_positions,
        attend=attend,
        key=rank_key(plan.rank()),
    ).expand(batch, reserved)
    plan.last_indices[depth] = indices
    plan.current = indices
    if attend is None and isinstance(mask, Tensor) and plan.padding_watch.due():
        plan.padding_watch.check(depth, token_validity(mask, batch, seq_len), indices)
    return indices


def _per_token(value: Any, batch: int, seq_len: int, batch_first: bool) -> bool:
    """Whether `value` (a tensor, or a tuple of them) looks sized by the sequence."""
    if isinstance(value, tuple | list):
        return any(_per_token(v, batch, seq_len, batch_first) for v in value)
    if not isinstance(value, Tensor) or value.dim() == 0:
        return False
    if value.shape[0] == seq_len:
        return True
    return (
        batch_first
        and value.dim() >= 2
        and value.shape[1] == seq_len
        and value.shape[0] in (1, batch)
    )


def _refuse_unroutable(
    plan: LayerPlan, args: list[Any], kwargs: dict[str, Any], batch: int, seq_len: int
) -> None:
    """Refuse arguments that carry per-token data no route says how to follow: training on
    them unchanged would pair kept tokens with the wrong positions, silently."""
    packed = [k for k in _PACKED_KEYS if kwargs.get(k) is not None]
    if packed:
        raise RoutingError(
            f"random-LTD ({plan.family}): the block gets unpadded (packed) inputs through "
            f"{packed}; the kept tokens would need new sequence offsets, which random-LTD does "
            "not build. Feed padded batches (with an attention mask) or turn random-LTD off"
        )
    named = {plan.hidden_name, *plan.routes}
    given = [(n, v) for n, v in kwargs.items() if n not in named]
    given += [
        (n, args[i]) for n, i in plan.slots.positions.items() if i < len(args) and n not in named
    ]
    for name, value in given:
        if _per_token(value, batch, seq_len, plan.batch_first):
            raise RoutingError(
                f"random-LTD ({plan.family}): block argument {name!r} carries data for each of "
                f"the {seq_len} tokens, and nothing says how it follows the kept tokens, so the "
                "kept tokens would train with the wrong positions or mask. Register the family "
                "with a route for it (leantrain.models.register_family, `Stack.routes`), convert "
                "another block list (`layers=`) or other layers (`random_ltd_layer_id`)"
            )


def _routed_forward(
    forward: Callable[..., Any],
    plan: LayerPlan,
    depth: int,
    hidden: Tensor,
    args: list[Any],
    kwargs: dict[str, Any],
    reserved: int,
) -> Any:
    """Run `forward` on the kept tokens only and scatter its output back into `hidden`."""
    batch_dim, seq_dim = (0, 1) if plan.batch_first else (1, 0)
    batch, seq_len = hidden.shape[batch_dim], hidden.shape[seq_dim]
    _refuse_unroutable(plan, args, kwargs, batch, seq_len)
    mask = plan.get(args, kwargs, plan.mask_arg)
    if mask is not None and not isinstance(mask, Tensor):
        raise RoutingError(
            f"{plan.mask_arg}: got {type(mask).__name__}; random-LTD gathers dense mask tensors "
            "(use the eager or sdpa attention implementation)"
        )
    indices = _draw(plan, depth, batch, seq_len, reserved, hidden, mask)  # [B, r]
    kept, route = gather_route(hidden, indices, batch_first=plan.batch_first)  # [B, r, D]
    given = {name: plan.get(args, kwargs, name) for name in plan.echo.values()}
    plan.put(args, kwargs, plan.hidden_name, kept)
    for name, kind in plan.routes.items():
        value = plan.get(args, kwargs, name)
        if value is not None and kind != "full":
            try:
                routed = route_argument(kind, value, indices, seq_len, shared=plan.shared_draw)
            except RoutingError as err:
                raise RoutingError(
                    f"random-LTD ({plan.family}): argument {name!r}: {err}"
                ) from None
            plan.put(args, kwargs, name, routed)
    out = forward(*args, **kwargs)
    if isinstance(out, Tensor):
        return scatter_route(route, out)
    if isinstance(out, tuple) and out and isinstance(out[0], Tensor):
        rest = [given.get(plan.echo[i], v) if i in plan.echo else v for i, v in enumerate(out)]
        return (scatter_route(route, out[0]), *rest[1:])
    raise RoutingError(
        f"layer {depth} returned {type(out).__name__}; random-LTD needs a tensor or a "
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
        depth = plan.index if plan.depth is None else _shared_depth(plan.depth)
        if depth not in plan.layer_ids:
            return super().forward(*args, **kwargs)
        return _routed_forward(
            super().forward, plan, depth, hidden, list(args), dict(kwargs), reserved
        )


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
    for hook in info.hooks:
        hook.remove()
    for block in info.blocks:
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
