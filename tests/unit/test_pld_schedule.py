"""PLD schedule: θ(t), keep probabilities, the coins, and the ProgressiveLayerDrop controller."""

from __future__ import annotations

import itertools
import logging
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from leantrain import ConfigError, load_config
from leantrain.config import ProgressiveLayerDropConfig
from leantrain.pld import (
    ProgressiveLayerDrop,
    coin_seed,
    draw_layer_coins,
    expected_keep_fraction,
    layer_keep_prob,
    layer_keep_probs,
    pld_theta,
)

thetas = st.floats(min_value=1e-6, max_value=1.0)
gammas = st.floats(min_value=0.0, max_value=1.0)
steps = st.integers(min_value=0, max_value=10**7)


@pytest.mark.parametrize(
    ("step", "theta", "gamma", "expected"),
    [
        (0, 0.5, 0.001, 1.0),
        (1000, 0.5, 0.001, 0.5 * math.exp(-1) + 0.5),
        (693, 0.5, 0.001, 0.5 * math.exp(-0.693) + 0.5),
        (10**6, 0.5, 0.001, 0.5),
        (50, 0.2, 0.0, 1.0),
        (3, 1.0, 0.5, 1.0),
    ],
)
def test_pld_theta_known_points(step: int, theta: float, gamma: float, expected: float) -> None:
    assert pld_theta(step, theta, gamma) == pytest.approx(expected, rel=1e-12)


def test_pld_theta_defaults_match_deepspeed() -> None:
    assert pld_theta(1000) == pytest.approx(0.5 * math.exp(-1.0) + 0.5)


@settings(deadline=None)  # pure and fast, but a loaded CI machine can stall any example
@given(steps, thetas, gammas)
def test_pld_theta_falls_from_one_to_theta_bar(step: int, theta: float, gamma: float) -> None:
    value = pld_theta(step, theta, gamma)
    assert value == pytest.approx((1 - theta) * math.exp(-gamma * step) + theta)
    assert theta <= value <= 1.0
    assert pld_theta(step + 1, theta, gamma) <= value


@pytest.mark.parametrize(
    ("index", "num_layers", "theta_t", "expected"),
    [
        (0, 12, 0.5, 1 - 1 / 24),
        (11, 12, 0.5, 0.5),
        (5, 12, 0.5, 0.75),
        (0, 1, 0.3, 0.3),
        (3, 4, 1.0, 1.0),
    ],
)
def test_layer_keep_prob_known_points(
    index: int, num_layers: int, theta_t: float, expected: float
) -> None:
    assert layer_keep_prob(index, num_layers, theta_t) == pytest.approx(expected, rel=1e-12)


@settings(deadline=None)
@given(st.integers(min_value=1, max_value=96), thetas, st.data())
def test_layer_keep_prob_decreases_with_depth(num_layers: int, theta_t: float, data) -> None:
    probs = layer_keep_probs(num_layers, theta_t)
    index = data.draw(st.integers(min_value=0, max_value=num_layers - 1))
    assert probs[index] == pytest.approx(1 - (index + 1) / num_layers * (1 - theta_t))
    assert all(a >= b for a, b in itertools.pairwise(probs))
    assert probs[-1] == pytest.approx(theta_t)
    assert all(theta_t - 1e-12 <= p <= 1.0 for p in probs)
    assert expected_keep_fraction(num_layers, theta_t) == pytest.approx(
        1 - (1 - theta_t) * (num_layers + 1) / (2 * num_layers)
    )


def test_expected_keep_fraction_bert_base() -> None:
    assert expected_keep_fraction(12, 0.5) == pytest.approx(0.729, abs=5e-4)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: pld_theta(-1), "step: got -1"),
        (lambda: pld_theta(0, theta=0.0), r"theta: got 0.0; expected a keep ratio in \(0, 1\]"),
        (lambda: pld_theta(0, gamma=-0.1), "gamma: got -0.1"),
        (lambda: layer_keep_prob(4, 4, 0.5), "layer_index: got 4"),
        (lambda: layer_keep_prob(-1, 4, 0.5), "layer_index: got -1"),
        (lambda: layer_keep_prob(0, 0, 0.5), "num_layers: got 0"),
        (lambda: layer_keep_prob(0, 4, 1.5), "theta_t: got 1.5"),
    ],
)
def test_pure_functions_reject_bad_inputs(call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()


def test_coins_match_keep_probabilities_empirically() -> None:
    probs = [1.0, 0.9, 0.5, 0.1]
    n = 20000
    gen = torch.Generator().manual_seed(0)
    counts = [0] * len(probs)
    for _ in range(n):
        for i, kept in enumerate(draw_layer_coins(probs, gen)):
            counts[i] += kept
    for p, count in zip(probs, counts, strict=True):
        assert abs(count / n - p) <= 4.5 * math.sqrt(p * (1 - p) / n) + 1e-12


def test_coin_seed_is_a_deterministic_hash() -> None:
    assert coin_seed(1234, 7, 0) == coin_seed(1234, 7, 0)
    seeds = {coin_seed(s, t, f) for s in (0, 1) for t in range(50) for f in range(4)}
    assert len(seeds) == 400
    assert all(0 <= s < 2**63 for s in seeds)


def test_controller_defaults_and_update_state() -> None:
    pld = ProgressiveLayerDrop()
    assert (pld.theta, pld.gamma, pld.seed) == (0.5, 0.001, 1234)
    assert pld.get_theta() == 1.0
    pld.update_state(2000)
    assert pld.get_theta() == pytest.approx(pld_theta(2000))
    assert pld.keep_probs(4) == pytest.approx(layer_keep_probs(4, pld_theta(2000)))
    with pytest.raises(ValueError, match="global_step: got -3"):
        pld.update_state(-3)
    with pytest.raises(ValueError, match="global_step: got 1.5"):
        pld.update_state(1.5)  # type: ignore[arg-type]


def test_controller_logs_once_at_info(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="leantrain.pld"):
        pld = ProgressiveLayerDrop(theta=0.5, gamma=0.001)
        pld.update_state(10)
        pld.layer_coins(4)
    messages = [r.getMessage() for r in caplog.records if r.name == "leantrain.pld"]
    assert messages == ["Enabled progressive layer dropping (theta = 0.5, gamma = 0.001)"]
    assert caplog.records[0].levelno == logging.INFO


def test_coins_depend_only_on_seed_step_and_forward_index() -> None:
    a, b = ProgressiveLayerDrop(gamma=0.01), ProgressiveLayerDrop(gamma=0.01)
    for pld in (a, b):
        pld.update_state(5000)
    draws_a = [a.layer_coins(12) for _ in range(20)]
    draws_b = [b.layer_coins(12) for _ in range(20)]
    assert draws_a == draws_b
    assert len({tuple(keep) for keep, _ in draws_a}) > 1
    a.update_state(5001)
    assert a.forward_index == 0
    first, _ = a.layer_coins(12)
    b.update_state(5001)
    assert b.layer_coins(12)[0] == first
    other = ProgressiveLayerDrop(gamma=0.01, seed=99)
    other.update_state(5000)
    assert [other.layer_coins(12) for _ in range(20)] != draws_a


def test_state_dict_round_trip_resumes_the_same_coins() -> None:
    pld = ProgressiveLayerDrop(theta=0.3, gamma=0.02, seed=7)
    pld.update_state(321)
    pld.layer_coins(6)
    state = pld.state_dict()
    assert state["version"] == 1
    resumed = ProgressiveLayerDrop(theta=0.3, gamma=0.02, seed=7)
    resumed.load_state_dict(state)
    assert resumed.state_dict() == state
    assert resumed.get_theta() == pld.get_theta()
    assert [resumed.layer_coins(6) for _ in range(5)] == [pld.layer_coins(6) for _ in range(5)]


def test_state_dict_refuses_unknown_versions_and_missing_keys() -> None:
    pld = ProgressiveLayerDrop()
    with pytest.raises(ValueError, match="version 99 is not supported"):
        pld.load_state_dict({**pld.state_dict(), "version": 99})
    with pytest.raises(ValueError, match="version None is not supported"):
        pld.load_state_dict({"theta": 0.5})
    state = pld.state_dict()
    del state["forward_index"]
    with pytest.raises(ValueError, match=r"missing keys \['forward_index'\]"):
        pld.load_state_dict(state)
    with pytest.raises(ConfigError, match="progressive_layer_drop.theta"):
        pld.load_state_dict({**pld.state_dict(), "theta": 2.0})


def test_from_config_accepts_every_form() -> None:
    section = {"enabled": True, "theta": 0.4, "gamma": 0.002, "seed": 5}
    whole = load_config({"train_batch_size": 8, "progressive_layer_drop": section})
    for source in (section, ProgressiveLayerDropConfig(**section), whole):
        pld = ProgressiveLayerDrop.from_config(source)
        assert (pld.theta, pld.gamma, pld.seed) == (0.4, 0.002, 5)


@pytest.mark.parametrize(
    ("source", "match"),
    [
        ({"enabled": False}, "progressive_layer_drop.enabled: got false"),
        ({}, "progressive_layer_drop.enabled: got false"),
        ({"enabled": True, "theta": 0.0}, "progressive_layer_drop.theta"),
        ({"enabled": True, "theta": 1.5}, "progressive_layer_drop.theta"),
        ({"enabled": True, "gamma": -1}, "progressive_layer_drop.gamma"),
        ({"enabled": True, "thetaa": 0.5}, "did you mean 'theta'"),
        ({"enabled": True, "theta": "half"}, "progressive_layer_drop.theta"),
        (["theta", 0.5], "expected a ProgressiveLayerDropConfig"),
    ],
)
def test_from_config_rejects_bad_sections(source: object, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        ProgressiveLayerDrop.from_config(source)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"theta": 0.0}, "progressive_layer_drop.theta"),
        ({"gamma": -0.5}, "progressive_layer_drop.gamma"),
        ({"seed": -1}, "progressive_layer_drop.seed"),
    ],
)
def test_constructor_rejects_bad_values(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        ProgressiveLayerDrop(**kwargs)  # type: ignore[arg-type]
