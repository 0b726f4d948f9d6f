"""Random layerwise token dropping (random-LTD): convert blocks, schedule the reserved length,
select and route tokens, and decay the learning rate by consumed layer-tokens.

See README.md in this folder for the method card.
"""

from leantrain.random_ltd.kernels import KERNELS_ENV, kernel_backend
from leantrain.random_ltd.layer import RandomLTDMixin
from leantrain.random_ltd.lr_schedule import LayerTokenLRScheduler, layer_token_lr_multiplier
from leantrain.random_ltd.moe import load_balancing_loss
from leantrain.random_ltd.plan import LayerPlan
from leantrain.random_ltd.routing import (
    RoutingError,
    TokenRoute,
    flat_token_index,
    gather_alibi,
    gather_mask,
    gather_positions,
    gather_queries,
    gather_route,
    gather_tokens,
    route_argument,
    scatter_route,
    scatter_tokens,
)
from leantrain.random_ltd.scheduler import (
    RandomLTDScheduler,
    layer_tokens_per_step,
    reserved_length,
    resolve_random_ltd_config,
)
from leantrain.random_ltd.selection import (
    random_scores,
    rank_key,
    sample_token_indices,
    select_tokens,
    token_validity,
)
from leantrain.random_ltd.surgery import (
    TECHNIQUE,
    RandomLTDConversion,
    convert_to_random_ltd,
    converted_layer_ids,
    kept_indices,
    random_ltd_scheduler_of,
    remove_random_ltd_state_dict,
    revert_random_ltd,
)
from leantrain.random_ltd.technique import RandomLTDTechnique

__all__ = [
    "KERNELS_ENV",
    "TECHNIQUE",
    "LayerPlan",
    "LayerTokenLRScheduler",
    "RandomLTDConversion",
    "RandomLTDMixin",
    "RandomLTDScheduler",
    "RandomLTDTechnique",
    "RoutingError",
    "TokenRoute",
    "convert_to_random_ltd",
    "converted_layer_ids",
    "flat_token_index",
    "gather_alibi",
    "gather_mask",
    "gather_positions",
    "gather_queries",
    "gather_route",
    "gather_tokens",
    "kept_indices",
    "kernel_backend",
    "layer_token_lr_multiplier",
    "layer_tokens_per_step",
    "load_balancing_loss",
    "random_ltd_scheduler_of",
    "random_scores",
    "rank_key",
    "remove_random_ltd_state_dict",
    "reserved_length",
    "resolve_random_ltd_config",
    "revert_random_ltd",
    "route_argument",
    "sample_token_indices",
    "scatter_route",
    "scatter_tokens",
    "select_tokens",
    "token_validity",
]
