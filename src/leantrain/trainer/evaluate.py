"""Evaluation on the validation split: token-weighted loss with its standard error, and the
task's metrics; and whether an evaluation reached the recipe's target loss."""

from __future__ import annotations

import torch
from torch import nn

from leantrain.trainer.distributed import any_rank, autocast, to_device
from leantrain.trainer.evalstats import mean_and_se, sample_losses
from leantrain.trainer.recipe import Recipe
from leantrain.trainer.task import TaskData

__all__ = ["evaluate", "reached_target"]


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: TaskData,
    recipe: Recipe,
    device: torch.device,
    *,
    whole: bool = False,
) -> dict[str, float]:
    """Validation loss (token-weighted, with its standard error over samples) and the task's
    metrics, over at most `eval.max_batches` batches, or the whole split when `whole`."""
    if data.valid is None:
        return {}
    was_training = model.training
    model.eval()
    size = recipe.eval.batch_size or recipe.optim.micro_batch_size
    g = torch.Generator().manual_seed(recipe.seed)  # same masks at every evaluation
    loader = torch.utils.data.DataLoader(
        data.valid, batch_size=size, collate_fn=data.collate_fn, generator=g
    )  # its own generator: a loader draws a seed, which must not come from the global RNG
    limit = None if whole else recipe.eval.max_batches
    sums, counts, preds, labels = [], [], [], []
    for i, batch in enumerate(loader):
        if limit is not None and i >= limit:
            break
        if data.transform is not None:
            batch = data.transform(batch, g, False)
        with autocast(recipe, device):
            out = model(**to_device(batch, device))
        s, c = sample_losses(recipe.task, out.logits, batch["labels"].to(device))
        sums.append(s.cpu())
        counts.append(c.cpu())
        if data.score is not None:
            logits = out.logits.float()
            preds.append(logits.squeeze(-1) if logits.shape[-1] == 1 else logits.argmax(-1))
            labels.append(batch["labels"])
    model.train(was_training)
    loss, se = mean_and_se(torch.cat(sums), torch.cat(counts))
    result = {"eval/loss": loss, "eval/loss_se": se}
    if data.score is not None:
        scores = data.score(torch.cat(preds).cpu().numpy(), torch.cat(labels).numpy())
        result.update({f"eval/{k}": v for k, v in scores.items()})
    return result


def reached_target(recipe: Recipe, row: dict[str, float], world: int, device: torch.device) -> bool:
    """Whether this step's evaluation reached `eval.stop_at_loss` (on any rank, so all stop)."""
    target = recipe.eval.stop_at_loss
    if target is None or "eval/loss" not in row:  # every rank evaluates at the same steps
        return False
    return any_rank(row["eval/loss"] <= target, world, device)
