"""The recipe's Hugging Face model: built from a local checkpoint or config fields, saved at the end.

`build_model` sizes the model for its data (vocabulary, labels, position table) and checks the
recipe against the built config; `save_model` writes the trained weights as a `from_pretrained`
folder; `seq_length` is the tokens per sample the technique accounting counts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn
from transformers import PreTrainedModel
from transformers.utils import logging as hf_logging

from leantrain.models import family_of_type
from leantrain.trainer.checkpoint import full_model_state
from leantrain.trainer.checks import check_model_config, positions_needed
from leantrain.trainer.recipe import Recipe
from leantrain.trainer.task import TaskData

__all__ = ["build_model", "save_model", "seq_length"]

_AUTO_CLASSES = {
    "causal_lm": "AutoModelForCausalLM",
    "masked_lm": "AutoModelForMaskedLM",
    "sequence_classification": "AutoModelForSequenceClassification",
    "image_classification": "AutoModelForImageClassification",
}


def build_model(recipe: Recipe, data: TaskData) -> nn.Module:
    """The recipe's HF model: from a local checkpoint, or built from `model.config` fields."""
    import transformers

    auto = getattr(transformers, _AUTO_CLASSES[recipe.task])
    spec = recipe.model
    data_fields = dict(data.model_fields)
    attn = (
        {}
        if spec.attn_implementation is None
        else {"attn_implementation": spec.attn_implementation}
    )
    if spec.pretrained is not None:  # keep the checkpoint's vocabulary; set the head size
        extra = {k: data_fields[k] for k in ("num_labels", "pad_token_id") if k in data_fields}
        model = auto.from_pretrained(spec.pretrained, local_files_only=True, **attn, **extra)
        check_model_config(recipe, model.config, pretrained=True)
        return model
    fields = {**data_fields, **spec.config, **attn}
    fields.setdefault("architectures", [])  # HF's auto classes iterate it (DeiT has two heads)
    family = family_of_type(spec.family)
    if family is not None and family.positions_after_pad and recipe.task != "image_classification":
        # RoBERTa-style ids start at pad + 1: size the table for the data unless the recipe did
        need = positions_needed(recipe, fields.get("pad_token_id"), after_pad=True)
        fields.setdefault("max_position_embeddings", need)
    config = transformers.AutoConfig.for_model(str(spec.family), **fields)  # family: required
    check_model_config(recipe, config, pretrained=False)
    return auto.from_config(config)


def seq_length(recipe: Recipe, model: nn.Module) -> int | None:
    """Tokens per sample for accounting: the block length, or ViT's patches + CLS."""
    if recipe.task in ("causal_lm", "masked_lm"):
        return recipe.data.seq_len
    cfg: Any = model.config
    if recipe.task == "image_classification" and hasattr(cfg, "patch_size"):
        return (cfg.image_size // cfg.patch_size) ** 2 + 1
    return None


def save_model(model: nn.Module, out: Path, rank: int) -> None:
    """The trained model as a `from_pretrained` folder (`<output_dir>/model`); the surgery keeps
    state_dict keys, so the converted model saves as the plain one."""
    state = full_model_state(model)
    if rank == 0 and isinstance(model, PreTrainedModel):
        shown = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # a bar per save ("Writing model shards") is noise
        try:
            model.save_pretrained(out / "model", state_dict=state)
        finally:
            if shown:
                hf_logging.enable_progress_bar()
