"""Random-LTD specifics the surgery grid (test_grid.py) does not cover: what is drawn, rotary
positions against a forward on the gathered sequence, padding-only sampling, ranks,
checkpointing, seq-first custom blocks, DeepSpeed checkpoints, errors and recompiles."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest
import torch
from conftest import MODEL_FACTORIES, make_inputs
from torch import Tensor, nn
from transformers import PreTrainedModel

from leantrain.errors import ConfigError
from leantrain.models import find_block_list
from leantrain.random_ltd import (
    RandomLTDScheduler,
    convert_to_random_ltd,
    kept_indices,
    random_ltd_scheduler_of,
    remove_random_ltd_state_dict,
    revert_random_ltd,
)
from leantrain.surgery import SurgeryError, conversions

pytestmark = pytest.mark.usefixtures("one_thread")

ATTN = ["eager", "sdpa"]
MIN_FLOAT = torch.finfo(torch.float32).min


def _scheduler(min_value: int = 8, max_value: int = 64, **extra: Any) -> RandomLTDScheduler:
    return RandomLTDScheduler(
        {
            "random_ltd_schedule": {
                "min_value": min_value,
                "max_value": max_value,
                "schedule_config": {"require_steps": 10, "seq_per_step": 4},
            },
            "global_batch_size": 3,
            **extra,
        }
    )


def _build(arch: str, attn: str, **extra: Any) -> tuple[PreTrainedModel, RandomLTDScheduler]:
    torch.manual_seed(0)
    model = MODEL_FACTORIES[arch](attn=attn)
    sched = _scheduler(**extra)
    convert_to_random_ltd(model, sched)
    return model, sched


def _out(model: PreTrainedModel, inputs: dict[str, Tensor], seed: int = 0) -> Tensor:
    torch.manual_seed(seed)
    return model(**inputs).logits


def _capture(block: nn.Module) -> dict[str, Any]:
    """Record the args of the block's next call and its output (hidden states only)."""
    seen: dict[str, Any] = {}

    def pre(_: nn.Module, args: tuple[Any, ...]) -> None:
        seen["args"] = args

    def post(_: nn.Module, args: tuple[Any, ...], out: Any) -> None:
        seen["out"] = out[0] if isinstance(out, tuple) else out
        for handle in handles:
            handle.remove()

    handles = [block.register_forward_pre_hook(pre), block.register_forward_hook(post)]
    return seen


@pytest.mark.parametrize("arch", ["gpt2", "bert", "vit"])
def test_dropping_runs_each_layer_on_its_own_subset(arch: str) -> None:
    model, sched = _build(arch, "sdpa")
    model.train()
    block = find_block_list(model).blocks[1]
    seen = _capture(block)
    inputs = make_inputs(arch)
    out = _out(model, inputs)
    out.float().pow(2).mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    kept = kept_indices(model)
    seq = inputs.get("input_ids", torch.empty(3, 17)).shape[1]
    for idx in kept.values():
        assert idx is not None and idx.shape == (3, sched.current_seq)
        assert (idx[:, 1:] > idx[:, :-1]).all() and idx.min() >= 0 and idx.max() < seq
        assert len({tuple(row.tolist()) for row in idx}) > 1  # samples differ
    assert not torch.equal(kept[1], kept[2])  # layers differ
    if arch in ("bert", "vit"):  # the CLS token is kept by default
        assert all((idx[:, 0] == 0).all() for idx in kept.values() if idx is not None)
    hidden, result = seen["args"][0], seen["out"]
    dropped = torch.ones(hidden.shape[:2], dtype=torch.bool).scatter(1, kept[1], False)
    assert torch.equal(result[dropped], hidden[dropped])  # dropped tokens skip the layer
    assert not torch.equal(result[~dropped], hidden[~dropped])


def _hand_mask(valid: Tensor, idx: Tensor, causal: bool) -> Tensor:
    """Additive [B, 1, r, r] mask of the kept tokens, built from the 2D padding mask."""
    keys = valid.bool().gather(1, idx)[:, None, None, :]  # [B, 1, 1, r]
    allowed = keys.expand(-1, 1, idx.shape[1], -1)
    if causal:
        allowed = allowed & (idx[:, None, None, :] <= idx[:, None, :, None])
    return torch.zeros(allowed.shape).masked_fill(~allowed, MIN_FLOAT)


def _run_plain_block(
    model: PreTrainedModel, layer: int, inputs: dict[str, Tensor], reference: Callable[..., Tensor]
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Run `model` dropping (seeded), then the plain block on the kept tokens by hand."""
    block = find_block_list(model).blocks[layer]
    seen = _capture(block)
    _out(model, inputs, seed=5)
    idx = kept_indices(model)[layer]
    assert idx is not None
    revert_random_ltd(model)
    hidden = seen["args"][0]
    kept = hidden.gather(1, idx[..., None].expand(-1, -1, hidden.shape[-1]))  # [B, r, D]
    ref = reference(block, kept, idx)
    return seen["out"].gather(1, idx[..., None].expand_as(ref)), ref, hidden, idx


@pytest.mark.parametrize("attn", ATTN)
def test_rotary_positions_follow_the_kept_tokens(attn: str) -> None:
    """The routed block equals the plain block run on the gathered sequence with the kept
    tokens' original position ids (the grid checks every family the other way round: the full
    sequence with the dropped tokens masked out)."""
    model, _ = _build("llama", attn)
    model.train()
    inputs = make_inputs("llama")
    valid = inputs["attention_mask"]

    def reference(block: nn.Module, kept: Tensor, idx: Tensor) -> Tensor:
        cos_sin = model.model.rotary_emb(kept, position_ids=idx)  # positions of the kept tokens
        mask = _hand_mask(valid, idx, causal=True)
        return block(kept, attention_mask=mask, position_ids=idx, position_embeddings=cos_sin)

    got, ref, _, idx = _run_plain_block(model, 1, inputs, reference)
    real = valid.bool().gather(1, idx)
    torch.testing.assert_close(got[real], ref[real], rtol=1e-5, atol=1e-5)


def test_sampling_among_real_tokens_only() -> None:
    model, _ = _build("bert", "sdpa", sample_non_padding_only=True, keep_positions=[])
    model.train()
    inputs = make_inputs("bert", batch=4)  # lengths 16, 14, 12, 10 >= r = 8
    _out(model, inputs)
    for idx in kept_indices(model).values():
        assert idx is not None and inputs["attention_mask"].gather(1, idx).bool().all()


def _mostly_padding(arch: str) -> dict[str, Tensor]:
    """16-token rows with 3 real tokens each (SST-2 padded to 64 looks like this)."""
    inputs = make_inputs(arch, batch=4)
    inputs["attention_mask"] = torch.zeros_like(inputs["attention_mask"])
    inputs["attention_mask"][:, :3] = 1
    return inputs


def test_encoders_keep_real_tokens_first_by_default(caplog: pytest.LogCaptureFixture) -> None:
    """BERT's padded batches would spend r on padding with DeepSpeed's draw; the default keeps
    every real token (r = 8 > 3), with no warning."""
    model, _ = _build("bert", "eager", keep_positions=[])
    model.train()
    inputs = _mostly_padding("bert")
    with caplog.at_level(logging.WARNING, logger="leantrain"):
        _out(model, inputs)
    for idx in kept_indices(model).values():
        assert idx is not None and int(inputs["attention_mask"].gather(1, idx).sum()) == 4 * 3
    assert not caplog.records


@pytest.mark.parametrize(
    ("arch_name", "extra"),
    [("bert", {"sample_non_padding_only": False}), ("gpt2", {})],
    ids=["encoder-deepspeed-draw", "decoder-default"],
)
def test_a_padding_blind_draw_warns_once_when_it_keeps_mostly_padding(
    arch_name: str, extra: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """DeepSpeed's draw (one key away for encoders, the default for decoders) keeps padding;
    when most kept tokens are padding, one warning says which key changes that."""
    model, _ = _build(arch_name, "eager", keep_positions=[], **extra)
    model.train()
    inputs = _mostly_padding(arch_name)
    with caplog.at_level(logging.WARNING, logger="leantrain"):
        for seed in range(6):
            _out(model, inputs, seed=seed)
    kept = [idx for idx in kept_indices(model).values() if idx is not None]
    assert any(int(inputs["attention_mask"].gather(1, idx).sum()) < 4 * 3 for idx in kept)
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 1
    assert "are padding" in warned[0] and "sample_non_padding_only: true" in warned[0]


def test_ranks_draw_different_subsets_from_the_same_seed() -> None:
    draws = []
    for rank in (0, 1):
        torch.manual_seed(0)
        model = MODEL_FACTORIES["gpt2"]().train()
        convert_to_random_ltd(model, _scheduler(), data_parallel_rank=rank)
        _out(model, make_inputs("gpt2"), seed=11)
        draws.append(kept_indices(model)[1])
    assert not torch.equal(draws[0], draws[1])


def test_gradient_checkpointing_replays_the_same_draw() -> None:
    grads = []
    for checkpointing in (False, True):
        model, _ = _build("gpt2", "eager")
        model.train()
        if checkpointing:
            model.gradient_checkpointing_enable()
        _out(model, make_inputs("gpt2"), seed=7).pow(2).mean().backward()
        grads.append([p.grad.clone() for p in model.parameters() if p.grad is not None])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


class _SeqFirstBlock(nn.Module):
    """A Megatron-style block: hidden states [S, B, D], an additive mask keyword."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, 2)
        self.mlp = nn.Linear(dim, dim)

    def forward(self, hidden: Tensor, *, mask: Tensor) -> tuple[Tensor, None]:
        attn_mask = mask.repeat_interleave(2, dim=0)[:, 0]  # [B·heads, S, S]
        h = hidden + self.attn(hidden, hidden, hidden, attn_mask=attn_mask, need_weights=False)[0]
        return h + self.mlp(h), None


class _SeqFirstModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleList(_SeqFirstBlock(8) for _ in range(3))


def test_seq_first_custom_blocks_with_a_named_mask() -> None:
    torch.manual_seed(0)
    model = _SeqFirstModel().train()
    sched = _scheduler(
        min_value=4,
        model_mask_name="mask",
        hidden_state_order="seq_batch_dim",
        random_ltd_layer_id=[1],
    )
    convert_to_random_ltd(model, sched, layers="layers")
    hidden = torch.randn(10, 2, 8)  # [S, B, D]
    valid = torch.tensor([[1] * 10, [1] * 7 + [0] * 3])
    mask = torch.zeros(2, 1, 10, 10).masked_fill(~valid.bool()[:, None, None, :], MIN_FLOAT)
    torch.manual_seed(2)
    out, _ = model.layers[1](hidden, mask=mask)
    idx = kept_indices(model)[1]
    assert idx is not None and idx.shape == (2, 4)
    revert_random_ltd(model)
    for b in range(2):
        kept = hidden[idx[b], b : b + 1]  # [r, 1, D]
        ref, _ = model.layers[1](kept, mask=_hand_mask(valid[b : b + 1], idx[b : b + 1], False))
        torch.testing.assert_close(out[idx[b], b], ref[:, 0], rtol=1e-5, atol=1e-5)
        dropped = torch.ones(10, dtype=torch.bool).index_fill(0, idx[b], False)
        assert torch.equal(out[dropped, b], hidden[dropped, b])


def test_deepspeed_checkpoint_keys_load_into_the_plain_model() -> None:
    torch.manual_seed(0)
    model = MODEL_FACTORIES["gpt2"]()
    plain = model.state_dict()
    wrapped = {
        k.replace(".h.1.", ".h.1.random_ltd_layer.").replace(".h.2.", ".h.2.random_ltd_layer."): v
        for k, v in plain.items()
    }
    assert wrapped.keys() != plain.keys()
    stripped = remove_random_ltd_state_dict(wrapped)
    assert list(stripped) == list(plain)
    convert_to_random_ltd(model, _scheduler())
    model.load_state_dict(stripped)  # strict
    assert list(remove_random_ltd_state_dict(model.state_dict())) == list(plain)


def test_conversion_errors_are_explained() -> None:
    torch.manual_seed(0)
    model = MODEL_FACTORIES["gpt2"]()
    with pytest.raises(ConfigError, match="total_layer_num: got 12"):
        convert_to_random_ltd(model, _scheduler(total_layer_num=12))
    with pytest.raises(ConfigError, match=r"random_ltd_layer_id: \[7\] out of range"):
        convert_to_random_ltd(model, _scheduler(random_ltd_layer_id=[1, 7]))
    with pytest.raises(ConfigError, match="model_type: got 'encoder'"):
        convert_to_random_ltd(model, _scheduler(model_type="encoder"))
    with pytest.raises(SurgeryError, match="no layers to convert"):
        convert_to_random_ltd(model, _scheduler(random_ltd_layer_id=[]))
    with pytest.raises(ConfigError, match="model_mask_name"):
        convert_to_random_ltd(_SeqFirstModel(), _scheduler(model_mask_name="nope"), "layers")
    with pytest.raises(SurgeryError, match="torch.compile"):
        convert_to_random_ltd(torch.compile(model), _scheduler())
    assert not conversions(model)  # nothing half-done
    sched = _scheduler()
    convert_to_random_ltd(model, sched)
    assert random_ltd_scheduler_of(model) is sched and sched.total_layer_num == 4
    assert conversions(model)["random_ltd"].layer_ids == (1, 2)  # all but the first and last
    with pytest.raises(SurgeryError, match="already converted"):
        convert_to_random_ltd(model, _scheduler())
    revert_random_ltd(model)
    with pytest.raises(SurgeryError, match="not converted"):
        revert_random_ltd(model)


# Dynamo's own graph building touches `.grad` of non-leaf tensors, which warns.
@pytest.mark.filterwarnings("ignore:The .grad attribute of a Tensor that is not a leaf:UserWarning")
def test_compiled_blocks_recompile_only_per_reserved_length() -> None:
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    model, sched = _build("gpt2", "sdpa")
    model.train()
    for block in find_block_list(model).blocks:
        block.compile(backend="eager", dynamic=False)
    inputs = make_inputs("gpt2")
    graphs = []
    for step in (0, 0, 1, 1):  # r = 8, then 12: each length compiled once, new draws reuse it
        sched.update_seq(step)
        assert torch.isfinite(_out(model, inputs, seed=len(graphs))).all()
        graphs.append(counters["stats"]["unique_graphs"])
    torch._dynamo.reset()
    assert graphs[1] == graphs[0] and graphs[3] == graphs[2] > graphs[1]
