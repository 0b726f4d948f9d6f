"""The forward of a converted block: run on the kept tokens only and scatter the output back.

A converted block's class gains `RandomLTDMixin` (see `leantrain.surgery`): same parameters,
same `state_dict` keys, same module names. In training mode, while the scheduler's reserved
length is below the sequence length, the block runs on a random sorted subset of each sample's
tokens and its outputs are scattered back; dropped tokens pass through unchanged. Arguments
that carry per-token data without a route are refused rather than passed on misaligned.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor, nn

from leantrain.random_ltd.plan import LayerPlan, draw, shared_depth
from leantrain.random_ltd.routing import (
    RoutingError,
    gather_route,
    route_argument,
    scatter_route,
)
from leantrain.surgery import add_mixin, remove_mixin

__all__ = ["RandomLTDMixin", "convert_block", "revert_block"]

_PLAN_ATTR = "_leantrain_random_ltd"
#: Flash-attention "varlen" keywords: the batch is packed into one unpadded row that these
#: cut into sequences; the kept tokens would need new offsets, which random-LTD does not build.
_PACKED_KEYS = ("cu_seq_lens_q", "cu_seq_lens_k", "max_length_q", "max_length_k", "seq_idx")


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
    indices = draw(plan, depth, batch, seq_len, reserved, hidden, mask)  # [B, r]
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
        depth = plan.index if plan.depth is None else shared_depth(plan.depth)
        if depth not in plan.layer_ids:
            return super().forward(*args, **kwargs)
        return _routed_forward(
            super().forward, plan, depth, hidden, list(args), dict(kwargs), reserved
        )


def convert_block(block: nn.Module, plan: LayerPlan) -> None:
    """Make `block` drop tokens as `plan` says (its class gains `RandomLTDMixin`)."""
    add_mixin(block, RandomLTDMixin)
    block.__dict__[_PLAN_ATTR] = plan


def revert_block(block: nn.Module) -> None:
    """Undo `convert_block`."""
    remove_mixin(block, RandomLTDMixin)
    del block.__dict__[_PLAN_ATTR]
