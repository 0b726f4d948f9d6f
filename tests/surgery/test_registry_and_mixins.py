"""The model-family registry finds block lists; class-swap surgery stacks, reverts and keeps keys."""

from __future__ import annotations

import io

import pytest
import torch
from conftest import make_gpt2, make_inputs
from torch import nn
from transformers import PreTrainedModel

from leantrain import (
    ProgressiveLayerDrop,
    RandomLTDScheduler,
    convert_to_progressive_layer_drop,
    convert_to_random_ltd,
    revert_progressive_layer_drop,
    revert_random_ltd,
)
from leantrain.models import (
    ModelFamily,
    Stack,
    UnknownModelError,
    family_of,
    find_block_list,
    register_family,
    registered_model_types,
)
from leantrain.models.registry import _REGISTRY
from leantrain.pld import ProgressiveLayerDropMixin
from leantrain.random_ltd import RandomLTDMixin
from leantrain.surgery import (
    SurgeryError,
    add_mixin,
    conversions,
    ensure_plain_model,
    forget_conversion,
    has_mixin,
    record_conversion,
    remove_mixin,
)


def test_block_list_by_module_or_path(tiny_model: PreTrainedModel) -> None:
    found = find_block_list(tiny_model)
    assert found.family is family_of(tiny_model) and len(found) == 4
    assert find_block_list(tiny_model, found.blocks).path == found.path
    assert find_block_list(tiny_model, found.path).blocks is found.blocks
    assert find_block_list(tiny_model, found) is found
    assert find_block_list(tiny_model, found.path).stack is found.stack  # called the family's way


def test_bad_layers_arguments_are_explained(tiny_model: PreTrainedModel) -> None:
    with pytest.raises(UnknownModelError, match="has no submodule 'nope.layers'"):
        find_block_list(tiny_model, "nope.layers")
    with pytest.raises(UnknownModelError, match="not a submodule of the model"):
        find_block_list(tiny_model, nn.ModuleList([nn.Linear(2, 2)]))
    first_linear = next(n for n, m in tiny_model.named_modules() if isinstance(m, nn.Linear))
    with pytest.raises(UnknownModelError, match="expected an nn.ModuleList"):
        find_block_list(tiny_model, first_linear)


class _Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stack = nn.ModuleList([nn.Linear(4, 4) for _ in range(3)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.stack:
            x = block(x)
        return x


def test_unknown_model_error_says_how_to_pass_layers() -> None:
    with pytest.raises(UnknownModelError) as info:
        find_block_list(_Toy())
    message = str(info.value)
    assert "Pass `layers=`" in message
    for model_type in ("bert", "gpt2", "llama", "vit"):
        assert model_type in message
    assert len(find_block_list(_Toy(), "stack")) == 3


def test_registering_a_family_is_one_call() -> None:
    toy = _Toy()
    toy.config = type("Cfg", (), {"model_type": "toy-lm"})()  # type: ignore[assignment]
    family = register_family(
        ModelFamily(model_types=("toy-lm",), stacks=(Stack(("stack",), "decoder"),))
    )
    try:
        assert "toy-lm" in registered_model_types()
        assert find_block_list(toy).family is family
    finally:
        del _REGISTRY["toy-lm"]


class DoubleMixin:
    """Doubles the block output."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * super().forward(x)  # type: ignore[misc]


class AddOneMixin:
    """Adds one to the block input."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x + 1)  # type: ignore[misc]


def test_mixins_stack_revert_in_any_order_and_keep_keys() -> None:
    torch.manual_seed(0)
    toy = _Toy()
    block = toy.stack[1]
    keys = list(toy.state_dict())
    x = torch.randn(2, 4)
    plain = toy(x)
    add_mixin(block, AddOneMixin)
    add_mixin(block, DoubleMixin)  # outermost
    assert isinstance(block, nn.Linear)
    assert has_mixin(block, AddOneMixin) and has_mixin(block, DoubleMixin)
    assert list(toy.state_dict()) == keys
    expected = toy.stack[2](2 * nn.Linear.forward(block, toy.stack[0](x) + 1))
    torch.testing.assert_close(toy(x), expected)
    remove_mixin(block, AddOneMixin)  # the inner one first: the outer one stays
    assert has_mixin(block, DoubleMixin) and not has_mixin(block, AddOneMixin)
    remove_mixin(block, DoubleMixin)
    assert type(block) is nn.Linear
    torch.testing.assert_close(toy(x), plain)
    with pytest.raises(SurgeryError, match="not converted by DoubleMixin"):
        remove_mixin(block, DoubleMixin)
    add_mixin(block, DoubleMixin)
    with pytest.raises(SurgeryError, match="already converted by DoubleMixin"):
        add_mixin(block, DoubleMixin)


def test_converted_model_pickles_whole_and_stays_converted() -> None:
    """`torch.save(model)` of a model converted by two techniques loads back converted."""
    torch.manual_seed(0)
    model = make_gpt2()
    convert_to_progressive_layer_drop(model, ProgressiveLayerDrop(theta=0.5, gamma=0.01))
    schedule = {"require_steps": 10, "seq_per_step": 4}
    ltd = {"random_ltd_schedule": {"min_value": 8, "max_value": 32, "schedule_config": schedule}}
    convert_to_random_ltd(model, RandomLTDScheduler(ltd))
    inputs = make_inputs("gpt2")
    expected = model.eval()(**inputs).logits
    buffer = io.BytesIO()
    torch.save(model, buffer)
    loaded = torch.load(io.BytesIO(buffer.getvalue()), weights_only=False)
    block = loaded.transformer.h[1]
    assert has_mixin(block, ProgressiveLayerDropMixin) and has_mixin(block, RandomLTDMixin)
    assert type(block) is type(model.transformer.h[1])  # the same cached class, not a copy
    torch.testing.assert_close(loaded(**inputs).logits, expected, rtol=0, atol=0)
    revert_random_ltd(loaded)
    revert_progressive_layer_drop(loaded)
    assert type(loaded.transformer.h[1]).__name__ == "GPT2Block"


def test_conversion_record() -> None:
    toy = _Toy()
    record_conversion(toy, "pld", ["stack.0"])
    with pytest.raises(SurgeryError, match="already converted by pld"):
        record_conversion(toy, "pld", [])
    assert conversions(toy) == {"pld": ["stack.0"]}
    assert "_leantrain_conversions" not in "".join(toy.state_dict())
    assert forget_conversion(toy, "pld") == ["stack.0"]
    with pytest.raises(SurgeryError, match="not converted by pld"):
        forget_conversion(toy, "pld")


def test_wrapped_models_are_refused() -> None:
    toy = _Toy()
    ensure_plain_model(toy, "pld")
    with pytest.raises(SurgeryError, match="wrapped by torch.compile"):
        ensure_plain_model(torch.compile(toy), "pld")
    with pytest.raises(SurgeryError, match="wrapped by DataParallel"):
        ensure_plain_model(nn.DataParallel(toy), "random-LTD")
