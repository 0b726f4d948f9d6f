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
# --- pld (end) ---
# --- curriculum (begin) ---
# --- curriculum (end) ---
# --- random_ltd (begin) ---
# --- random_ltd (end) ---
# --- adoption (begin) ---
# --- adoption (end) ---
