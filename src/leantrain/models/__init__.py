"""Model-family registry: where the blocks are and how to call them, keyed by HF `model_type`."""

from leantrain.models.registry import (
    BlockList,
    ModelFamily,
    UnknownModelError,
    family_of,
    family_of_type,
    find_block_list,
    register_family,
    registered_model_types,
)

__all__ = [
    "BlockList",
    "ModelFamily",
    "UnknownModelError",
    "family_of",
    "family_of_type",
    "find_block_list",
    "register_family",
    "registered_model_types",
]
