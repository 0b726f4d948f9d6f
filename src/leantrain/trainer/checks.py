"""What the trainer checks besides the recipe schema: the built model against the data, each
step's values, the command's arguments. Each failure is one `ConfigError` line naming the key.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from leantrain.errors import ConfigError, LeantrainError
from leantrain.models import family_of_type
from leantrain.trainer.recipe import Recipe

__all__ = [
    "NonFiniteError",
    "check_device",
    "check_finite",
    "check_model_config",
    "check_stop_at",
    "positions_needed",
]


class NonFiniteError(LeantrainError):
    """A step's loss or gradient norm is NaN or infinite: training stops before saving it."""


def positions_needed(recipe: Recipe, pad_token_id: Any, *, after_pad: bool) -> int:
    """Position-table size a model needs for `data.seq_len` tokens: RoBERTa-style models
    (`after_pad`) number positions from pad_token_id + 1."""
    if not after_pad:
        return recipe.data.seq_len
    return recipe.data.seq_len + (pad_token_id if isinstance(pad_token_id, int) else 1) + 1


def _key(config: Any, attribute: str, given: dict[str, Any]) -> str:
    """The `model.config` key of an HF config attribute: the one the recipe set, else the
    family's own name for it (gpt2's `n_positions` for `max_position_embeddings`)."""
    own = getattr(config, "attribute_map", {}).get(attribute)
    names = [attribute] if own is None else [attribute, own]
    return f"model.config.{next((n for n in names if n in given), names[-1])}"


def check_model_config(recipe: Recipe, config: Any, *, pretrained: bool) -> None:
    """The built HF `config` has blocks, and positions for `data.seq_len` tokens (a model whose
    position table is too short fails with an index error deep in its embeddings)."""

    def key(attribute: str) -> str:
        if pretrained:
            return f"{attribute} of model.pretrained"
        return _key(config, attribute, recipe.model.config)

    layers = getattr(config, "num_hidden_layers", None)
    if isinstance(layers, int) and layers < 1:
        raise ConfigError(f"{key('num_hidden_layers')}: got {layers}; expected at least 1 block")
    have = getattr(config, "max_position_embeddings", None)
    if recipe.task == "image_classification" or not isinstance(have, int):
        return
    family = family_of_type(getattr(config, "model_type", None))
    after_pad = family is not None and family.positions_after_pad
    need = positions_needed(recipe, config.pad_token_id if after_pad else None, after_pad=after_pad)
    if have >= need:
        return
    seq_len = recipe.data.seq_len
    why = (
        f"{config.model_type} numbers positions from pad_token_id + 1 = {config.pad_token_id + 1}"
        ", so "
        if after_pad
        else ""
    )
    fix = (
        ""
        if pretrained
        else " or leave the key unset (it is then sized to fit)"
        if after_pad
        else " or raise it"
    )
    raise ConfigError(
        f"{key('max_position_embeddings')}: got {have}; {why}data.seq_len {seq_len} needs at "
        f"least {need}; set data.seq_len <= {have - (need - seq_len)}{fix}"
    )


def check_finite(step: int, values: dict[str, float]) -> None:
    """Stop at the first step whose loss or gradient norm is NaN or infinite (naming it)."""
    bad = {k: v for k, v in values.items() if not math.isfinite(v)}
    if bad:
        shown = ", ".join(f"{k} {v}" for k, v in bad.items())
        raise NonFiniteError(
            f"step {step}: {shown}; training stopped without saving this step (the newest "
            "checkpoint is from before it). Lower optim.lr, set optim.grad_clip, or check the data"
        )


def check_device(recipe: Recipe) -> None:
    """`device: cuda` needs a CUDA device."""
    if recipe.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: got 'cuda', but torch finds no CUDA device; use auto or cpu")


def check_stop_at(stop_at: int | None) -> None:
    """`--stop-at` counts optimizer steps: at least 1."""
    if stop_at is not None and stop_at < 1:
        raise ConfigError(f"stop_at (--stop-at): got {stop_at}; expected a step >= 1")
