"""Model-family registry: where the blocks are and how to call them, keyed by HF `model_type`.

Importing this package registers the families leantrain ships (one module per kind of model).
"""

from leantrain.models import encoder_decoder, text_decoders, text_encoders, vision
from leantrain.models.registry import (
    ROUTES,
    BlockList,
    ModelFamily,
    MoeRouter,
    Route,
    Stack,
    UnknownModelError,
    family_of,
    family_of_type,
    find_block_list,
    find_stacks,
    register_family,
    registered_model_types,
)

__all__ = [
    "ROUTES",
    "BlockList",
    "ModelFamily",
    "MoeRouter",
    "Route",
    "Stack",
    "UnknownModelError",
    "encoder_decoder",
    "family_of",
    "family_of_type",
    "find_block_list",
    "find_stacks",
    "register_family",
    "registered_model_types",
    "text_decoders",
    "text_encoders",
    "vision",
]
