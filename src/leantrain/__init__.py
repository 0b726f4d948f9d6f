"""leantrain: cheaper transformer training for any PyTorch model.

Progressive Layer Dropping, curriculum learning and random layerwise token dropping, configured
by DeepSpeed's own JSON sections and applied to Hugging Face or plain PyTorch models.
"""

from leantrain.adopt import LeantrainHandle, prepare
from leantrain.config import LeantrainConfig, load_config
from leantrain.curriculum import (
    CurriculumIndex,
    CurriculumSampler,
    CurriculumScheduler,
    DataAnalyzer,
    SeqlenWarmupCollator,
    reshape_batch,
    truncate_batch,
)
from leantrain.errors import ConfigError, LeantrainError
from leantrain.models import ModelFamily, Stack, find_block_list, register_family
from leantrain.pld import (
    ProgressiveLayerDrop,
    convert_to_progressive_layer_drop,
    expected_keep_fraction,
    kept_layers,
    layer_keep_prob,
    pld_theta,
    revert_progressive_layer_drop,
)
from leantrain.random_ltd import (
    LayerTokenLRScheduler,
    RandomLTDScheduler,
    convert_to_random_ltd,
    remove_random_ltd_state_dict,
    revert_random_ltd,
)
from leantrain.version import __version__

__all__ = [
    "ConfigError",
    "CurriculumIndex",
    "CurriculumSampler",
    "CurriculumScheduler",
    "DataAnalyzer",
    "LayerTokenLRScheduler",
    "LeantrainConfig",
    "LeantrainError",
    "LeantrainHandle",
    "ModelFamily",
    "ProgressiveLayerDrop",
    "RandomLTDScheduler",
    "SeqlenWarmupCollator",
    "Stack",
    "__version__",
    "convert_to_progressive_layer_drop",
    "convert_to_random_ltd",
    "expected_keep_fraction",
    "find_block_list",
    "kept_layers",
    "layer_keep_prob",
    "load_config",
    "pld_theta",
    "prepare",
    "register_family",
    "remove_random_ltd_state_dict",
    "reshape_batch",
    "revert_progressive_layer_drop",
    "revert_random_ltd",
    "truncate_batch",
]
