"""Token accounting of one optimizer step when the techniques compose (SPEC.md §4).

Pure functions of the step's schedule values, so the handle, the trainer and the tests all count
the same way:

- the *effective sequence length* is Megatron-DeepSpeed's rule: the curriculum's length when
  curriculum learning is on (else the full length), then, when the reserved length r is shorter,
  ``(actual·(L − L_ltd) + r·L_ltd) // L``. It drives token counting and token-based schedules;
- *consumed tokens* of a step are ``samples × effective sequence length`` (Megatron-DeepSpeed's
  ``consumed_train_tokens``);
- *layer-tokens* of a step are the tokens each block actually processes, summed over blocks: a
  random-LTD block sees ``min(r, actual)`` tokens, any other block ``actual``, and with PLD each
  block counts with its keep probability (a skipped block's tokens are not counted), so the value
  is an expectation.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import NamedTuple

__all__ = [
    "StepTokens",
    "effective_seqlen",
    "layer_tokens_per_sample",
    "step_tokens",
]


def effective_seqlen(
    seq_length: int,
    *,
    curriculum_seqlen: int | None = None,
    reserved_length: int | None = None,
    num_layers: int = 1,
    ltd_layers: int = 0,
) -> int:
    """The step's effective sequence length, as Megatron-DeepSpeed computes it.

    `curriculum_seqlen` is the seqlen curriculum's current length (None: curriculum off or not a
    length metric); `reserved_length` is random-LTD's r (None: random-LTD off); `num_layers` is L
    and `ltd_layers` is L_ltd, the number of blocks that drop tokens.
    """
    if seq_length < 0 or num_layers < 1 or not 0 <= ltd_layers <= num_layers:
        raise ValueError(
            f"effective_seqlen: got seq_length={seq_length}, num_layers={num_layers}, "
            f"ltd_layers={ltd_layers}; expected seq_length >= 0 and 0 <= ltd_layers <= num_layers"
        )
    actual = seq_length if curriculum_seqlen is None else min(curriculum_seqlen, seq_length)
    if reserved_length is not None and reserved_length < actual:
        actual = (actual * (num_layers - ltd_layers) + reserved_length * ltd_layers) // num_layers
    return actual


def layer_tokens_per_sample(
    seq_length: int,
    *,
    num_layers: int,
    ltd_layer_ids: Collection[int] = (),
    reserved_length: int | None = None,
    keep_probs: Sequence[float] | None = None,
) -> float:
    """Expected tokens processed by all blocks for one sample of `seq_length` tokens.

    Block i (0-based) in `ltd_layer_ids` sees ``min(reserved_length, seq_length)`` tokens, every
    other block `seq_length`; `keep_probs[i]` is PLD's probability that block i runs (None: every
    block runs).
    """
    if keep_probs is not None and len(keep_probs) != num_layers:
        raise ValueError(
            f"layer_tokens_per_sample: got {len(keep_probs)} keep probabilities for "
            f"{num_layers} layers; expected one per layer"
        )
    ltd = set(ltd_layer_ids)
    if any(not 0 <= i < num_layers for i in ltd):
        raise ValueError(
            f"layer_tokens_per_sample: got ltd_layer_ids {sorted(ltd)}; expected ids in "
            f"[0, {num_layers})"
        )
    dropped = seq_length if reserved_length is None else min(reserved_length, seq_length)
    total = 0.0
    for i in range(num_layers):
        tokens = dropped if i in ltd else seq_length
        total += tokens * (1.0 if keep_probs is None else keep_probs[i])
    return total


class StepTokens(NamedTuple):
    """What one optimizer step consumed."""

    #: Effective sequence length of the step.
    effective: int
    #: Consumed tokens: samples × effective sequence length.
    tokens: int
    #: Expected layer-tokens: tokens each block processed, summed over blocks and samples.
    layer_tokens: float


def step_tokens(
    samples: int,
    seq_length: int,
    *,
    num_layers: int,
    curriculum_seqlen: int | None = None,
    ltd_layer_ids: Collection[int] = (),
    reserved_length: int | None = None,
    keep_probs: Sequence[float] | None = None,
) -> StepTokens:
    """Effective sequence length, consumed tokens and expected layer-tokens of one step.

    `samples` is the global batch of the step (micro batch × accumulation × data-parallel ranks);
    `seq_length` the full (untruncated) sequence length of the data.
    """
    if samples < 0:
        raise ValueError(f"step_tokens: got samples={samples}; expected >= 0")
    actual = seq_length if curriculum_seqlen is None else min(curriculum_seqlen, seq_length)
    effective = effective_seqlen(
        seq_length,
        curriculum_seqlen=curriculum_seqlen,
        reserved_length=reserved_length,
        num_layers=num_layers,
        ltd_layers=len(set(ltd_layer_ids)),
    )
    per_sample = layer_tokens_per_sample(
        actual,
        num_layers=num_layers,
        ltd_layer_ids=ltd_layer_ids,
        reserved_length=reserved_length,
        keep_probs=keep_probs,
    )
    return StepTokens(effective, samples * effective, samples * per_sample)
