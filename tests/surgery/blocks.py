"""What one converted block must compute, checked against the plain block (the technique rows'
`block_check` of `settings.py`), and the call recorder the other checks share."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from settings import DEC_SEQ, ModelCase, forward
from torch import Tensor, nn
from transformers import Cache

from leantrain.models import BlockList, find_block_list, find_stacks
from leantrain.pld import kept_layers
from leantrain.random_ltd import kept_indices
from leantrain.surgery import conversions, forward_slots, plain_class

__all__ = ["calls_of", "first", "hidden_of", "ltd_block_check", "pld_block_check"]


@dataclass
class _Call:
    block: nn.Module
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    out: Any = None


@contextmanager
def _calls(stack: BlockList) -> Iterator[list[_Call]]:
    """Record every call of the stack's blocks, in order (the hooks see the caller's arguments)."""
    calls: list[_Call] = []

    def pre(block: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        calls.append(_Call(block, args, dict(kwargs)))

    def post(block: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> None:
        next(c for c in reversed(calls) if c.block is block).out = out

    handles = []
    for block in dict.fromkeys(stack.blocks):
        handles.append(block.register_forward_pre_hook(pre, with_kwargs=True))
        handles.append(block.register_forward_hook(post, with_kwargs=True))
    try:
        yield calls
    finally:
        for h in handles:
            h.remove()


def _plain_call(call: _Call, args: tuple[Any, ...] | None = None, **changes: Any) -> Tensor:
    """The plain block's hidden-states output for the call's arguments, some replaced."""
    slots = forward_slots(call.block)
    args = list(call.args if args is None else args)
    kwargs = dict(call.kwargs)
    for name, value in changes.items():
        pos = slots.positions.get(name)
        if name not in kwargs and pos is not None and pos < len(args):
            args[pos] = value
        else:
            kwargs[name] = value
    # a KV cache the model made for this forward already holds what the call stored
    args = [None if isinstance(a, Cache) else a for a in args]
    kwargs = {k: None if isinstance(v, Cache) else v for k, v in kwargs.items()}
    out = plain_class(call.block).forward(call.block, *args, **kwargs)
    return out[0] if isinstance(out, tuple) else out


def first(out: Any) -> Tensor:
    """The hidden states of a block output (a tensor, or a tuple's first item)."""
    return out[0] if isinstance(out, tuple) else out


def hidden_of(call: _Call) -> Tensor:
    """The hidden-states input of a recorded call."""
    return call.args[0] if call.args else call.kwargs[forward_slots(call.block).first]


def pld_block_check(model: nn.Module, case: ModelCase, pld: Any, inputs: dict[str, Tensor]) -> None:
    """A kept block returns x + (block(x) − x)/p; a skipped one its input (and hands on what
    the family says it hands on); p = 1 for blocks the family never skips."""
    stacks = find_stacks(model, case.layers)
    model.train()
    for _ in range(20):  # until a forward skips something
        with calls_of(stacks) as calls, torch.no_grad():
            forward(model, case, inputs)
        kept = kept_layers(model)
        assert kept is not None
        if not all(kept):
            break
    assert not all(kept), "no forward skipped a block"
    flat = [(s, i) for s in stacks for i in range(len(s))]
    assert len(kept) == len(flat) == len(calls)
    for (stack, depth), ran, call in zip(flat, kept, calls, strict=True):
        x = hidden_of(call)
        never = stack.stack.pld_never_skip if stack.stack else ()
        p = 1.0 if depth in never else pld.keep_probs(len(stack))[depth]
        with torch.no_grad():
            if ran:
                y = _plain_call(call)
                torch.testing.assert_close(first(call.out), x + (y - x) / p, rtol=1e-5, atol=1e-5)
            else:
                assert first(call.out) is x
                for slot, name in (stack.stack.echo_outputs if stack.stack else {}).items():
                    given = call.kwargs.get(name, None)
                    pos = forward_slots(call.block).positions.get(name)
                    if given is None and pos is not None and pos < len(call.args):
                        given = call.args[pos]
                    assert call.out[slot] is given


@contextmanager
def calls_of(stacks: tuple[BlockList, ...]) -> Iterator[list[_Call]]:
    """`_calls` over several stacks, in running order."""
    calls: list[_Call] = []
    managers = [_calls(s) for s in stacks]
    lists = [m.__enter__() for m in managers]
    try:
        yield calls
    finally:
        for m in managers:
            m.__exit__(None, None, None)
        calls.extend(c for lst in lists for c in lst)


def _exclude_keys(mask: Tensor | None, keep: Tensor, causal: bool, eager: bool) -> Tensor:
    """`mask` (any convention) with the keys where `keep` [B, S] is False masked out too."""
    batch, seq = keep.shape
    if mask is None:
        allowed = keep[:, None, None, :].expand(batch, 1, seq, seq)
        if causal:
            allowed = allowed & torch.ones(seq, seq, dtype=torch.bool).tril()
        if not eager:
            return allowed
        return torch.zeros(allowed.shape).masked_fill(~allowed, torch.finfo(torch.float32).min)
    keys = keep if mask.dim() == 2 else keep.view(batch, *(1,) * (mask.dim() - 2), seq)
    if mask.dtype == torch.bool:
        return mask & keys
    if mask.is_floating_point():
        return mask.masked_fill(~keys, torch.finfo(mask.dtype).min)
    return mask * keys


def ltd_block_check(
    model: nn.Module, case: ModelCase, scheduler: Any, inputs: dict[str, Tensor]
) -> None:
    """Dropped tokens skip the block; a kept token's output is the plain block's, computed on
    the full sequence at the original positions with the dropped tokens' keys masked out: so
    each kept token attends to each kept token with its original mask value, rotary, ALiBi or
    relative-position distance, and (decoders of encoder-decoders) to the whole encoder output.
    """
    found = find_block_list(model, case.layers or case.ltd_layers)
    record = conversions(model)["random_ltd"]
    plan = record.plans[0]
    eager = getattr(getattr(model, "config", None), "_attn_implementation", "eager") == "eager"
    causal = (found.stack.kind if found.stack else "decoder") == "decoder"
    model.train()
    with _calls(found) as calls, torch.no_grad():
        forward(model, case, inputs, seed=5)
    kept = kept_indices(model)
    self_mask = inputs.get("attention_mask")
    if case.task == "seq2seq" and case.ltd_stack == 1:
        self_mask = torch.ones(inputs["input_ids"].shape[0], DEC_SEQ, dtype=torch.long)
    for layer_id in record.layer_ids:
        call, idx = calls[layer_id], kept[layer_id]
        assert idx is not None
        x, out = hidden_of(call), first(call.out)
        keep = torch.zeros(x.shape[:2], dtype=torch.bool).scatter(1, idx, True)
        assert torch.equal(out[~keep], x[~keep])  # dropped tokens skip the block
        for slot, name in plan.echo.items():  # what the block hands on, as it was given
            assert call.out[slot] is plan.get(list(call.args), call.kwargs, name)
        given = {n: plan.get(list(call.args), call.kwargs, n) for n in plan.routes}
        with torch.no_grad():
            if all(v is None for v in given.values()):  # nothing positional: run on the subset
                gathered = x.gather(1, idx[..., None].expand(-1, -1, x.shape[-1]))
                ref = _plain_call(call, (gathered, *call.args[1:]))
                got = out.gather(1, idx[..., None].expand(-1, -1, x.shape[-1]))
                torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5)
                continue
            assert plan.mask_arg is not None
            mask = _exclude_keys(given.get(plan.mask_arg), keep, causal, eager)
            ref = _plain_call(call, **{plan.mask_arg: mask})
        real = keep if self_mask is None else keep & self_mask.bool()
        torch.testing.assert_close(out[real], ref[real], rtol=1e-4, atol=1e-5)
