"""The settings table of the surgery grid: which tiny models, which techniques, how to drive them.

One row per model (`CASES`: a tiny config of each registered family, plus a plain PyTorch model)
and one row per technique (`TECHNIQUES`). `test_grid.py` runs every invariant of
`invariants.py` on every (model, technique) pair; the README's support matrix is generated
from these rows (`support_matrix.py`), so a row here is the claim and the grid its proof.

Adding a technique (how a new technique joins the grid): write a `TechniqueCase` with
- `name` (its conversion record's name), `title` (its support-matrix column), the `mixin`
  class it swaps in, and `revert(model)`;
- `convert(model, case, drop)`: convert in place and return the technique's controller, set so
  that the next training forwards drop something (`drop=True`) or nothing at all (`drop=False`:
  θ = 1, reserved length = full length, ...);
- `rewind_point(controller)`: a function that makes the next forward draw again what the
  forward after this call draws (the checker also reseeds torch), so two forwards compare;
- `why_not(case)`: None where the technique applies, else the reason (taken from the registry,
  so the error users see and the matrix agree);
- `dropped(model)`: whether the forwards so far dropped anything (the checks assert they did);
- `block_check(model, case, controller, inputs)`: what one converted block must compute, checked
  against the plain block (a kept PLD block is lerp(x, block(x), 1/p); a random-LTD block's kept
  tokens see exactly what the full block shows them);
then add it to `TECHNIQUES`. Every grid check then runs for it on every model, and the matrix
grows a column.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import transformers
from nanogpt import NanoGPT
from torch import Tensor, nn

from leantrain.models import family_of_type
from leantrain.pld import (
    ProgressiveLayerDrop,
    ProgressiveLayerDropMixin,
    convert_to_progressive_layer_drop,
    kept_layers,
    revert_progressive_layer_drop,
)
from leantrain.random_ltd import (
    RandomLTDMixin,
    RandomLTDScheduler,
    convert_to_random_ltd,
    kept_indices,
    revert_random_ltd,
)

__all__ = [
    "CASES",
    "TECHNIQUES",
    "ModelCase",
    "TechniqueCase",
    "build",
    "forward",
    "fresh",
    "labels_for",
    "make_inputs",
    "outputs",
]

VOCAB = 97
SEQ = 16  # tokens per text sample (encoder side of a seq2seq model)
DEC_SEQ = 10  # decoder tokens of a seq2seq model
BATCH = 3
IMAGE = 16  # image side; 4x4 patches -> 16 patch tokens

Task = Literal["causal_lm", "masked_lm", "image", "seq2seq", "plain_lm"]
AUTO_CLASS = {
    "causal_lm": "AutoModelForCausalLM",
    "masked_lm": "AutoModelForMaskedLM",
    "image": "AutoModelForImageClassification",
    "seq2seq": "AutoModelForSeq2SeqLM",
}
_TOKENS = {"pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}


@dataclass(frozen=True)
class ModelCase:
    """One model row: a tiny model of one family and how to feed it."""

    id: str
    #: HF `model_type` (None: the plain PyTorch model).
    model_type: str | None
    task: Task
    #: HF config fields (tiny: hidden 32, 3 blocks, vocabulary 97; dropout is zeroed anyway).
    config: dict[str, Any] = field(default_factory=dict)
    #: `layers=` for both techniques (plain models) or for random-LTD only (`ltd_layers`).
    layers: str | None = None
    ltd_layers: str | None = None
    #: Which stack of the family random-LTD converts (1: the decoder of an encoder-decoder).
    ltd_stack: int = 0
    #: What `leantrain train` builds this family as (`task` of a recipe).
    trainer_task: str | None = None
    #: The techniques this row is for (None: all); a variant row (Falcon with ALiBi, the
    #: decoder stack of an encoder-decoder) only runs what it adds to its main row.
    techniques: tuple[str, ...] | None = None

    @property
    def causal(self) -> bool:
        """Whether the output sequence is causal (later tokens must not change earlier ones)."""
        return self.task in ("causal_lm", "plain_lm", "seq2seq")


_DECODER = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 64,
}
_GEMMA = {**_DECODER, "head_dim": 8}
_MOE = {"num_experts": 4, "num_experts_per_tok": 2, "output_router_logits": True}
_BERT = {
    "hidden_size": 32,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "intermediate_size": 64,
    "max_position_embeddings": 64,
}
_VISION = {
    "image_size": IMAGE,
    "patch_size": 4,
    "hidden_size": 32,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "intermediate_size": 64,
    "num_labels": 10,
}
_T5 = {"d_model": 32, "d_kv": 8, "d_ff": 64, "num_layers": 3, "num_heads": 4}
_T5.update(relative_attention_num_buckets=8, decoder_start_token_id=0)
_BART = {"d_model": 32, "encoder_layers": 3, "decoder_layers": 3, "max_position_embeddings": 64}
_BART.update(encoder_attention_heads=4, decoder_attention_heads=4)
_BART.update(encoder_ffn_dim=64, decoder_ffn_dim=64, decoder_start_token_id=2)

CASES: tuple[ModelCase, ...] = (
    # decoders: learned, rotary (plain, interleaved, partial, sliding-window), ALiBi, MoE
    ModelCase(
        "gpt2", "gpt2", "causal_lm", {"n_embd": 32, "n_layer": 3, "n_head": 4, "n_positions": 64}
    ),
    ModelCase("opt", "opt", "causal_lm", {**_DECODER, "ffn_dim": 64, "word_embed_proj_dim": 32}),
    ModelCase("llama", "llama", "causal_lm", _DECODER),
    ModelCase("mistral", "mistral", "causal_lm", {**_DECODER, "sliding_window": 6}),
    ModelCase("qwen2", "qwen2", "causal_lm", _DECODER),
    ModelCase("qwen3", "qwen3", "causal_lm", {**_DECODER, "head_dim": 8}),
    ModelCase("gpt_neox", "gpt_neox", "causal_lm", _DECODER),
    ModelCase(
        "gptj", "gptj", "causal_lm", {"n_embd": 32, "n_layer": 3, "n_head": 4, "rotary_dim": 4}
    ),
    ModelCase("phi", "phi", "causal_lm", _DECODER),
    ModelCase("phi3", "phi3", "causal_lm", _DECODER),
    ModelCase("gemma", "gemma", "causal_lm", _GEMMA),
    ModelCase("gemma2", "gemma2", "causal_lm", {**_GEMMA, "sliding_window": 6}),
    ModelCase("gemma3_text", "gemma3_text", "causal_lm", {**_GEMMA, "sliding_window": 6}),
    ModelCase("olmo2", "olmo2", "causal_lm", _DECODER),
    ModelCase("starcoder2", "starcoder2", "causal_lm", _DECODER),
    ModelCase("cohere", "cohere", "causal_lm", _DECODER),
    ModelCase("bloom", "bloom", "causal_lm", {"hidden_size": 32, "n_layer": 3, "n_head": 4}),
    ModelCase("falcon", "falcon", "causal_lm", {**_DECODER, "num_kv_heads": 2}),
    ModelCase(
        "falcon-alibi",
        "falcon",
        "causal_lm",
        {**_DECODER, "alibi": True},
        techniques=("random_ltd",),
    ),
    ModelCase("mixtral", "mixtral", "causal_lm", {**_DECODER, **_MOE, "num_local_experts": 4}),
    ModelCase(
        "qwen2_moe", "qwen2_moe", "causal_lm", {**_DECODER, **_MOE, "moe_intermediate_size": 32}
    ),
    ModelCase(
        "qwen3_moe", "qwen3_moe", "causal_lm", {**_DECODER, **_MOE, "moe_intermediate_size": 32}
    ),
    # encoders: padding masks; relative positions; rotary + local/global; one shared layer
    ModelCase("bert", "bert", "masked_lm", _BERT),
    ModelCase("roberta", "roberta", "masked_lm", {**_BERT, "max_position_embeddings": 66}),
    ModelCase("xlm-roberta", "xlm-roberta", "masked_lm", {**_BERT, "max_position_embeddings": 66}),
    ModelCase(
        "roberta-prelayernorm",
        "roberta-prelayernorm",
        "masked_lm",
        {**_BERT, "max_position_embeddings": 66},
    ),
    ModelCase("electra", "electra", "masked_lm", {**_BERT, "embedding_size": 32}),
    ModelCase(
        "distilbert",
        "distilbert",
        "masked_lm",
        {"dim": 32, "n_layers": 3, "n_heads": 4, "hidden_dim": 64},
    ),
    ModelCase(
        "deberta-v2",
        "deberta-v2",
        "masked_lm",
        {
            **_BERT,
            "relative_attention": True,
            "position_buckets": 32,
            "pos_att_type": ["p2c", "c2p"],
            "initializer_range": 0.3,  # relative positions that matter at random init
        },
    ),
    ModelCase(
        "modernbert",
        "modernbert",
        "masked_lm",
        {
            **_BERT,
            "local_attention": 6,
            "global_attn_every_n_layers": 2,
            "cls_token_id": 1,
            "sep_token_id": 2,
        },
    ),
    ModelCase("albert", "albert", "masked_lm", {**_BERT, "embedding_size": 16}),
    # vision
    ModelCase("vit", "vit", "image", _VISION),
    ModelCase("deit", "deit", "image", {**_VISION, "architectures": []}),
    ModelCase("dinov2", "dinov2", "image", {**_VISION, "mlp_ratio": 2}),
    ModelCase(
        "swin",
        "swin",
        "image",
        {
            "image_size": IMAGE,
            "patch_size": 2,
            "embed_dim": 16,
            "depths": [2, 2],
            "num_heads": [2, 4],
        }
        | {"window_size": 2, "num_labels": 10},
    ),
    # encoder-decoder: random-LTD on the encoder by default, or on the decoder with layers=
    ModelCase("t5", "t5", "seq2seq", _T5, trainer_task="sequence_classification"),
    ModelCase(
        "t5-decoder",
        "t5",
        "seq2seq",
        _T5,
        ltd_layers="decoder.block",
        ltd_stack=1,
        techniques=("random_ltd",),
    ),
    ModelCase("bart", "bart", "seq2seq", _BART, trainer_task="masked_lm"),
    ModelCase(
        "bart-decoder",
        "bart",
        "seq2seq",
        _BART,
        ltd_layers="model.decoder.layers",
        ltd_stack=1,
        techniques=("random_ltd",),
    ),
    # any nn.ModuleList of blocks (the contract of src/leantrain/models/README.md)
    ModelCase("nanogpt", None, "plain_lm", layers="transformer.h"),
)


def build(case: ModelCase) -> nn.Module:
    """A freshly initialised (seeded) tiny model of `case`, in eval mode, dropout off."""
    torch.manual_seed(0)
    if case.model_type is None:
        return NanoGPT(vocab_size=VOCAB).eval()
    fields = dict(case.config)
    if case.task != "image":
        fields = {"vocab_size": VOCAB, **_TOKENS, **fields}
    config = transformers.AutoConfig.for_model(case.model_type, **fields)
    for key, value in config.to_dict().items():
        if isinstance(value, float) and ("dropout" in key or "pdrop" in key or "drop_path" in key):
            setattr(config, key, 0.0)
        if key.endswith("layerdrop"):
            setattr(config, key, 0.0)
    return getattr(transformers, AUTO_CLASS[case.task]).from_config(config).eval()


def make_inputs(case: ModelCase, seed: int = 0) -> dict[str, Tensor]:
    """A batch for `case`: ragged padding (real tokens first) for text, images otherwise."""
    g = torch.Generator().manual_seed(seed)
    if case.task == "image":
        return {"pixel_values": torch.randn(BATCH, 3, IMAGE, IMAGE, generator=g)}
    ids = torch.randint(3, VOCAB, (BATCH, SEQ), generator=g)
    if case.task == "plain_lm":
        return {"input_ids": ids}
    mask = torch.ones(BATCH, SEQ, dtype=torch.long)
    for i in range(1, BATCH):  # the first row is full length
        mask[i, SEQ - 3 * i :] = 0
    batch = {"input_ids": ids, "attention_mask": mask}
    if case.task == "seq2seq":
        batch["decoder_input_ids"] = torch.randint(3, VOCAB, (BATCH, DEC_SEQ), generator=g)
    return batch


def labels_for(case: ModelCase, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
    """The inputs plus the labels of the case's training loss."""
    if case.task == "image":
        return {**inputs, "labels": torch.arange(BATCH) % 10}
    if case.task == "seq2seq":
        return {**inputs, "labels": inputs["decoder_input_ids"]}
    return {**inputs, "labels": inputs["input_ids"]}


def outputs(case: ModelCase, out: Any) -> tuple[Tensor, Tensor | None]:
    """(logits, loss) of a model output."""
    if case.task == "plain_lm":
        return out
    return out.logits, out.get("loss")


def forward(model: nn.Module, case: ModelCase, inputs: dict[str, Tensor], seed: int = 0) -> Tensor:
    """The logits of one forward, torch's generator seeded first."""
    torch.manual_seed(seed)
    return outputs(case, model(**inputs))[0]


# -- techniques -------------------------------------------------------------------------------

STEADY = 10**6  # a PLD step where θ(t) = θ̄


def _pld_convert(model: nn.Module, case: ModelCase, drop: bool) -> ProgressiveLayerDrop:
    pld = ProgressiveLayerDrop(theta=0.3, gamma=0.001, seed=7)
    pld.update_state(STEADY if drop else 0)
    convert_to_progressive_layer_drop(model, pld, layers=case.layers)
    return pld


def _pld_rewind_point(pld: ProgressiveLayerDrop) -> Callable[[], None]:
    index = pld.forward_index
    return lambda: setattr(pld, "forward_index", index)


def _ltd_convert(model: nn.Module, case: ModelCase, drop: bool) -> RandomLTDScheduler:
    section: dict[str, Any] = {
        "random_ltd_schedule": {
            "min_value": 8,
            "max_value": 64,
            "schedule_config": {"require_steps": 10, "seq_per_step": 4},
        },
        "global_batch_size": BATCH,
    }
    if case.task == "plain_lm":
        section["model_type"] = "decoder"
    scheduler = RandomLTDScheduler(section)
    if not drop:
        scheduler.update_seq(100)  # r = 64, longer than every sequence here
    convert_to_random_ltd(model, scheduler, layers=case.layers or case.ltd_layers)
    return scheduler


def _ltd_why_not(case: ModelCase) -> str | None:
    family = family_of_type(case.model_type)
    return None if family is None else family.stacks[case.ltd_stack].random_ltd


def _pld_dropped(model: nn.Module) -> bool:
    kept = kept_layers(model)
    return kept is not None and not all(kept)


def _ltd_dropped(model: nn.Module) -> bool:
    return any(v is not None for v in kept_indices(model).values())


@dataclass(frozen=True)
class TechniqueCase:
    """One technique row (see the module docstring for what each field must do)."""

    name: str
    title: str
    mixin: type
    convert: Callable[[nn.Module, ModelCase, bool], Any]
    revert: Callable[[nn.Module], Any]
    rewind_point: Callable[[Any], Callable[[], None]]
    why_not: Callable[[ModelCase], str | None]
    dropped: Callable[[nn.Module], bool]
    block_check: Callable[[nn.Module, ModelCase, Any, dict[str, Tensor]], None]


def _pld_block_check(*args: Any) -> None:
    from blocks import pld_block_check  # it imports this module

    pld_block_check(*args)


def _ltd_block_check(*args: Any) -> None:
    from blocks import ltd_block_check  # it imports this module

    ltd_block_check(*args)


TECHNIQUES: tuple[TechniqueCase, ...] = (
    TechniqueCase(
        "pld",
        "PLD",
        ProgressiveLayerDropMixin,
        _pld_convert,
        revert_progressive_layer_drop,
        _pld_rewind_point,
        lambda case: None,
        _pld_dropped,
        _pld_block_check,
    ),
    TechniqueCase(
        "random_ltd",
        "random-LTD",
        RandomLTDMixin,
        _ltd_convert,
        revert_random_ltd,
        lambda scheduler: lambda: None,
        _ltd_why_not,
        _ltd_dropped,
        _ltd_block_check,
    ),
)


def fresh(plain: nn.Module) -> nn.Module:
    """A private copy of a shared plain model (built once per test module)."""
    return copy.deepcopy(plain)
