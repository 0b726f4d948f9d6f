"""Progressive Layer Dropping (Zhang & He 2020): skip whole blocks, more so deeper and later."""

from leantrain.pld.schedule import (
    ProgressiveLayerDrop,
    coin_seed,
    draw_layer_coins,
    expected_keep_fraction,
    layer_keep_prob,
    layer_keep_probs,
    pld_theta,
)
from leantrain.pld.surgery import (
    PLDConversion,
    ProgressiveLayerDropMixin,
    convert_to_progressive_layer_drop,
    kept_layers,
    revert_progressive_layer_drop,
)
from leantrain.pld.technique import PLDTechnique

__all__ = [
    "PLDConversion",
    "PLDTechnique",
    "ProgressiveLayerDrop",
    "ProgressiveLayerDropMixin",
    "coin_seed",
    "convert_to_progressive_layer_drop",
    "draw_layer_coins",
    "expected_keep_fraction",
    "kept_layers",
    "layer_keep_prob",
    "layer_keep_probs",
    "pld_theta",
    "revert_progressive_layer_drop",
]
