"""What leantrain knows about each model family, keyed by Hugging Face `model_type`.

A family is data: which `nn.ModuleList`s hold its blocks (its *stacks*: one for most models,
encoder and decoder for T5 or BART), how each block argument follows the tokens random-LTD keeps
(`Route`), and the few facts a technique must respect (outputs a block hands on, blocks shared
across depths, blocks that must always run). Adding a family is one `register_family(...)` call;
nothing in the package branches on architecture names. The families leantrain ships are
registered by the modules next to this one, grouped by kind of model.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from torch import nn

from leantrain.errors import LeantrainError

__all__ = [
    "ROTARY",
    "ROUTES",
    "BlockList",
    "ModelFamily",
    "MoeRouter",
    "Route",
    "Stack",
    "UnknownModelError",
    "family_of",
    "family_of_type",
    "find_block_list",
    "find_stacks",
    "register_family",
    "registered_model_types",
]

#: How one block argument follows the kept tokens when random-LTD runs a block on a subset:
#: - pairs:   per (query, key) pair of the block's own tokens, [B|1, S] or [B|1, ..., S|1, S]
#:            (attention masks, relative position ids or biases): queries and keys gathered;
#: - tokens:  per token, [B|1, S, ...] or [S, ...] (position ids, rotary cos/sin tables);
#: - queries: per (query, key of another sequence), [B|1, ..., S|1, K] (cross-attention masks
#:            and biases): queries gathered, keys untouched;
#: - alibi:   ALiBi's per-key bias with the heads folded into the batch, [B·H, 1, S];
#: - full:    passed as is (encoder outputs, tables indexed by relative distance).
Route = Literal["pairs", "tokens", "queries", "alibi", "full"]
ROUTES: tuple[Route, ...] = ("pairs", "tokens", "queries", "alibi", "full")

#: Positional-information arguments of most rotary decoders (Llama and its descendants).
ROTARY: Mapping[str, Route] = {"position_embeddings": "tokens", "position_ids": "tokens"}


class UnknownModelError(LeantrainError, ValueError):
    """No block list was found or given for a model."""


@dataclass(frozen=True, eq=False)
class Stack:
    """One sequence of blocks the model runs in order, and how to call them."""

    #: Candidate paths of the block `nn.ModuleList`, matched as a dotted suffix of the module
    #: names so heads (`BertForMaskedLM.bert.encoder.layer`) and bare models both match; `*`
    #: stands for one name, so `encoder.layers.*.blocks` joins the lists of every stage.
    block_paths: tuple[str, ...]
    #: encoder: bidirectional with padding masks; decoder: causal.
    kind: Literal["encoder", "decoder"]
    #: Name of the block forward's attention-mask argument (None: the block takes no mask).
    mask_arg: str | None = "attention_mask"
    #: Image patches: never padded, so a mask is rare and random-LTD's `model_type` (which
    #: DeepSpeed reads only to cut masks) may say either kind, as DeepSpeedExamples' ViT configs do.
    patches: bool = False
    #: Every other argument that carries per-token or per-pair data, and how it follows the
    #: kept tokens. Tensor arguments sized by the sequence that are named nowhere are refused.
    routes: Mapping[str, Route] = field(default_factory=dict)
    #: Token positions that random-LTD keeps by default (the CLS token of BERT and ViT).
    keep_positions: tuple[int, ...] = ()
    #: What a block returns: 0 for the hidden states alone, n for a tuple of n items (the hidden
    #: states first). A PLD block skipped before it ever ran returns this structure.
    block_outputs: int = 0
    #: Output slots that hand an input on to the next block (T5's position bias): a skipped or
    #: routed block returns the input it was given there, not None or a gathered copy.
    echo_outputs: Mapping[int, str] = field(default_factory=dict)
    #: Blocks PLD always runs (T5's first block computes the position bias the others reuse).
    pld_never_skip: tuple[int, ...] = ()
    #: Config attribute holding how many times the blocks run in order when they are shared
    #: across depths (ALBERT: one layer applied `num_hidden_layers` times); None: once each.
    applications: str | None = None
    #: One kept subset per batch instead of per sample (DeBERTa's attention takes relative
    #: positions shared by the whole batch).
    shared_draw: bool = False
    #: Why random-LTD cannot run these blocks on a subset of tokens (None: it can).
    random_ltd: str | None = None
    #: Blocks random-LTD refuses, with the reason (T5's first block builds the position bias).
    ltd_refused: Mapping[int, str] = field(default_factory=dict)
    #: What the stack is called in messages and records.
    name: str = "blocks"


@dataclass(frozen=True, eq=False)
class MoeRouter:
    """Where a mixture-of-experts block routes tokens, so its auxiliary loss counts only the
    tokens each router really saw when random-LTD drops some (see `random_ltd.moe`)."""

    #: Path of the router module inside a block; its output's first item is the logits [N, E].
    router: str = "mlp.gate"


@dataclass(frozen=True, eq=False)
class ModelFamily:
    """How to find and call the transformer blocks of one model family."""

    model_types: tuple[str, ...]
    #: The block stacks, the one random-LTD converts by default first.
    stacks: tuple[Stack, ...]
    #: Whether blocks are Pre-LayerNorm (PLD is meant for Pre-LN; Post-LN gets a warning).
    pre_layernorm: bool = True
    #: RoBERTa-style learned positions: ids start at `pad_token_id + 1`, so a model reading
    #: S tokens needs `max_position_embeddings >= S + pad_token_id + 1` (BERT-style: >= S).
    positions_after_pad: bool = False
    #: Mixture-of-experts routers (None: dense blocks).
    moe: MoeRouter | None = None
    #: Notes shown in the support matrix.
    notes: str = ""


_REGISTRY: dict[str, ModelFamily] = {}


def register_family(family: ModelFamily) -> ModelFamily:
    """Add (or replace) a model family; returns it so it can be used as a constant."""
    if not family.stacks:
        raise UnknownModelError(f"{family.model_types}: a family needs at least one stack")
    for stack in family.stacks:
        bad = {k: v for k, v in stack.routes.items() if v not in ROUTES}
        if bad:
            raise UnknownModelError(
                f"{family.model_types}: unknown routes {bad}; expected {ROUTES}"
            )
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


@dataclass(frozen=True, eq=False)
class BlockList:
    """One stack a technique edits: its blocks in running order, where they are, how to call them.

    `blocks` is the model's own `nn.ModuleList` when the stack is one list; a stack spread over
    several lists (Swin's stages) gets a new list holding the same modules. `owner` is the
    module whose forward runs the first block (techniques hook it to mark a new forward).
    """

    path: str
    blocks: nn.ModuleList
    family: ModelFamily | None
    stack: Stack | None
    owner: nn.Module
    #: How many block calls one forward makes (more than `len(blocks)` for shared blocks).
    depth: int

    def __len__(self) -> int:
        return self.depth

    @property
    def shared(self) -> bool:
        """Whether a block runs at several depths of one forward (ALBERT)."""
        return self.depth != len(self.blocks)


def _pattern(path: str) -> re.Pattern[str]:
    """Regex matching module names that end with the dotted `path` (`*`: one name)."""
    parts = [r"[^.]+" if p == "*" else re.escape(p) for p in path.split(".")]
    return re.compile(r"(?:^|.*\.)" + r"\.".join(parts) + r"$")


def _lists_of(model: nn.Module, stack: Stack) -> list[tuple[str, nn.ModuleList]]:
    """The `nn.ModuleList`s of `model` that one of `stack.block_paths` names, in module order."""
    patterns = [_pattern(p) for p in stack.block_paths]
    return [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, nn.ModuleList) and any(p.match(name) for p in patterns)
    ]


def _owner(model: nn.Module, path: str) -> nn.Module:
    """The closest ancestor of the list at `path` that runs a forward of its own: the module
    whose forward runs the blocks (containers such as nn.ModuleDict have no forward)."""
    parent = path.rpartition(".")[0]
    while parent and isinstance(model.get_submodule(parent), nn.ModuleDict | nn.ModuleList):
        parent = parent.rpartition(".")[0]
    return model.get_submodule(parent)


def _depth(model: nn.Module, stack: Stack | None, blocks: nn.ModuleList, path: str) -> int:
    """How many block calls one forward of the stack makes."""
    if stack is None or stack.applications is None:
        return len(blocks)
    depth = getattr(getattr(model, "config", None), stack.applications, None)
    if not isinstance(depth, int) or depth < len(blocks) or depth % max(len(blocks), 1):
        raise UnknownModelError(
            f"{path}: the {len(blocks)} shared blocks run config.{stack.applications} times; "
            f"got {depth!r}, expected a multiple of {len(blocks)}"
        )
    return depth


def _stack_block_list(
    model: nn.Module, family: ModelFamily, stack: Stack, found: list[tuple[str, nn.ModuleList]]
) -> BlockList:
    """One BlockList from the lists matched for `stack`."""
    if len(found) == 1:
        path, blocks = found[0]
    else:
        path = stack.block_paths[0]
        blocks = nn.ModuleList([b for _, lst in found for b in lst])
    owner = _owner(model, found[0][0])
    return BlockList(path, blocks, family, stack, owner, _depth(model, stack, blocks, path))


def _unknown(model: nn.Module) -> UnknownModelError:
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    return UnknownModelError(
        f"no known block list for {type(model).__name__} (model_type={model_type!r}). "
        "Pass `layers=` the nn.ModuleList of transformer blocks or its dotted path "
        "(e.g. layers='encoder.layer'), or register the family with "
        "leantrain.models.register_family. Known model types: "
        + ", ".join(registered_model_types())
    )


def find_stacks(
    model: nn.Module, layers: nn.ModuleList | str | BlockList | None = None
) -> tuple[BlockList, ...]:
    """Every block stack of `model` (encoder first), or just the one `layers` names."""
    if layers is not None:
        return (find_block_list(model, layers),)
    family = family_of(model)
    if family is None:
        raise _unknown(model)
    stacks = []
    for stack in family.stacks:
        found = _lists_of(model, stack)
        if len(found) > 1 and "*" not in "".join(stack.block_paths):
            raise UnknownModelError(
                f"{type(model).__name__}: expected one block list matching "
                f"{list(stack.block_paths)}, found {[n for n, _ in found]}; pass `layers=` to choose"
            )
        if found:
            stacks.append(_stack_block_list(model, family, stack, found))
    if not stacks:
        paths = [p for s in family.stacks for p in s.block_paths]
        raise UnknownModelError(
            f"{type(model).__name__}: no block list matching {paths} (model_type "
            f"{family.model_types[0]!r}); pass `layers=` the nn.ModuleList of its blocks"
        )
    return tuple(stacks)


def _stack_at(model: nn.Module, family: ModelFamily | None, name: str) -> Stack | None:
    """The family's stack whose paths match the module name `name`, if any."""
    if family is None:
        return None
    for stack in family.stacks:
        if any(_pattern(p).match(name) for p in stack.block_paths):
            return stack
    return None


def find_block_list(
    model: nn.Module, layers: nn.ModuleList | str | BlockList | None = None
) -> BlockList:
    """Resolve the block stack of `model` a technique converts.

    `layers` may be the `nn.ModuleList` itself, its dotted attribute path, a `BlockList`, or
    None to look it up in the registry by `model.config.model_type` (the first stack found:
    the encoder of an encoder-decoder). A given list that is one of the family's stacks (T5's
    `decoder.block`) is called the way the family says.
    """
    if isinstance(layers, BlockList):
        return layers
    family = family_of(model)
    if layers is None:
        return find_stacks(model)[0]
    if isinstance(layers, nn.ModuleList):
        name = next((n for n, m in model.named_modules() if m is layers), None)
        if name is None:
            raise UnknownModelError(
                "layers: the given nn.ModuleList is not a submodule of the model"
            )
        module: nn.Module = layers
    elif isinstance(layers, str):
        name = layers
        try:
            module = model.get_submodule(layers)
        except AttributeError:
            raise UnknownModelError(f"layers: the model has no submodule '{layers}'") from None
        if not isinstance(module, nn.ModuleList):
            raise UnknownModelError(
                f"layers: '{layers}' is a {type(module).__name__}; expected an nn.ModuleList"
            )
    else:
        raise UnknownModelError(
            f"layers: got {type(layers).__name__}; expected an nn.ModuleList, a dotted path or None"
        )
    assert isinstance(module, nn.ModuleList)
    stack = _stack_at(model, family, name)
    depth = _depth(model, stack, module, name)
    return BlockList(name, module, family, stack, _owner(model, name), depth)
