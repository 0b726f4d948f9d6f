"""Random-LTD reserved-length schedule, layer-token counts, state and the layer-token LR."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from leantrain import load_config
from leantrain.config import RandomLTDConfig
from leantrain.errors import ConfigError, LeantrainError
from leantrain.random_ltd import (
    LayerTokenLRScheduler,
    RandomLTDScheduler,
    layer_token_lr_multiplier,
    reserved_length,
    resolve_random_ltd_config,
)

# The random_ltd sections of DeepSpeed's examples, as their JSON configs write them.
GPT2_FINETUNE = {
    "enabled": True,
    "total_layer_num": 12,
    "random_ltd_layer_num": 10,
    "random_ltd_layer_id": list(range(1, 11)),
    "model_mask_name": "attention_mask",
    "model_type": "decoder",
    "hidden_state_order": "batch_seq_dim",
    "random_ltd_schedule": {
        "min_value": 128,
        "max_value": 1024,
        "schedule_type": "fixed_linear",
        "schedule_config": {"require_steps": 400, "seq_per_step": 8},
    },
    "layer_token_lr_schedule": {"enabled": False},
    "global_batch_size": 4,
    "micro_batch_size": 4,
}
BERT_PRETRAIN = {
    "enabled": True,
    "total_layer_num": 24,
    "random_ltd_layer_num": 22,
    "random_ltd_layer_id": list(range(1, 23)),
    "model_mask_name": "attention_mask",
    "model_type": "encoder",
    "hidden_state_order": "seq_batch_dim",
    "random_ltd_schedule": {
        "min_value": 128,
        "max_value": 512,
        "schedule_type": "fixed_linear",
        "schedule_config": {"require_steps": 200000, "seq_per_step": 16},
    },
    "layer_token_lr_schedule": {"enabled": False},
    "global_batch_size": 1024,
    "micro_batch_size": 16,
}
VIT_CIFAR = {
    "enabled": True,
    "total_layer_num": 12,
    "random_ltd_layer_num": 10,
    "random_ltd_layer_id": list(range(1, 11)),
    "model_mask_name": None,
    "model_type": "encoder",
    "hidden_state_order": "batch_seq_dim",
    "random_ltd_schedule": {
        "min_value": 32,
        "max_value": 197,
        "schedule_type": "fixed_linear",
        "schedule_config": {"require_steps": 3910, "seq_per_step": 8},
    },
    "layer_token_lr_schedule": {"enabled": False},
    "global_batch_size": 32,
    "micro_batch_size": 32,
}


def _whole(section: dict[str, Any]) -> dict[str, Any]:
    return {
        "train_batch_size": section["global_batch_size"],
        "data_efficiency": {
            "enabled": True,
            "seed": 1234,
            "data_routing": {"enabled": True, "random_ltd": section},
        },
    }


def _hand_reserved(t: int, lo: int, hi: int, steps: int, per: int) -> int:
    r = math.floor(t / steps * (hi - lo) + lo)
    r = r - r % per
    while r < lo:
        r += per
    return min(r, hi)


@pytest.mark.parametrize("section", [GPT2_FINETUNE, BERT_PRETRAIN, VIT_CIFAR])
def test_reference_example_sections_load(section: dict[str, Any]) -> None:
    whole = load_config(_whole(section))
    assert whole.random_ltd_enabled
    for form in (section, whole, whole.random_ltd, _whole(section)):
        sched = RandomLTDScheduler(form)
        assert sched.min_value == section["random_ltd_schedule"]["min_value"]
        assert sched.random_ltd_layer_num == section["random_ltd_layer_num"]
    assert (
        resolve_random_ltd_config(RandomLTDScheduler(section)).model_type == section["model_type"]
    )


def test_gpt2_example_schedule_by_hand() -> None:
    sched = RandomLTDScheduler(GPT2_FINETUNE)
    assert [sched.reserved_length(t) for t in (0, 1, 50, 100, 200, 399, 400, 10_000)] == [
        128,
        128,
        240,
        352,
        576,
        1016,
        1024,
        1024,
    ]
    assert sched.update_seq(0) == 128
    assert sched.consumed_layer_tokens == 4 * (128 * 10 + 1024 * 2)


@given(
    t=st.integers(0, 5000),
    lo=st.integers(1, 600),
    span=st.integers(0, 2000),
    steps=st.integers(1, 3000),
    per=st.integers(1, 64),
)
def test_reserved_length_matches_hand_formula(
    t: int, lo: int, span: int, steps: int, per: int
) -> None:
    hi = lo + span
    r = reserved_length(t, min_value=lo, max_value=hi, require_steps=steps, seq_per_step=per)
    assert r == _hand_reserved(t, lo, hi, steps, per)
    assert min(lo, hi) <= r <= hi
    assert r % per == 0 or r == hi


@pytest.mark.parametrize(
    ("lo", "per", "expected"),
    [(8, 16, 16), (10, 8, 16), (16, 8, 16), (128, 8, 128), (1, 8, 8)],
)
def test_reserved_length_never_below_min(lo: int, per: int, expected: int) -> None:
    """Newer DeepSpeed: rounding down never goes under min_value; it rounds up instead."""
    assert (
        reserved_length(0, min_value=lo, max_value=1024, require_steps=100, seq_per_step=per)
        == expected
    )


def test_update_seq_counts_each_step_once_and_is_monotone() -> None:
    sched = RandomLTDScheduler(GPT2_FINETUNE)
    total, last = 0, 0
    for step in range(0, 600, 3):
        for _ in range(2):  # gradient accumulation: same global step twice
            r = sched.update_seq(step)
        assert r == sched.get_current_seq() == sched.reserved_length(step) >= last
        total += 4 * (r * 10 + 1024 * 2)
        last = r
        assert sched.consumed_layer_tokens == total
    assert sched.metrics() == {
        "random_ltd/reserved_length": 1024,
        "random_ltd/consumed_layer_tokens": total,
    }


def test_step_advances_from_zero() -> None:
    sched = RandomLTDScheduler(GPT2_FINETUNE)
    assert [sched.step() for _ in range(3)] == [sched.reserved_length(t) for t in range(3)]
    assert sched.current_step == 2


def test_vit_layer_token_count_from_spec() -> None:
    """SPEC.md: batch 32, 197 tokens, 32 -> 197 over 3910 steps, layers 1-10 of 12 consume
    305,784,192 layer-tokens; DeepSpeed's counting reproduces it after exactly 5474 steps."""
    sched = RandomLTDScheduler(VIT_CIFAR)
    assert sched.total_layer_tokens(5474) == 305_784_192
    for step in range(5474):
        sched.update_seq(step)
    assert sched.consumed_layer_tokens == 305_784_192
    assert sched.current_seq == 197
    assert sched.total_layer_tokens(5473) < 305_784_192 < sched.total_layer_tokens(5475)


def test_layer_counts_come_from_the_model_when_absent() -> None:
    section = {
        k: v for k, v in GPT2_FINETUNE.items() if "layer_n" not in k and k != "random_ltd_layer_id"
    }
    sched = RandomLTDScheduler(section)
    sched.update_seq(0)
    with pytest.raises(ConfigError, match="total_layer_num, random_ltd_layer_num"):
        _ = sched.consumed_layer_tokens
    sched.set_layer_counts(12, 10)
    assert sched.layer_tokens_per_step(128) == 4 * (128 * 10 + 1024 * 2)
    with pytest.raises(ConfigError, match="total_layer_num: got 12 in the config; the model has 6"):
        sched.set_layer_counts(6, 4)


def test_state_dict_round_trip_and_checks() -> None:
    sched = RandomLTDScheduler(GPT2_FINETUNE)
    for step in range(37):
        sched.update_seq(step)
    state = sched.state_dict()
    fresh = RandomLTDScheduler(GPT2_FINETUNE)
    fresh.load_state_dict(state)
    assert fresh.state_dict() == state
    assert fresh.step() == sched.step()
    assert fresh.consumed_layer_tokens == sched.consumed_layer_tokens
    with pytest.raises(LeantrainError, match="version"):
        fresh.load_state_dict({**state, "version": 99})
    with pytest.raises(LeantrainError, match="min_value 64 was saved"):
        fresh.load_state_dict({**state, "min_value": 64})


def test_bad_configs_are_explained() -> None:
    with pytest.raises(ConfigError, match="random_ltd_schedule: required"):
        RandomLTDScheduler({"enabled": False})
    with pytest.raises(ConfigError, match="min_value"):
        RandomLTDScheduler(
            {
                **GPT2_FINETUNE,
                "random_ltd_schedule": {
                    "min_value": 2048,
                    "max_value": 1024,
                    "schedule_config": {"require_steps": 1, "seq_per_step": 8},
                },
            }
        )
    with pytest.raises(ConfigError, match="not enabled"):
        RandomLTDScheduler(load_config({"data_efficiency": {"enabled": False}}))
    with pytest.raises(ConfigError, match="expected a dict"):
        RandomLTDScheduler(42)
    assert isinstance(
        RandomLTDScheduler(RandomLTDConfig.model_validate(GPT2_FINETUNE)).config, RandomLTDConfig
    )


@given(
    consumed=st.integers(0, 10**7),
    warm=st.integers(0, 10**6),
    extra=st.integers(0, 10**7),
    min_ratio=st.floats(0.0, 0.5),
)
def test_layer_token_lr_multiplier_shape(
    consumed: int, warm: int, extra: int, min_ratio: float
) -> None:
    total = warm + extra + 1
    kw = {"total_layer_tokens": total, "warmup_layer_tokens": warm, "min_ratio": min_ratio}
    cos = layer_token_lr_multiplier(consumed, **kw)
    lin = layer_token_lr_multiplier(consumed, decay="linear", **kw)
    if consumed < warm:
        assert cos == lin == pytest.approx(consumed / warm)
        assert layer_token_lr_multiplier(consumed, warmup_type="constant", **kw) == 1.0
    else:
        p = min(1.0, (consumed - warm) / (total - warm))
        assert cos == pytest.approx(min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * p)))
        assert lin == pytest.approx(min_ratio + (1 - min_ratio) * (1 - p))
        assert min_ratio - 1e-12 <= min(lin, cos) <= max(lin, cos) <= 1 + 1e-12


def test_layer_token_lr_scheduler_follows_consumed_tokens() -> None:
    section = {
        **GPT2_FINETUNE,
        "layer_token_lr_schedule": {
            "enabled": True,
            "total_layer_token": 4 * 10**5,
            "warmup_layer_tokens": 5 * 10**4,
        },
    }
    sched = RandomLTDScheduler(section)
    param = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.AdamW([param], lr=1e-3)
    lr_sched = LayerTokenLRScheduler(opt, sched)
    assert opt.param_groups[0]["lr"] == 0.0
    for _ in range(40):
        sched.step()
        opt.step()
        lr_sched.step()
        expected = 1e-3 * layer_token_lr_multiplier(
            sched.consumed_layer_tokens, total_layer_tokens=4 * 10**5, warmup_layer_tokens=5 * 10**4
        )
        assert opt.param_groups[0]["lr"] == pytest.approx(expected)
    assert sched.consumed_layer_tokens > 4 * 10**5 and opt.param_groups[0]["lr"] == 0.0
    state = lr_sched.state_dict()
    assert "ltd" not in state and state["base_lrs"] == [1e-3]


def test_layer_token_lr_scheduler_needs_a_total() -> None:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(ConfigError, match="total_layer_tokens: required"):
        LayerTokenLRScheduler(opt, RandomLTDScheduler(GPT2_FINETUNE))
    lr = LayerTokenLRScheduler(
        opt, RandomLTDScheduler(GPT2_FINETUNE), total_layer_tokens=100, decay="linear"
    )
    assert lr.multiplier() == 1.0  # no warmup, nothing consumed yet
