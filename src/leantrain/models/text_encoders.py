"""Bidirectional text encoders: padding masks, and relative or rotary positions where they have them.

Random-LTD keeps the first ([CLS]) token by default, and gathers the rows and columns of the
padding mask (and of DeBERTa's relative positions) with the kept tokens.
"""

from __future__ import annotations

from leantrain.models.registry import ModelFamily, Stack, register_family

__all__ = ["ALBERT", "BERT", "DEBERTA_V2", "DISTILBERT", "MODERNBERT", "ROBERTA_PRELN"]

_POST_LN = "Post-LN: PLD is meant for Pre-LN blocks (it warns)"

BERT = register_family(
    ModelFamily(
        model_types=("bert", "roberta", "xlm-roberta", "electra"),
        stacks=(Stack(("encoder.layer",), "encoder", keep_positions=(0,)),),
        pre_layernorm=False,
        notes=_POST_LN,
    )
)

ROBERTA_PRELN = register_family(
    ModelFamily(
        model_types=("roberta-prelayernorm",),
        stacks=(Stack(("encoder.layer",), "encoder", keep_positions=(0,)),),
        positions_after_pad=True,
        notes="Pre-LN BERT/RoBERTa (fairseq --encoder-normalize-before): the PLD paper's block",
    )
)

DISTILBERT = register_family(
    ModelFamily(
        model_types=("distilbert",),
        stacks=(Stack(("transformer.layer",), "encoder", keep_positions=(0,)),),
        pre_layernorm=False,
        notes=_POST_LN,
    )
)

DEBERTA_V2 = register_family(
    ModelFamily(
        model_types=("deberta-v2",),
        stacks=(
            Stack(
                ("encoder.layer",),
                "encoder",
                routes={
                    "relative_pos": "pairs",
                    "query_states": "tokens",
                    "rel_embeddings": "full",
                },
                keep_positions=(0,),
                block_outputs=2,
                shared_draw=True,
            ),
        ),
        pre_layernorm=False,
        notes=(
            "kept tokens keep their original relative distances; one kept subset per batch "
            "(its attention takes relative positions shared by the batch); " + _POST_LN
        ),
    )
)

MODERNBERT = register_family(
    ModelFamily(
        model_types=("modernbert",),
        stacks=(
            Stack(
                ("layers",),
                "encoder",
                routes={"position_embeddings": "tokens"},
                keep_positions=(0,),
            ),
        ),
        notes=(
            "rotary positions and local (sliding) masks follow the kept tokens; flash-attention "
            "unpadded (varlen) inputs are refused"
        ),
    )
)

ALBERT = register_family(
    ModelFamily(
        model_types=("albert",),
        stacks=(
            Stack(
                ("encoder.albert_layer_groups",),
                "encoder",
                keep_positions=(0,),
                applications="num_hidden_layers",
            ),
        ),
        pre_layernorm=False,
        notes="one shared layer run at every depth: PLD and random-LTD act per application; "
        + _POST_LN,
    )
)
