"""Encoder-decoder models: PLD on both stacks, random-LTD on the encoder (or, with `layers=`,
the decoder, whose cross-attention still reads the whole encoder output).
"""

from __future__ import annotations

from leantrain.models.registry import ModelFamily, Stack, register_family

__all__ = ["BART", "T5"]

_T5_BIAS = {1: "position_bias", 2: "encoder_decoder_position_bias"}
_T5_FIRST = {
    0: "the first T5 block computes the relative position bias from the length it is given "
    "(every later block reuses it); route from block 1 on (random_ltd_layer_id)"
}

T5 = register_family(
    ModelFamily(
        model_types=("t5",),
        stacks=(
            Stack(
                ("encoder.block",),
                "encoder",
                routes={"position_bias": "pairs"},
                block_outputs=3,
                echo_outputs=_T5_BIAS,
                pld_never_skip=(0,),
                ltd_refused=_T5_FIRST,
                name="encoder",
            ),
            Stack(
                ("decoder.block",),
                "decoder",
                routes={
                    "position_bias": "pairs",
                    "encoder_hidden_states": "full",
                    "encoder_attention_mask": "queries",
                    "encoder_decoder_position_bias": "queries",
                },
                block_outputs=3,
                echo_outputs=_T5_BIAS,
                pld_never_skip=(0,),
                ltd_refused=_T5_FIRST,
                name="decoder",
            ),
        ),
        notes=(
            "relative position bias follows the kept tokens; PLD never skips block 0 of a stack "
            "(it builds the bias the others reuse)"
        ),
    )
)

BART = register_family(
    ModelFamily(
        model_types=("bart",),
        stacks=(
            Stack(("encoder.layers",), "encoder", name="encoder"),
            Stack(
                ("decoder.layers",),
                "decoder",
                routes={"encoder_hidden_states": "full", "encoder_attention_mask": "queries"},
                name="decoder",
            ),
        ),
        pre_layernorm=False,
        notes="Post-LN: PLD is meant for Pre-LN blocks (it warns)",
    )
)
