"""Mixture-of-experts under random-LTD and PLD: the router's load-balancing loss counts exactly
the (layer, token) pairs each router routed — kept tokens where tokens are dropped, no padding."""

from __future__ import annotations

import importlib
from typing import Any

import pytest
import torch
from settings import CASES, ModelCase, build, labels_for, make_inputs
from torch import Tensor, nn

from leantrain.models import find_block_list
from leantrain.pld import ProgressiveLayerDrop, convert_to_progressive_layer_drop, kept_layers
from leantrain.random_ltd import RandomLTDScheduler, convert_to_random_ltd, kept_indices
from leantrain.random_ltd.moe import load_balancing_loss

pytestmark = pytest.mark.usefixtures("one_thread")

MOE = [pytest.param(c, id=c.id) for c in CASES if c.id in ("mixtral", "qwen2_moe", "qwen3_moe")]


def _scheduler(full: bool = False) -> RandomLTDScheduler:
    schedule = {
        "min_value": 8,
        "max_value": 64,
        "schedule_config": {"require_steps": 10, "seq_per_step": 4},
    }
    scheduler = RandomLTDScheduler({"random_ltd_schedule": schedule, "global_batch_size": 3})
    if full:
        scheduler.update_seq(100)
    return scheduler


def _hf_aux(model: nn.Module) -> Any:
    return importlib.import_module(type(model).__module__).load_balancing_loss_func


def _router_outputs(model: nn.Module) -> tuple[list[Tensor], list[Any]]:
    """Record every router call's logits, in order."""
    logits: list[Tensor] = []
    hooks = [
        block.mlp.gate.register_forward_hook(lambda m, a, out: logits.append(out[0]))
        for block in find_block_list(model).blocks
    ]
    return logits, hooks


def _switch_loss(rows: Tensor, experts: int, top_k: int) -> Tensor:
    """E · Σ_e (share of top-k picks of e) · (mean probability of e), over the rows given."""
    probs = rows.float().softmax(-1)
    picks = probs.topk(top_k, dim=-1).indices.reshape(-1)
    share = torch.bincount(picks, minlength=experts).float() / rows.shape[0]
    return experts * (share * probs.mean(0)).sum()


@pytest.mark.parametrize("case", MOE)
def test_formula_is_hugging_faces(case: ModelCase) -> None:
    model = build(case).train()
    inputs = labels_for(case, make_inputs(case))
    logits, hooks = _router_outputs(model)
    out = model(**inputs)
    for h in hooks:
        h.remove()
    mask = inputs["attention_mask"]
    ours = load_balancing_loss(
        [(x, mask.reshape(-1)) for x in logits], model.num_experts, model.num_experts_per_tok
    )
    torch.testing.assert_close(ours, out.aux_loss, rtol=1e-6, atol=1e-7)
    ours_all = load_balancing_loss(
        [(x, None) for x in logits], model.num_experts, model.num_experts_per_tok
    )
    hf_all = _hf_aux(model)(tuple(logits), model.num_experts, model.num_experts_per_tok, None)
    torch.testing.assert_close(ours_all, hf_all, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("case", MOE)
def test_aux_loss_counts_the_tokens_each_router_saw(case: ModelCase) -> None:
    model = build(case)
    plain = build(case).train()
    inputs = labels_for(case, make_inputs(case))
    mask = inputs["attention_mask"]
    # nothing dropped: HF computes the loss itself, bit for bit the plain model's
    convert_to_random_ltd(model, _scheduler(full=True))
    model.train()
    assert torch.equal(model(**inputs).aux_loss, plain(**inputs).aux_loss)

    model = build(case)
    convert_to_random_ltd(model, _scheduler())
    model.train()
    logits, hooks = _router_outputs(model)
    torch.manual_seed(0)
    out = model(**inputs)
    for h in hooks:
        h.remove()
    kept = kept_indices(model)
    experts, top_k = model.num_experts, model.num_experts_per_tok
    rows = []  # the rows of real tokens, mapped back by hand: routed rows are b-major, in order
    for layer, x in enumerate(logits):
        idx = kept.get(layer)
        valid = mask if idx is None else mask.gather(1, idx)  # [B, S] or [B, r]
        assert x.shape[0] == valid.numel()
        rows.append(x[valid.reshape(-1).bool()])
    assert [x.shape[0] for x in logits] == [3 * 16, 3 * 8, 3 * 16]
    torch.testing.assert_close(out.aux_loss, _switch_loss(torch.cat(rows), experts, top_k))
    assert [x.shape for x in out.router_logits] == [x.shape for x in logits]
    with pytest.raises(RuntimeError):  # HF's own loss cannot line its mask up with B·r rows
        _hf_aux(model)(tuple(logits), experts, top_k, mask)

    torch.manual_seed(0)
    ce = model(**inputs, output_router_logits=False).loss  # same draws, no aux loss
    torch.testing.assert_close(out.loss, ce + model.router_aux_loss_coef * out.aux_loss)
    out.loss.backward()
    for block in find_block_list(model).blocks:
        assert block.mlp.gate.weight.grad is not None and block.mlp.gate.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("case", MOE)
def test_pld_counts_only_the_layers_that_ran(case: ModelCase) -> None:
    model = build(case)
    pld = ProgressiveLayerDrop(theta=0.3, seed=7)
    pld.update_state(10**6)
    convert_to_progressive_layer_drop(model, pld)
    model.train()
    inputs = labels_for(case, make_inputs(case))
    for _ in range(10):
        out = model(**inputs)
        kept = kept_layers(model)
        assert kept is not None and len(out.router_logits) == sum(kept)
        assert torch.isfinite(out.aux_loss)
        if not all(kept):
            return
    raise AssertionError("no forward skipped a block")
