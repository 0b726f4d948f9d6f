"""Validation loss per sample, and its mean with a standard error that treats samples as units.

A batch-mean loss hides how much the loss varies between validation sequences, so it cannot
say whether two runs differ. Here every sample contributes (sum of its token losses, number of
scored tokens); the split's loss is the token-weighted mean Σs/Σc, and its standard error is
the ratio estimator's, sqrt(n/(n−1)·Σ(s_i − mean·c_i)²)/Σc over the n samples — honest when
tokens of one sequence are correlated, as they are.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["mean_and_se", "sample_losses"]


def sample_losses(
    task: str, logits: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of losses, number of scored targets) per sample, as the HF heads compute the loss.

    Causal LM: token t predicts label t + 1; masked LM: labels −100 are not scored;
    classification: cross-entropy, or mean squared error for a single-output (regression) head.
    """
    if task in ("causal_lm", "masked_lm"):
        if task == "causal_lm":
            logits, labels = logits[:, :-1], labels[:, 1:]  # [B, S-1, V], [B, S-1]
        b, s, v = logits.shape
        scored = labels != -100
        loss = F.cross_entropy(
            logits.float().reshape(b * s, v),
            labels.reshape(b * s),
            ignore_index=-100,
            reduction="none",
        ).view(b, s)
        return (loss * scored).sum(1), scored.sum(1).float()
    if logits.shape[-1] == 1:  # regression (STS-B)
        loss = (logits.float().squeeze(-1) - labels.float()) ** 2
    else:
        loss = F.cross_entropy(logits.float(), labels, reduction="none")
    return loss, torch.ones_like(loss)


def mean_and_se(sums: torch.Tensor, counts: torch.Tensor) -> tuple[float, float]:
    """Token-weighted mean loss over samples and its standard error (NaN with < 2 samples)."""
    sums, counts = sums.double(), counts.double()
    total = float(counts.sum())
    if total <= 0:
        return math.nan, math.nan
    mean = float(sums.sum()) / total
    n = sums.numel()
    if n < 2:
        return mean, math.nan
    resid = sums - mean * counts
    return mean, math.sqrt(n / (n - 1) * float((resid * resid).sum())) / total
