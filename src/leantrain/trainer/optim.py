"""The recipe's optimizer (AdamW) and the LR it applies at each step.

The LR is a pure function of the step (`schedule.lr_at_step`), or of the consumed layer-tokens
of the technique that schedules it, so resuming needs no scheduler state.
"""

from __future__ import annotations

import torch
from torch import nn

from leantrain.adopt import LeantrainHandle
from leantrain.trainer.recipe import Recipe
from leantrain.trainer.schedule import lr_at_step

__all__ = ["build_optimizer", "step_lr"]


def build_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    """AdamW with weight decay on matrices only (not biases, norms or 1-D embeddings)."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": recipe.optim.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    o = recipe.optim
    return torch.optim.AdamW(groups, lr=o.lr, betas=o.betas, eps=o.eps)


def step_lr(recipe: Recipe, step: int, handle: LeantrainHandle) -> float:
    """This step's LR, a pure function of the step, or (`optim.decay: layer_tokens`) of the
    technique that schedules the LR (random-LTD's, by the handle's consumed layer-tokens)."""
    o = recipe.optim
    if o.decay == "layer_tokens":
        factor = handle.lr_multiplier(min_ratio=o.min_lr_ratio)
        assert factor is not None  # checked when the recipe loaded
        return o.lr * factor
    return lr_at_step(
        step,
        peak=o.lr,
        warmup_steps=o.warmup_steps,
        max_steps=o.max_steps,
        decay=o.decay,
        min_ratio=o.min_lr_ratio,
    )
