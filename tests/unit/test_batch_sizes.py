"""`prepare`'s batch sizes follow DeepSpeed's rules; a contradicting `train_batch_size` is refused."""

from __future__ import annotations

import re

import pytest
from conftest import make_gpt2
from hypothesis import given
from hypothesis import strategies as st

import leantrain
from leantrain.config.batch import resolve_batch_sizes
from leantrain.errors import ConfigError

sizes = st.integers(1, 64)


@given(micro=sizes, steps=sizes, world=st.integers(1, 8))
def test_any_two_keys_give_the_third_as_deepspeed_derives_it(
    micro: int, steps: int, world: int
) -> None:
    total = micro * steps * world
    files = [
        {"train_batch_size": total, "train_micro_batch_size_per_gpu": micro},
        {"train_batch_size": total, "gradient_accumulation_steps": steps},
        {"train_micro_batch_size_per_gpu": micro, "gradient_accumulation_steps": steps},
        {
            "train_batch_size": total,
            "train_micro_batch_size_per_gpu": micro,
            "gradient_accumulation_steps": steps,
        },
    ]
    for extra in files:
        got = resolve_batch_sizes(
            extra, micro_batch_size=None, gradient_accumulation_steps=None, world_size=world
        )
        if "train_micro_batch_size_per_gpu" in extra or "gradient_accumulation_steps" in extra:
            assert (got.micro_batch_size, got.gradient_accumulation_steps) == (micro, steps)
        assert got.global_batch_size == total


@given(micro=sizes, steps=sizes, world=st.integers(1, 4), off=st.integers(1, 5))
def test_arguments_that_contradict_train_batch_size_are_refused(
    micro: int, steps: int, world: int, off: int
) -> None:
    total = micro * steps * world + off
    message = (
        f"train_batch_size: the config says {total}, but prepare's micro_batch_size {micro} × "
        f"prepare's gradient_accumulation_steps {steps} × world_size {world} = "
        f"{micro * steps * world}"
    )
    with pytest.raises(ConfigError, match=re.escape(message)):
        resolve_batch_sizes(
            {"train_batch_size": total},
            micro_batch_size=micro,
            gradient_accumulation_steps=steps,
            world_size=world,
        )


def test_only_train_batch_size_means_one_step_of_one_micro_batch_per_rank() -> None:
    got = resolve_batch_sizes(
        {"train_batch_size": 32},
        micro_batch_size=None,
        gradient_accumulation_steps=None,
        world_size=4,
    )
    assert (got.micro_batch_size, got.gradient_accumulation_steps, got.global_batch_size) == (
        8,
        1,
        32,
    )


def test_an_undividable_train_batch_size_names_both_values() -> None:
    with pytest.raises(
        ConfigError,
        match=r"says 4096, not a multiple of .*micro_batch_size 16 × "
        r"world_size 3 = 48",
    ):
        resolve_batch_sizes(
            {"train_batch_size": 4096},
            micro_batch_size=16,
            gradient_accumulation_steps=None,
            world_size=3,
        )


def test_auto_counts_as_not_given_and_bad_values_name_the_key() -> None:
    auto = {"train_batch_size": "auto", "train_micro_batch_size_per_gpu": "auto"}
    got = resolve_batch_sizes(auto, micro_batch_size=4, gradient_accumulation_steps=2, world_size=1)
    assert got.global_batch_size == 8
    with pytest.raises(ConfigError, match=r"gradient_accumulation_steps: got 0"):
        resolve_batch_sizes(
            {"gradient_accumulation_steps": 0},
            micro_batch_size=2,
            gradient_accumulation_steps=None,
            world_size=1,
        )


def test_prepare_refuses_a_micro_batch_that_contradicts_the_file() -> None:
    """DeepSpeed asserts here; leantrain used to count tokens with the arguments silently."""
    config = {"train_batch_size": 64, "progressive_layer_drop": {"enabled": True}}
    with pytest.raises(ConfigError, match=r"says 64, but prepare's micro_batch_size 8 × .* = 16"):
        leantrain.prepare(make_gpt2(), config, micro_batch_size=8, gradient_accumulation_steps=2)
    handle = leantrain.prepare(make_gpt2(), config, micro_batch_size=8, seq_length=16)
    assert handle.step_tokens().tokens == 64 * 16  # accumulation derived: 64 / 8 = 8 steps
