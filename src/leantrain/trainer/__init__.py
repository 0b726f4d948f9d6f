"""The reference trainer: recipes, local datasets, a plain PyTorch loop, checkpoints, reports."""

from leantrain.trainer.evaluate import evaluate
from leantrain.trainer.loop import StepEvent, train
from leantrain.trainer.model import build_model
from leantrain.trainer.recipe import Recipe, load_recipe, recipe_from_dict

__all__ = [
    "Recipe",
    "StepEvent",
    "build_model",
    "evaluate",
    "load_recipe",
    "recipe_from_dict",
    "train",
]
