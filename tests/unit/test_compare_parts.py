"""The comparison's recipe arms, budget scaling and analytic FLOP count."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from leantrain.compare import ModelShape, block_flops, run_flops, step_flops
from leantrain.compare.arms import (
    arm_recipe,
    budgets_from,
    parse_arms,
    recipe_techniques,
    scale_to_budget,
)
from leantrain.config import LeantrainConfig, load_config
from leantrain.errors import ConfigError
from leantrain.pld.schedule import expected_keep_fraction

#: The technique sections of `raw_recipe()`.
TECHNIQUE_SECTIONS = ("progressive_layer_drop", "curriculum_learning", "data_efficiency")


def raw_recipe() -> dict:
    return {
        "task": "causal_lm",
        "model": {"family": "gpt2", "config": {"n_layer": 6}},
        "data": {"seq_len": 256},
        "optim": {"max_steps": 400, "warmup_steps": 20, "micro_batch_size": 16},
        "progressive_layer_drop": {"enabled": True, "theta": 0.5, "gamma": 0.01},
        "curriculum_learning": {
            "enabled": True,
            "schedule_type": "fixed_linear",
            "schedule_config": {"total_curriculum_step": 160, "difficulty_step": 8},
        },
        "data_efficiency": {
            "enabled": True,
            "data_routing": {
                "enabled": True,
                "random_ltd": {
                    "enabled": True,
                    "random_ltd_schedule": {
                        "min_value": 64,
                        "max_value": 256,
                        "schedule_config": {"require_steps": 400, "seq_per_step": 16},
                    },
                    "layer_token_lr_schedule": {
                        "enabled": True,
                        "total_layer_tokens": 4_000_000,
                        "warmup_layer_tokens": 491_520,
                    },
                },
            },
        },
    }


def test_arms_keep_only_their_techniques() -> None:
    raw = raw_recipe()
    assert recipe_techniques(raw) == {"pld", "cl", "ltd"}
    base = arm_recipe(raw, "baseline")
    assert recipe_techniques(base) == set()
    assert "data_efficiency" not in base and "progressive_layer_drop" not in base
    assert recipe_techniques(arm_recipe(raw, "pld+ltd")) == {"pld", "ltd"}
    assert recipe_techniques(arm_recipe(raw, "leantrain")) == {"pld", "cl", "ltd"}
    assert raw == raw_recipe()  # the input is not modified


def test_without_random_ltd_a_layer_token_lr_decays_by_steps() -> None:
    raw = raw_recipe()
    raw["optim"]["decay"] = "layer_tokens"
    base = arm_recipe(raw, "cl")
    # 491,520 layer-tokens of warmup at 16 x 256 tokens x 6 layers per step = 20 steps
    assert base["optim"]["decay"] == "cosine" and base["optim"]["warmup_steps"] == 20
    assert arm_recipe(raw, "ltd")["optim"]["decay"] == "layer_tokens"


def test_parse_arms_puts_the_baseline_first_and_names_bad_arms() -> None:
    have = frozenset({"pld", "ltd"})
    assert parse_arms("pld,baseline,pld+ltd", have) == ["baseline", "pld", "pld+ltd"]
    with pytest.raises(ConfigError, match="'cl'.*does not enable"):
        parse_arms("cl", have)
    with pytest.raises(ConfigError, match="not an arm"):
        parse_arms("pld+pld", have)
    with pytest.raises(ConfigError, match="besides the baseline"):
        parse_arms("baseline", have)
    with pytest.raises(ConfigError, match="budgets"):
        budgets_from("100,0")
    assert budgets_from("400,100,100") == [100, 400]


def test_every_schedule_scales_with_the_budget() -> None:
    run = scale_to_budget(raw_recipe(), 100, reference=400)
    assert run["optim"]["max_steps"] == 100 and run["optim"]["warmup_steps"] == 5
    assert run["progressive_layer_drop"]["gamma"] == pytest.approx(0.04)
    assert run["curriculum_learning"]["schedule_config"]["total_curriculum_step"] == 40
    ltd = run["data_efficiency"]["data_routing"]["random_ltd"]
    assert ltd["random_ltd_schedule"]["schedule_config"]["require_steps"] == 100
    assert ltd["layer_token_lr_schedule"]["total_layer_tokens"] == 1_000_000
    same = scale_to_budget(raw_recipe(), 400, reference=400)
    assert same == {**raw_recipe(), "optim": same["optim"]} and same["optim"]["warmup_steps"] == 20


def test_data_efficiency_curriculum_metrics_scale_too() -> None:
    raw = {
        "optim": {"max_steps": 1000},
        "data_efficiency": {
            "data_sampling": {
                "curriculum_learning": {
                    "curriculum_metrics": {
                        "seqlen": {"schedule_config": {"total_curriculum_step": 300}},
                        "voc": {"schedule_config": {"max_step": [100, 500]}},
                    }
                }
            }
        },
    }
    metrics = scale_to_budget(raw, 500, reference=1000)["data_efficiency"]["data_sampling"][
        "curriculum_learning"
    ]["curriculum_metrics"]
    assert metrics["seqlen"]["schedule_config"]["total_curriculum_step"] == 150
    assert metrics["voc"]["schedule_config"]["max_step"] == [50, 250]


SHAPE = ModelShape(layers=12, dim=768, ffn=3072, vocab=50304)


def test_flops_match_the_usual_6nd_rule_where_attention_is_small() -> None:
    # 6 · parameters · tokens for the blocks and head, plus attention's quadratic term
    s = 1024
    params = 12 * (4 * 768**2 + 2 * 768 * 3072) + 768 * 50304
    attention = 12 * 4 * s * s * 768
    assert step_flops(SHAPE, samples=1, seq_len=s) == pytest.approx(6 * params * s + 3 * attention)


def test_pld_and_random_ltd_reduce_block_flops_as_their_counters_say() -> None:
    full = step_flops(SHAPE, samples=8, seq_len=512)
    head = 3 * 8 * 2 * 512 * 768 * 50304
    keep = [1 - (i + 1) / 12 * 0.5 for i in range(12)]
    pld = step_flops(SHAPE, samples=8, seq_len=512, keep_probs=keep)
    assert (pld - head) / (full - head) == pytest.approx(expected_keep_fraction(12, 0.5))
    ltd = step_flops(SHAPE, samples=8, seq_len=512, ltd_layer_ids=range(1, 11), reserved_length=256)
    half = block_flops(SHAPE, 256) / block_flops(SHAPE, 512)
    assert (ltd - head) / (full - head) == pytest.approx((2 + 10 * half) / 12)
    assert half < 0.5  # attention is quadratic: half the length costs less than half


def test_run_flops_reads_each_steps_schedule() -> None:
    raw = raw_recipe()
    raw["curriculum_learning"].update(
        curriculum_type="seqlen", min_difficulty=8, max_difficulty=128
    )
    config = load_config({k: raw[k] for k in TECHNIQUE_SECTIONS})
    rows = [
        {"step": 1.0, "pld/theta": 1.0, "curriculum/difficulty": 64.0},
        {"step": 2.0, "pld/theta": 0.5, "curriculum/difficulty": 128.0},
        {"step": 3.0, "random_ltd/reserved_length": 32.0, "curriculum/difficulty": 96.0},
    ]
    got = run_flops(rows, SHAPE, samples=4, seq_len=128, config=config)
    keep = [1 - (i + 1) / 12 * 0.5 for i in range(12)]
    want = (
        step_flops(SHAPE, samples=4, seq_len=64)
        + step_flops(SHAPE, samples=4, seq_len=128, keep_probs=keep)
        + step_flops(SHAPE, samples=4, seq_len=96, ltd_layer_ids=range(1, 11), reserved_length=32)
    )
    assert got == pytest.approx(want)
    with pytest.raises(ValueError, match="log_interval"):
        run_flops([{"step": 2.0}], SHAPE, samples=1, seq_len=8, config=config)


def test_run_flops_counts_folded_rows_and_ignores_a_curriculum_that_cuts_nothing() -> None:
    def curriculum(metric: str) -> LeantrainConfig:
        section = {
            "enabled": True,
            "curriculum_metrics": {
                metric: {
                    "difficulty_type": "value",
                    "clustering_type": "single_cluster",
                    "min_difficulty": 32,
                    "max_difficulty": 128,
                    "schedule_type": "fixed_linear",
                    "schedule_config": {"total_curriculum_step": 10, "difficulty_step": 8},
                }
            },
        }
        sampling = {"enabled": True, "curriculum_learning": section}
        return load_config({"data_efficiency": {"enabled": True, "data_sampling": sampling}})

    row = [{"step": 1.0, "curriculum/difficulty": 48.0}]
    # 2 micro-batches of 2 rows of 128 tokens fold into 2 x ceil(2 * 128 / 48) = 12 rows of 48
    folded = run_flops(
        row, SHAPE, samples=4, seq_len=128, config=curriculum("seqlen_reshape"), micro_batches=2
    )
    assert folded == pytest.approx(step_flops(SHAPE, samples=12, seq_len=48))
    kept = run_flops(row, SHAPE, samples=4, seq_len=128, config=curriculum("vocabularyrarity"))
    assert kept == pytest.approx(step_flops(SHAPE, samples=4, seq_len=128))


@given(st.integers(1, 2048), st.integers(1, 2048))
def test_block_flops_grow_with_length(a: int, b: int) -> None:
    lo, hi = sorted((a, b))
    assert block_flops(SHAPE, lo) <= block_flops(SHAPE, hi)
