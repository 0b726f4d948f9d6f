"""Causal language models: learned, rotary and ALiBi positions, dense and mixture-of-experts.

Their blocks take the hidden states, a causal (+ padding, sliding-window) mask and the positions
of the tokens; random-LTD gathers all three with the kept tokens, so a kept token keeps its
original position and attends only to kept tokens before it.
"""

from __future__ import annotations

from leantrain.models.registry import ROTARY, ModelFamily, MoeRouter, Stack, register_family

__all__ = ["ALIBI", "GPT2", "GPTJ", "MOE", "OPT", "ROTARY_DECODERS"]

GPT2 = register_family(
    ModelFamily(
        model_types=("gpt2",),
        stacks=(Stack(("h",), "decoder", routes={"position_ids": "tokens"}),),
        notes="learned absolute positions",
    )
)

OPT = register_family(
    ModelFamily(
        model_types=("opt",),
        stacks=(Stack(("decoder.layers",), "decoder", routes={"position_ids": "tokens"}),),
        notes="learned positions; OPT-350m is Post-LN (do_layer_norm_before=False)",
    )
)

ROTARY_DECODERS = register_family(
    ModelFamily(
        model_types=(
            "llama",
            "mistral",
            "qwen2",
            "qwen3",
            "gpt_neox",
            "phi",
            "phi3",
            "gemma",
            "gemma2",
            "gemma3_text",
            "olmo2",
            "starcoder2",
            "cohere",
        ),
        stacks=(Stack(("layers",), "decoder", routes=ROTARY),),
        notes="rotary positions follow the kept tokens (and sliding-window masks, where configured)",
    )
)

GPTJ = register_family(
    ModelFamily(
        model_types=("gptj",),
        stacks=(Stack(("h",), "decoder", routes=ROTARY),),
        notes="rotary positions (interleaved) follow the kept tokens",
    )
)

ALIBI = register_family(
    ModelFamily(
        model_types=("bloom", "falcon"),
        stacks=(Stack(("h",), "decoder", routes={"alibi": "alibi", **ROTARY}, block_outputs=2),),
        notes="ALiBi biases follow the kept tokens (Falcon: rotary by default, ALiBi with alibi=True)",
    )
)

MOE = register_family(
    ModelFamily(
        model_types=("mixtral", "qwen2_moe", "qwen3_moe"),
        stacks=(Stack(("layers",), "decoder", routes=ROTARY),),
        moe=MoeRouter(),
        notes="router aux loss counts only the tokens each router saw",
    )
)
