"""One-call adoption: `prepare` a model and drive every technique from one handle.

The Hugging Face Trainer integration lives in `leantrain.adopt.hf` (imported on demand, so
`import leantrain` does not load the Trainer).
"""

from leantrain.accounting import (
    StepTokens,
    effective_seqlen,
    layer_tokens_per_sample,
    step_tokens,
)
from leantrain.adopt.compose import SURGERY_ORDER, check_composition
from leantrain.adopt.data import ShuffledBatchSampler
from leantrain.adopt.handle import LeantrainHandle, prepare

__all__ = [
    "SURGERY_ORDER",
    "LeantrainHandle",
    "ShuffledBatchSampler",
    "StepTokens",
    "check_composition",
    "effective_seqlen",
    "layer_tokens_per_sample",
    "prepare",
    "step_tokens",
]
