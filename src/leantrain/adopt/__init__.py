"""One-call adoption: `prepare` a model and drive every technique from one handle.

The techniques compose as an ordered list (`TECHNIQUES`, in `leantrain.adopt.compose`); the
Hugging Face Trainer integration lives in `leantrain.adopt.hf` (imported on demand, so
`import leantrain` does not load the Trainer), `leantrain config check` in `leantrain.adopt.check`.
"""

from leantrain.accounting import (
    StepTokens,
    TokenCounter,
    effective_seqlen,
    layer_tokens_per_sample,
    step_tokens,
)
from leantrain.adopt.compose import TECHNIQUES, check_composition, register_technique
from leantrain.adopt.data import ShuffledBatchSampler
from leantrain.adopt.handle import LeantrainHandle
from leantrain.adopt.prepare import prepare

__all__ = [
    "TECHNIQUES",
    "LeantrainHandle",
    "ShuffledBatchSampler",
    "StepTokens",
    "TokenCounter",
    "check_composition",
    "effective_seqlen",
    "layer_tokens_per_sample",
    "prepare",
    "register_technique",
    "step_tokens",
]
