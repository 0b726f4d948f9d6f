"""Family facts the grid relies on, checked directly: ALBERT's shared layer acts per application,
DeBERTa draws one subset per batch, T5's bias-building block is never skipped nor routed, Swin
is depth-scaled across stages, and arguments random-LTD cannot follow are refused by name."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from settings import CASES, build, make_inputs
from torch import Tensor, nn

from leantrain.errors import ConfigError
from leantrain.models import ModelFamily, Stack, UnknownModelError, find_block_list, register_family
from leantrain.pld import ProgressiveLayerDrop, convert_to_progressive_layer_drop, kept_layers
from leantrain.random_ltd import (
    RandomLTDScheduler,
    RoutingError,
    convert_to_random_ltd,
    kept_indices,
)
from leantrain.surgery import SurgeryError

pytestmark = pytest.mark.usefixtures("one_thread")

CASE = {c.id: c for c in CASES}


def _pld(theta: float = 0.3) -> ProgressiveLayerDrop:
    pld = ProgressiveLayerDrop(theta=theta, seed=11)
    pld.update_state(10**6)
    return pld


def _scheduler(**extra: Any) -> RandomLTDScheduler:
    schedule = {
        "min_value": 8,
        "max_value": 64,
        "schedule_config": {"require_steps": 10, "seq_per_step": 4},
    }
    return RandomLTDScheduler({"random_ltd_schedule": schedule, **extra})


def test_albert_drops_per_application_of_its_shared_layer() -> None:
    model = build(CASE["albert"])  # one layer group, run at 3 depths
    assert len(model.albert.encoder.albert_layer_groups) == 1
    convert_to_progressive_layer_drop(model, _pld(theta=0.1))
    convert_to_random_ltd(model, _scheduler(random_ltd_layer_id=[1, 2]))
    model.train()
    patterns = set()
    for _ in range(30):
        model(**make_inputs(CASE["albert"]))
        kept = kept_layers(model)
        assert kept is not None and len(kept) == 3
        patterns.add(kept)
    assert len(patterns) > 2  # the one module ran at some depths and was skipped at others
    drawn = kept_indices(model)
    assert set(drawn) == {1, 2}
    with torch.no_grad():  # called alone, past its 3 applications: refused, not mislabelled
        group = model.albert.encoder.albert_layer_groups[0]
        h = torch.randn(3, 16, 32)
        with pytest.raises(SurgeryError, match="more than the 3 times"):
            for _ in range(4):
                group(h)


def test_deberta_draws_one_subset_per_batch() -> None:
    model = build(CASE["deberta-v2"])
    convert_to_random_ltd(model, _scheduler())
    model.train()
    model(**make_inputs(CASE["deberta-v2"]))
    idx = kept_indices(model)[1]
    assert idx is not None and idx.shape == (3, 8) and (idx == idx[:1]).all()


def test_t5_never_skips_nor_routes_the_block_that_builds_the_bias() -> None:
    model = build(CASE["t5"])
    convert_to_progressive_layer_drop(model, _pld(theta=0.1))
    model.train()
    skipped = False
    for _ in range(20):
        model(**make_inputs(CASE["t5"]))
        kept = kept_layers(model)
        assert kept is not None and kept[0] and kept[3]  # block 0 of the encoder and decoder
        skipped |= not all(kept)
    assert skipped
    with pytest.raises(
        ConfigError, match=r"random_ltd_layer_id: t5 block 0 .* relative position bias"
    ):
        convert_to_random_ltd(build(CASE["t5"]), _scheduler(random_ltd_layer_id=[0, 1]))


def test_swin_is_depth_scaled_across_its_stages() -> None:
    model = build(CASE["swin"])  # stages of 2 and 2 blocks
    pld = _pld()
    convert_to_progressive_layer_drop(model, pld)
    found = find_block_list(model)
    assert len(found) == 4 and found.path == "encoder.layers.*.blocks"
    model.train()
    model(**make_inputs(CASE["swin"]))
    kept = kept_layers(model)
    assert kept is not None and len(kept) == 4


class _RotaryBlock(nn.Module):
    """A block that takes per-token rotary angles it applies itself."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(8, 8)

    def forward(
        self, x: Tensor, angles: Tensor, mask: Tensor | None = None, **kwargs: Any
    ) -> Tensor:
        return x + self.lin(x * angles.cos())


class _RotaryModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleList(_RotaryBlock() for _ in range(3))

    def forward(self, x: Tensor, **kwargs: Any) -> Tensor:
        angles = torch.arange(x.shape[1]).float()[None, :, None] / 10  # [1, S, 1]
        for block in self.layers:
            x = block(x, angles, **kwargs)
        return x


def test_per_token_arguments_nothing_describes_are_refused() -> None:
    model = _RotaryModel().train()
    convert_to_random_ltd(model, _scheduler(model_type="encoder", model_mask_name="mask"), "layers")
    with pytest.raises(
        RoutingError, match=r"custom blocks\): block argument 'angles' carries data"
    ):
        model(torch.randn(2, 16, 8))
    with pytest.raises(
        RoutingError, match=r"unpadded \(packed\) inputs through \['cu_seq_lens_q'\]"
    ):
        model(torch.randn(2, 16, 8), cu_seq_lens_q=torch.tensor([0, 16, 32]))


def test_a_registered_route_follows_the_tokens() -> None:
    """Declaring the argument (here as per-token data) is the way out the error names."""
    model = _RotaryModel()
    model.config = type("Cfg", (), {"model_type": "rotary-toy"})()  # type: ignore[assignment]
    register_family(
        ModelFamily(
            model_types=("rotary-toy",),
            stacks=(Stack(("layers",), "encoder", mask_arg="mask", routes={"angles": "tokens"}),),
        )
    )
    try:
        convert_to_random_ltd(model, _scheduler())
        model.train()
        x = torch.randn(2, 16, 8)
        out = model.layers[1](x, torch.arange(16).float()[None, :, None] / 10)
        idx = kept_indices(model)[1]
        assert idx is not None
        kept = x.gather(1, idx[..., None].expand(-1, -1, 8))
        angles = (idx.float() / 10)[..., None]  # each kept token keeps its own angle
        expected = kept + model.layers[1].lin(kept * angles.cos())
        torch.testing.assert_close(out.gather(1, idx[..., None].expand(-1, -1, 8)), expected)
    finally:
        from leantrain.models.registry import _REGISTRY

        del _REGISTRY["rotary-toy"]
    with pytest.raises(UnknownModelError, match="unknown routes"):
        register_family(
            ModelFamily(("bad",), (Stack(("layers",), "encoder", routes={"x": "rows"}),))
        )  # type: ignore[dict-item]
