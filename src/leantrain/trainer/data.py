"""Datasets of the reference trainer: token blocks, masked LM, GLUE and CIFAR-10, all local.

`build_task_data(recipe)` returns the training and validation sets of a recipe's task with the
collate function, an optional per-batch transform (MLM masking, image augmentation; it draws
from an explicit generator the trainer checkpoints) and the task's official metrics. Each task
lives in its own module: `text` (language models), `glue`, `images` (CIFAR-10).
"""

from __future__ import annotations

from leantrain.trainer.glue import glue_data
from leantrain.trainer.images import cifar_data
from leantrain.trainer.recipe import Recipe
from leantrain.trainer.task import TaskData
from leantrain.trainer.text import language_model_data
from leantrain.trainer.tokenizer import load_tokenizer

__all__ = ["build_task_data"]


def build_task_data(recipe: Recipe) -> TaskData:
    """The datasets, batching and metrics of `recipe.task`."""
    if recipe.task == "image_classification":
        return cifar_data(recipe)
    tokenizer = load_tokenizer(recipe.data, recipe.model.pretrained)
    if recipe.task == "sequence_classification":
        return glue_data(recipe, tokenizer)
    return language_model_data(recipe, tokenizer)
