"""What leantrain knows about each model family, keyed by Hugging Face `model_type`.

Adding a family is one `register_family(...)` call; nothing else in the package branches on
architecture names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from torch import nn

from leantrain.errors import LeantrainError

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


class UnknownModelError(LeantrainError, ValueError):
    """No block list was found or given for a model."""


@dataclass(frozen=True)
class ModelFamily:
    """How to find and call the transformer blocks of one model family."""

    model_types: tuple[str, ...]
    #: Candidate paths of the block `nn.ModuleList`, matched as a dotted suffix of the module
    #: names so heads (`BertForMaskedLM.bert.encoder.layer`) and bare models both match.
    block_paths: tuple[str, ...]
    #: encoder: bidirectional with padding masks; decoder: causal.
    kind: Literal["encoder", "decoder"]
    #: Name of the block forward's attention-mask argument (None: the block takes no mask).
    mask_arg: str | None = "attention_mask"
    #: Name of the argument carrying rotary (cos, sin) embeddings, if the block takes them.
    rotary_arg: str | None = None
    #: Name of the argument carrying position ids, if the block takes them.
    position_ids_arg: str | None = None
    #: Token positions that random-LTD keeps by default (the CLS token of BERT and ViT).
    keep_positions: tuple[int, ...] = ()
    #: Whether blocks are Pre-LayerNorm (PLD is meant for Pre-LN; Post-LN gets a warning).
    pre_layernorm: bool = True
    #: RoBERTa-style learned positions: ids start at `pad_token_id + 1`, so a model reading
    #: S tokens needs `max_position_embeddings >= S + pad_token_id + 1` (BERT-style: >= S).
    positions_after_pad: bool = False
    #: Free-form notes shown in docs and errors.
    notes: str = field(default="", compare=False)


_REGISTRY: dict[str, ModelFamily] = {}


def register_family(family: ModelFamily) -> ModelFamily:
    """Add (or replace) a model family; returns it so it can be used as a constant."""
    for model_type in family.model_types:
        _REGISTRY[model_type] = family
    return family


def registered_model_types() -> list[str]:
    """Every `model_type` leantrain finds blocks for without help."""
    return sorted(_REGISTRY)


def family_of(model: nn.Module) -> ModelFamily | None:
    """The registered family of a Hugging Face model, or None (no config, or not registered)."""
    config = getattr(model, "config", None)
    return family_of_type(getattr(config, "model_type", None))


def family_of_type(model_type: object) -> ModelFamily | None:
    """The registered family of a Hugging Face `model_type` string, or None."""
    return _REGISTRY.get(model_type) if isinstance(model_type, str) else None


@dataclass(frozen=True)
class BlockList:
    """The blocks a technique edits: the `nn.ModuleList`, its dotted path, and the family."""

    path: str
    blocks: nn.ModuleList
    family: ModelFamily | None

    def __len__(self) -> int:
        return len(self.blocks)


def find_block_list(model: nn.Module, layers: nn.ModuleList | str | None = None) -> BlockList:
    """Resolve the transformer block list of `model`.

    `layers` may be the `nn.ModuleList` itself, its dotted attribute path, or None to look it up
    in the registry by `model.config.model_type`.
    """
    family = family_of(model)
    if isinstance(layers, nn.ModuleList):
        for name, module in model.named_modules():
            if module is layers:
                return BlockList(name, layers, family)
        raise UnknownModelError("layers: the given nn.ModuleList is not a submodule of the model")
    if isinstance(layers, str):
        try:
            module = model.get_submodule(layers)
        except AttributeError:
            raise UnknownModelError(f"layers: the model has no submodule '{layers}'") from None
        if not isinstance(module, nn.ModuleList):
            raise UnknownModelError(
                f"layers: '{layers}' is a {type(module).__name__}; expected an nn.ModuleList"
            )
        return BlockList(layers, module, family)
    if layers is not None:
        raise UnknownModelError(
            f"layers: got {type(layers).__name__}; expected an nn.ModuleList, a dotted path or None"
        )
    if family is None:
        model_type = getattr(getattr(model, "config", None), "model_type", None)
        raise UnknownModelError(
            f"no known block list for {type(model).__name__} (model_type={model_type!r}). "
            "Pass `layers=` the nn.ModuleList of transformer blocks or its dotted path "
            "(e.g. layers='encoder.layer'), or register the family with "
            "leantrain.models.register_family. Known model types: "
            + ", ".join(registered_model_types())
        )
    matches = [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, nn.ModuleList)
        and any(name == p or name.endswith("." + p) for p in family.block_paths)
    ]
    if len(matches) != 1:
        found = [name for name, _ in matches] or "none"
        raise UnknownModelError(
            f"{type(model).__name__}: expected exactly one block list matching "
            f"{list(family.block_paths)}, found {found}; pass `layers=` to choose"
        )
    name, module = matches[0]
    assert isinstance(module, nn.ModuleList)
    return BlockList(name, module, family)


BERT = register_family(
    ModelFamily(
        model_types=("bert", "roberta", "xlm-roberta"),
        block_paths=("encoder.layer",),
        kind="encoder",
        keep_positions=(0,),
        pre_layernorm=False,
        notes="Post-LN: PLD is meant for Pre-LN blocks (see the PLD method card).",
    )
)
ROBERTA_PRELN = register_family(
    ModelFamily(
        model_types=("roberta-prelayernorm",),
        block_paths=("encoder.layer",),
        kind="encoder",
        keep_positions=(0,),
        positions_after_pad=True,
        notes="Pre-LN BERT/RoBERTa (fairseq --encoder-normalize-before): the PLD paper's block.",
    )
)
GPT2 = register_family(
    ModelFamily(
        model_types=("gpt2",),
        block_paths=("h",),
        kind="decoder",
        position_ids_arg="position_ids",
    )
)
LLAMA = register_family(
    ModelFamily(
        model_types=("llama", "mistral", "qwen2", "qwen3"),
        block_paths=("layers",),
        kind="decoder",
        rotary_arg="position_embeddings",
        position_ids_arg="position_ids",
    )
)
VIT = register_family(
    ModelFamily(
        model_types=("vit",),
        block_paths=("layers", "encoder.layer"),
        kind="encoder",
        mask_arg=None,
        keep_positions=(0,),
    )
)
