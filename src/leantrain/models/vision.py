"""Vision transformers: patch tokens with a class token (and DeiT's distillation token) up front.

Their models pass no mask in use (images have no padding), so a DeepSpeed config may give
random-LTD either `model_type`. Random-LTD keeps the special tokens by default, so the heads that read them
always see them. Windowed, hierarchical models (Swin) keep PLD only: see `SWIN`.
"""

from __future__ import annotations

from leantrain.models.registry import ModelFamily, Stack, register_family

__all__ = ["DEIT", "SWIN", "VIT"]

VIT = register_family(
    ModelFamily(
        model_types=("vit", "dinov2"),
        stacks=(Stack(("layers", "encoder.layer"), "encoder", keep_positions=(0,), patches=True),),
        notes="the class token is always kept",
    )
)

DEIT = register_family(
    ModelFamily(
        model_types=("deit",),
        stacks=(Stack(("layers",), "encoder", keep_positions=(0, 1), patches=True),),
        notes="the class and distillation tokens are always kept",
    )
)

SWIN = register_family(
    ModelFamily(
        model_types=("swin",),
        stacks=(
            Stack(
                ("encoder.layers.*.blocks",),
                "encoder",
                mask_arg=None,
                block_outputs=2,
                random_ltd=(
                    "its blocks attend within windows of the full H×W patch grid (and shift "
                    "them), so a block cannot run on a subset of the patches; PLD applies"
                ),
            ),
        ),
        notes="PLD over the blocks of every stage, depth-scaled across stages",
    )
)
