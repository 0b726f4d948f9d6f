"""Training FLOPs counted analytically from the model's shape and each step's actual lengths.

Forward FLOPs of one sample whose blocks see n tokens (a multiply-add is 2 FLOPs):

- a transformer block on n tokens: 2·n·(4·d² + 2·d·f) for the Q, K, V and output projections
  and the two MLP matrices (d the width, f the MLP width), plus 4·n²·d for attention's
  QKᵀ and AV products (dense: the causal half is not subtracted, as SDPA's math path computes
  it all); a random-LTD block sees n = min(r, n_step), any other block n_step, the step's
  sequence length after the curriculum; with PLD block i counts with its keep probability p_i
  (an expectation, like the layer-token counter);
- the head on every position of the step's sequence: 2·n_step·d·V (V the vocabulary), plus
  2·n_step·d² for a masked-LM head's dense transform; embeddings are lookups (0 FLOPs);
- layer norms, softmax, biases, the loss and the optimizer are left out (O(n·d), small).

A training step costs 3 × forward (the backward pass is about twice the forward), times the
samples of the global batch. `run_flops` sums this over the rows of a run's `metrics.csv`, whose
schedule columns (θ, r, d) hold what each step used: each technique reads its own back into the
step's `StepShape` (`Technique.account_logged`), as it shaped the token count while it ran.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from leantrain.accounting import StepShape
from leantrain.adopt.compose import enabled_techniques
from leantrain.config import LeantrainConfig

__all__ = ["ModelShape", "block_flops", "run_flops", "shape_flops", "step_flops"]

#: Training FLOPs per forward FLOP (forward + backward ≈ 1 + 2).
TRAIN_FACTOR = 3.0


@dataclass(frozen=True)
class ModelShape:
    """What the FLOP count needs to know about a transformer."""

    layers: int
    dim: int
    ffn: int
    vocab: int
    #: masked-LM heads have a d×d transform before the vocabulary projection
    mlm_head: bool = False

    @classmethod
    def from_model(cls, model: Any) -> ModelShape:
        """From a Hugging Face model: its config (GPT-2's n_embd/n_layer/n_inner or BERT's
        names) and whether its head is a masked-LM head."""
        config = model.config
        dim = int(config.hidden_size)
        ffn = getattr(config, "intermediate_size", None) or getattr(config, "n_inner", None)
        return cls(
            layers=int(config.num_hidden_layers),
            dim=dim,
            ffn=int(ffn or 4 * dim),
            vocab=int(config.vocab_size),
            mlm_head="MaskedLM" in type(model).__name__,
        )


def block_flops(shape: ModelShape, tokens: int) -> float:
    """Forward FLOPs of one block on `tokens` tokens of one sample (dense attention)."""
    d = shape.dim
    return 2.0 * tokens * (4 * d * d + 2 * d * shape.ffn) + 4.0 * tokens * tokens * d


def step_flops(
    shape: ModelShape,
    *,
    samples: int,
    seq_len: int,
    ltd_layer_ids: Collection[int] = (),
    reserved_length: int | None = None,
    keep_probs: Sequence[float] | None = None,
) -> float:
    """Training FLOPs of one step of `samples` sequences of `seq_len` tokens (see the module
    docstring): random-LTD layers see min(r, seq_len) tokens, PLD weighs block i by p_i."""
    if keep_probs is not None and len(keep_probs) != shape.layers:
        raise ValueError(
            f"step_flops: {len(keep_probs)} keep probabilities for {shape.layers} layers"
        )
    step = StepShape(samples, seq_len, shape.layers)
    if reserved_length is not None:
        step.cap(ltd_layer_ids, reserved_length)
    if keep_probs is not None:
        step.keep(keep_probs)
    return shape_flops(shape, step)


def shape_flops(shape: ModelShape, step: StepShape) -> float:
    """Training FLOPs of one step as the techniques shaped it: each block on the tokens it sees,
    weighted by the probability that it runs; the head on the step's rows."""
    keep = step.keep_probs
    blocks = sum(
        block_flops(shape, tokens) * (1.0 if keep is None else keep[i])
        for i, tokens in enumerate(step.block_tokens())
    )
    n, d = step.seq_length, shape.dim
    head = 2.0 * n * d * shape.vocab + (2.0 * n * d * d if shape.mlm_head else 0.0)
    return TRAIN_FACTOR * step.samples * (blocks + head)


def run_flops(
    rows: Sequence[Mapping[str, float]],
    shape: ModelShape,
    *,
    samples: int,
    seq_len: int,
    config: LeantrainConfig,
    micro_batches: int = 1,
) -> float:
    """Training FLOPs of a whole run of `config`'s techniques from its per-step `metrics.csv`
    rows (logged every step): `samples` rows of `seq_len` tokens per step in `micro_batches`
    micro-batches, as each enabled technique shapes them from the values its step logged (the
    curriculum's length, random-LTD's r, PLD's θ)."""
    steps = [int(r["step"]) for r in rows]
    if steps != list(range(1, len(rows) + 1)):
        raise ValueError(
            "run_flops: metrics.csv must hold one row per step from step 1 (log_interval: 1); "
            f"got steps {steps[:5]}..."
        )
    techniques = enabled_techniques(config)
    total = 0.0
    for row in rows:
        step = StepShape(samples, seq_len, shape.layers, micro_batches=micro_batches)
        for technique in techniques:
            technique.account_logged(config, row, step)
        total += shape_flops(shape, step)
    return total
