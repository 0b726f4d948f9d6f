"""leantrain: cheaper transformer training for any PyTorch model.

Progressive Layer Dropping, curriculum learning and random layerwise token dropping, configured
by DeepSpeed's own JSON sections and applied to Hugging Face or plain PyTorch models.
"""

from leantrain.config import LeantrainConfig, load_config
from leantrain.errors import ConfigError, LeantrainError
from leantrain.models import ModelFamily, find_block_list, register_family

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "LeantrainConfig",
    "LeantrainError",
    "ModelFamily",
    "__version__",
    "find_block_list",
    "load_config",
    "register_family",
]

# Each technique exports its public names in its own block below (import, then `__all__ +=`).
# --- pld (begin) ---
from leantrain.pld import (
    ProgressiveLayerDrop,
    convert_to_progressive_layer_drop,
    expected_keep_fraction,
    kept_layers,
    layer_keep_prob,
    pld_theta,
    revert_progressive_layer_drop,
)

__all__ += [
    "ProgressiveLayerDrop",
    "convert_to_progressive_layer_drop",
    "expected_keep_fraction",
    "kept_layers",
    "layer_keep_prob",
    "pld_theta",
    "revert_progressive_layer_drop",
]
# --- pld (end) ---
# --- curriculum (begin) ---
from leantrain.curriculum import (  # noqa: E402
    CurriculumIndex,
    CurriculumSampler,
    CurriculumScheduler,
    DataAnalyzer,
    SeqlenWarmupCollator,
    reshape_batch,
    truncate_batch,
)

__all__ += [
    "CurriculumIndex",
    "CurriculumSampler",
    "CurriculumScheduler",
    "DataAnalyzer",
    "SeqlenWarmupCollator",
    "reshape_batch",
    "truncate_batch",
]
# --- curriculum (end) ---
# --- random_ltd (begin) ---
from leantrain.random_ltd import (  # noqa: E402
    LayerTokenLRScheduler,
    RandomLTDScheduler,
    convert_to_random_ltd,
    remove_random_ltd_state_dict,
    revert_random_ltd,
)

__all__ += [
    "LayerTokenLRScheduler",
    "RandomLTDScheduler",
    "convert_to_random_ltd",
    "remove_random_ltd_state_dict",
    "revert_random_ltd",
]
# --- random_ltd (end) ---
# --- adoption (begin) ---
from leantrain.adopt import LeantrainHandle, prepare  # noqa: E402

__all__ += ["LeantrainHandle", "prepare"]
# --- adoption (end) ---
