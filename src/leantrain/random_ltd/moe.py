"""Mixture-of-experts blocks under random-LTD: the router's auxiliary loss over the tokens it saw.

A dropping block routes only its kept tokens, so its router's logits cover B·r rows, not B·S.
Hugging Face's load-balancing loss weights every layer's rows by one [B·S] attention mask,
which then no longer lines up (it fails, or with unlucky shapes broadcasts silently wrong). So
while a training forward drops tokens and router logits are asked for, leantrain takes the loss
over: the model runs with `output_router_logits=False`, taps on every router collect the logits
each one produced, and the loss is computed over the (layer, token) pairs each router really
routed — kept tokens in dropping layers, every token elsewhere, padding excluded — with the
Switch-Transformer formula these families use (`load_balancing_loss`, checked against HF's
own when nothing is dropped). The output's `aux_loss`, `router_logits` and `loss` (+ coef ·
aux when labels were given) are set as HF would. Forwards that drop nothing are left to HF.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from leantrain.models.registry import BlockList, MoeRouter
from leantrain.random_ltd.plan import LayerPlan
from leantrain.random_ltd.routing import RoutingError

__all__ = ["MoeAuxLoss", "attach_moe_aux_loss", "load_balancing_loss"]


def load_balancing_loss(
    layers: Sequence[tuple[Tensor, Tensor | None]], num_experts: int, top_k: int
) -> Tensor:
    """Switch-Transformer load-balancing loss of router logits [N_l, E] weighted per row.

    `layers` holds (logits, weight) per layer, weight [N_l] (1 for a token that counts, 0 for
    padding) or None (every row counts). Loss = E · Σ_e f_e · P_e, where f_e is the share of
    top-k assignments that went to expert e and P_e the mean router probability of e, both over
    every counted row of every layer (rows of different layers may differ in number).
    """
    device = layers[0][0].device
    counts = torch.zeros(num_experts, device=device)
    probs = torch.zeros(num_experts, device=device)
    total = torch.zeros((), device=device)
    for logits, weight in layers:
        p = torch.softmax(logits.float(), dim=-1)  # [N, E]
        chosen = p.topk(top_k, dim=-1).indices.reshape(-1)  # [N·k]
        w = torch.ones(p.shape[0], device=device) if weight is None else weight.float()
        counts = counts + torch.zeros_like(counts).scatter_add(
            0, chosen, w.repeat_interleave(top_k)
        )
        probs = probs + (p * w[:, None]).sum(0)
        total = total + w.sum()
    return num_experts * (counts / total * probs / total).sum()


@dataclass
class _Collection:
    """The router logits of one training forward that drops tokens."""

    batch: int
    seq_len: int
    mask: Tensor | None
    rows: list[tuple[Tensor, Tensor | None]] = field(default_factory=list)


class MoeAuxLoss:
    """Hooks that compute a MoE causal LM's auxiliary loss over the tokens each router saw."""

    def __init__(
        self, model: nn.Module, found: BlockList, plans: dict[nn.Module, LayerPlan], spec: MoeRouter
    ) -> None:
        self.model = model
        self.scheduler = next(iter(plans.values())).scheduler
        self.num_experts = int(model.num_experts)  # type: ignore[arg-type]
        self.top_k = int(model.num_experts_per_tok)  # type: ignore[arg-type]
        self.coef = float(model.router_aux_loss_coef)  # type: ignore[arg-type]
        self.signature = inspect.signature(model.forward)
        self.collecting: _Collection | None = None
        self.hooks: list[RemovableHandle] = [
            model.register_forward_pre_hook(self._before, with_kwargs=True),
            model.register_forward_hook(self._after, with_kwargs=True),
        ]
        for block in dict.fromkeys(found.blocks):
            try:
                router = block.get_submodule(spec.router)
            except AttributeError:  # a dense block among sparse ones (Qwen2-MoE's mlp_only_layers)
                continue
            self.hooks.append(router.register_forward_hook(self._tap(plans.get(block))))

    def _tap(self, plan: LayerPlan | None) -> Any:
        def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            col = self.collecting
            if col is None:
                return
            logits = output[0] if isinstance(output, tuple) else output  # [N, E]
            kept = None  # every token routed (a dense or non-dropping call)
            if plan is not None and logits.shape[0] != col.batch * col.seq_len:
                kept = plan.current
            col.rows.append((logits, kept))

        return hook

    def _before(
        self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
        self.collecting = None
        if not module.training:
            return None
        given = self.signature.bind_partial(*args, **kwargs).arguments
        wanted = given.get("output_router_logits")
        if wanted is None:
            wanted = getattr(getattr(module, "config", None), "output_router_logits", False)
        tokens = given.get("input_ids")
        if tokens is None:
            tokens = given.get("inputs_embeds")
        if not wanted or tokens is None or self.scheduler.current_seq >= tokens.shape[1]:
            return None  # nothing is dropped: HF's own loss is right
        mask = given.get("attention_mask")
        if mask is not None and mask.dim() != 2:
            raise RoutingError(
                f"random-LTD ({type(module).__name__}): the router aux loss needs a [B, S] "
                f"padding mask to leave padding out; got attention_mask {tuple(mask.shape)}"
            )
        self.collecting = _Collection(tokens.shape[0], tokens.shape[1], mask)
        return args, {**kwargs, "output_router_logits": False}

    def _after(
        self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any
    ) -> Any:
        col, self.collecting = self.collecting, None
        if col is None:
            return None
        if isinstance(output, tuple):
            raise RoutingError(
                f"random-LTD ({type(module).__name__}): with return_dict=False the router aux "
                "loss cannot be added; call the model with return_dict=True"
            )
        layers = [(logits, self._weight(col, idx)) for logits, idx in col.rows]
        aux = load_balancing_loss(layers, self.num_experts, self.top_k)
        output["aux_loss"] = aux
        output["router_logits"] = tuple(logits for logits, _ in col.rows)
        if output.get("loss") is not None:
            output["loss"] = output["loss"] + self.coef * aux.to(output["loss"].device)
        return output

    @staticmethod
    def _weight(col: _Collection, indices: Tensor | None) -> Tensor | None:
        """Which rows of one router's logits count: its tokens' padding-mask values."""
        if col.mask is None:
            return None
        mask = col.mask if indices is None else col.mask.gather(1, indices)  # [B, S|r]
        return mask.reshape(-1)

    def remove(self) -> None:
        """Remove every hook."""
        for hook in self.hooks:
            hook.remove()


def attach_moe_aux_loss(
    model: nn.Module, found: BlockList, plans: dict[nn.Module, LayerPlan], spec: MoeRouter
) -> MoeAuxLoss | None:
    """Install `MoeAuxLoss` on a MoE model that computes the aux loss (None for a bare model,
    which returns per-layer router logits of B·r rows for dropping layers, as it saw them)."""
    if not all(
        hasattr(model, a) for a in ("num_experts", "num_experts_per_tok", "router_aux_loss_coef")
    ):
        return None
    return MoeAuxLoss(model, found, plans, spec)
