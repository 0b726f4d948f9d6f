"""Token accounting of one optimizer step when the techniques compose (Megatron-DeepSpeed's rule).

One formula, used by the handle, the trainer and the tests alike. A step is described by a
`StepShape` that every technique edits in turn (`Technique.account`): a curriculum cuts the
sequence length (or folds rows into more, shorter ones), random-LTD caps the tokens its blocks
see at the reserved length r, PLD gives each block the probability that it runs. Then:

- the *effective sequence length* is the mean over blocks of the tokens each block sees,
  floored: with random-LTD that is Megatron-DeepSpeed's ``(actual·(L − L_ltd) + r·L_ltd) // L``
  when r is shorter than the curriculum's length ``actual``, else ``actual``. It drives token
  counting and token-based schedules;
- *consumed tokens* of a step are ``samples × effective sequence length`` (Megatron-DeepSpeed's
  ``consumed_train_tokens``);
- *layer-tokens* of a step are the tokens each block actually processes, summed over blocks and
  samples, each block weighted by the probability that it runs (a skipped block's tokens are not
  counted), so the value is an expectation.

`TokenCounter` is the run's one running total of both: the handle adds each step to it, and the
trainer's log, its layer-token LR and random-LTD's `LayerTokenLRScheduler` all read it.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

__all__ = [
    "StepShape",
    "StepTokens",
    "TokenCounter",
    "effective_seqlen",
    "layer_tokens_per_sample",
    "step_tokens",
]


class StepTokens(NamedTuple):
    """What one optimizer step consumed."""

    #: Effective sequence length of the step.
    effective: int
    #: Consumed tokens: samples × effective sequence length.
    tokens: int
    #: Expected layer-tokens: tokens each block processed, summed over blocks and samples.
    layer_tokens: float


@dataclass
class StepShape:
    """What one optimizer step feeds the model, as the techniques shape it."""

    #: Rows of the global batch (micro batch × accumulation × data-parallel ranks).
    samples: int
    #: Tokens per row that reach the model.
    seq_length: int
    #: Blocks in the model (L).
    num_layers: int
    #: Block index (0-based) -> the most tokens that block sees (random-LTD's r).
    caps: dict[int, int] = field(default_factory=dict)
    #: Probability that each block runs (None: every block always runs).
    keep_probs: list[float] | None = None
    #: Micro-batches the rows come in (accumulation × data-parallel ranks): a fold works on
    #: each micro-batch alone.
    micro_batches: int = 1

    def cut(self, length: int, *, fold: bool = False) -> None:
        """Cut rows to `length` tokens; `fold` keeps the tokens instead, as more rows.

        A fold turns each micro-batch of m rows into ceil(m·S / length) rows, the tail of each row
        kept as an extra row when `length` does not divide S (`reshape_batch`).
        """
        if fold and length < self.seq_length:
            rows = -(-self.samples // self.micro_batches)
            self.samples = self.micro_batches * -(-rows * self.seq_length // length)
        self.seq_length = min(length, self.seq_length)

    def cap(self, blocks: Iterable[int], tokens: int) -> None:
        """Blocks `blocks` see at most `tokens` tokens."""
        for i in blocks:
            self.caps[i] = min(self.caps.get(i, tokens), tokens)

    def keep(self, probs: Sequence[float]) -> None:
        """Block i runs with probability `probs[i]` (independently of earlier calls)."""
        if len(probs) != self.num_layers:
            raise ValueError(
                f"layer_tokens_per_sample: got {len(probs)} keep probabilities for "
                f"{self.num_layers} layers; expected one per layer"
            )
        old = self.keep_probs
        self.keep_probs = (
            list(probs) if old is None else [a * b for a, b in zip(old, probs, strict=True)]
        )

    def block_tokens(self) -> list[int]:
        """Tokens each block sees per row."""
        if any(not 0 <= i < self.num_layers for i in self.caps):
            raise ValueError(
                f"layer_tokens_per_sample: got ltd_layer_ids {sorted(self.caps)}; expected ids "
                f"in [0, {self.num_layers})"
            )
        return [
            min(self.caps.get(i, self.seq_length), self.seq_length) for i in range(self.num_layers)
        ]

    def count(self) -> StepTokens:
        """Effective sequence length, consumed tokens and expected layer-tokens of the step."""
        if self.samples < 0:
            raise ValueError(f"step_tokens: got samples={self.samples}; expected >= 0")
        tokens = self.block_tokens()
        effective = sum(tokens) // self.num_layers
        keep = self.keep_probs
        per_sample = 0.0
        for i, t in enumerate(tokens):
            per_sample += t * (1.0 if keep is None else keep[i])
        return StepTokens(effective, self.samples * effective, self.samples * per_sample)


@dataclass
class TokenCounter:
    """The run's consumed tokens and layer-tokens so far (the one count everything reads)."""

    tokens: int = 0
    layer_tokens: float = 0.0

    def add(self, step: StepTokens) -> None:
        """Count one optimizer step."""
        self.tokens += step.tokens
        self.layer_tokens += step.layer_tokens

    def state_dict(self) -> dict[str, Any]:
        """Both totals (the handle stores them under its own keys)."""
        return {"tokens": self.tokens, "layer_tokens": self.layer_tokens}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore `state_dict()`."""
        self.tokens = int(state["tokens"])
        self.layer_tokens = float(state["layer_tokens"])


def _shape(
    samples: int,
    seq_length: int,
    *,
    num_layers: int,
    curriculum_seqlen: int | None,
    ltd_layer_ids: Collection[int],
    reserved_length: int | None,
) -> StepShape:
    """The step shape of the keyword form used by the functions below."""
    shape = StepShape(samples, seq_length, num_layers)
    if curriculum_seqlen is not None:
        shape.cut(curriculum_seqlen)
    if reserved_length is not None:
        shape.cap(ltd_layer_ids, reserved_length)
    return shape


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
    return (
        _shape(
            1,
            seq_length,
            num_layers=num_layers,
            curriculum_seqlen=curriculum_seqlen,
            ltd_layer_ids=range(ltd_layers),
            reserved_length=reserved_length,
        )
        .count()
        .effective
    )


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
    shape = _shape(
        1,
        seq_length,
        num_layers=num_layers,
        curriculum_seqlen=None,
        ltd_layer_ids=ltd_layer_ids,
        reserved_length=seq_length if reserved_length is None else reserved_length,
    )
    if keep_probs is not None:
        shape.keep(keep_probs)
    return shape.count().layer_tokens


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
    shape = _shape(
        samples,
        seq_length,
        num_layers=num_layers,
        curriculum_seqlen=curriculum_seqlen,
        ltd_layer_ids=ltd_layer_ids,
        reserved_length=reserved_length,
    )
    if keep_probs is not None:
        shape.keep(keep_probs)
    return shape.count()
