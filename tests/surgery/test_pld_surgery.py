"""PLD specifics the surgery grid (test_grid.py) does not cover: coin statistics, eval forwards,
custom blocks, gradient checkpointing, inductor, config forms and refusals."""

from __future__ import annotations

import copy
import logging
import math

import pytest
import torch
from conftest import MODEL_FACTORIES, make_gpt2, make_inputs
from torch import nn
from transformers import PreTrainedModel

from leantrain import ConfigError, load_config
from leantrain.config import ProgressiveLayerDropConfig
from leantrain.models import UnknownModelError
from leantrain.pld import (
    ProgressiveLayerDrop,
    convert_to_progressive_layer_drop,
    kept_layers,
    layer_keep_probs,
    revert_progressive_layer_drop,
)
from leantrain.surgery import SurgeryError, conversions

pytestmark = pytest.mark.usefixtures("one_thread")

STEADY = 10**6  # a step where θ(t) = θ̄ to float precision with γ = 0.001


def _schedule(step: int = STEADY, **kwargs: float) -> ProgressiveLayerDrop:
    pld = ProgressiveLayerDrop(**kwargs)  # type: ignore[arg-type]
    pld.update_state(step)
    return pld


def _output(model: PreTrainedModel, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    return model(**inputs).logits


def test_eval_forwards_draw_no_coins() -> None:
    """Eval forwards leave the coin counter alone (ranks may evaluate on their own)."""
    torch.manual_seed(0)
    model = make_gpt2()
    pld = _schedule()
    convert_to_progressive_layer_drop(model, pld)
    with torch.no_grad():
        _output(model, make_inputs("gpt2"))
        assert kept_layers(model) is None and pld.forward_index == 0
        model.train()
        _output(model, make_inputs("gpt2"))
        assert kept_layers(model) is not None and pld.forward_index == 1


def test_keep_frequency_matches_keep_probabilities() -> None:
    torch.manual_seed(0)
    model = make_gpt2()
    pld = _schedule()
    convert_to_progressive_layer_drop(model, pld).train()
    calls = [0] * 4
    for i, block in enumerate(model.transformer.h):
        block.mlp.register_forward_hook(lambda *_, i=i: calls.__setitem__(i, calls[i] + 1))
    n, kept = 2500, [0] * 4
    ids = torch.randint(1, 97, (1, 4))
    with torch.inference_mode():
        for _ in range(n):
            model(input_ids=ids)
            for i, k in enumerate(kept_layers(model) or ()):
                kept[i] += k
    assert calls == kept  # a skipped block ran nothing
    for p, count in zip(layer_keep_probs(4, 0.5), kept, strict=True):
        assert abs(count / n - p) <= 4.5 * math.sqrt(p * (1 - p) / n)


class _Residual(nn.Module):
    """x + tanh(W x), optionally returning a tuple like older HF blocks."""

    def __init__(self, as_tuple: bool) -> None:
        super().__init__()
        self.lin = nn.Linear(8, 8)
        self.as_tuple = as_tuple

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor | tuple:
        out = hidden_states + torch.tanh(self.lin(hidden_states))
        return (out, out.sum()) if self.as_tuple else out


class _Stack(nn.Module):
    def __init__(self, as_tuple: bool = False) -> None:
        super().__init__()
        self.stack = nn.ModuleList([_Residual(as_tuple) for _ in range(4)])
        self.as_tuple = as_tuple

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.stack:
            x = block(x)[0] if self.as_tuple else block(x)
        return x


def test_custom_tuple_blocks_skipped_before_they_ever_ran_keep_their_structure() -> None:
    """A custom block (no registered family) returning a tuple, skipped on its first call,
    still returns a tuple (its structure is learned on the spot), with its input first."""
    torch.manual_seed(0)
    model = _Stack(as_tuple=True).train()
    pld = _schedule(theta=0.1, seed=3)
    convert_to_progressive_layer_drop(model, pld, layers="stack")
    x = torch.randn(3, 8)
    for _ in range(20):
        out = model(x)
        kept = kept_layers(model)
        assert kept is not None and out.shape == (3, 8)
        if not kept[0]:
            break
    assert kept is not None and not kept[0], "block 0 was never skipped"
    skipped = model.stack[0](x)
    assert isinstance(skipped, tuple) and len(skipped) == 2


@pytest.mark.parametrize("reentrant", [False, True])
def test_gradient_checkpointing_gives_the_same_loss_and_grads(reentrant: bool) -> None:
    results = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = make_gpt2()
        convert_to_progressive_layer_drop(model, _schedule(seed=11)).train()
        if checkpointing:
            kwargs = {"use_reentrant": reentrant}
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        inputs = make_inputs("gpt2")
        steps = []
        for _ in range(4):
            model.zero_grad(set_to_none=True)
            loss = model(**inputs, labels=inputs["input_ids"]).loss
            loss.backward()
            grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
            steps.append((loss.detach(), kept_layers(model), grads))
        results.append(steps)
    assert any(not all(kept) for _, kept, _ in results[0])
    for (loss_a, kept_a, grads_a), (loss_b, kept_b, grads_b) in zip(*results, strict=True):
        assert kept_a == kept_b
        torch.testing.assert_close(loss_a, loss_b, rtol=0, atol=0)
        assert grads_a.keys() == grads_b.keys()
        for name in grads_a:
            torch.testing.assert_close(grads_a[name], grads_b[name], rtol=1e-5, atol=1e-7)


# Dynamo itself reads `.grad` of the non-leaf hidden states when it wraps them (torch 2.13).
@pytest.mark.filterwarnings("ignore:The .grad attribute of a Tensor that is not a leaf")
def test_compiling_each_block_runs_and_still_drops() -> None:
    torch.manual_seed(0)
    model = make_gpt2()
    eager = copy.deepcopy(model)
    inputs = make_inputs("gpt2")
    pld = _schedule(seed=5, gamma=0.001)
    eager_pld = _schedule(seed=5, gamma=0.001)
    convert_to_progressive_layer_drop(model, pld)
    convert_to_progressive_layer_drop(eager, eager_pld)
    for block in model.transformer.h:
        block.compile()
    model.train()
    eager.train()
    patterns = set()
    for step in range(4):
        for p in (pld, eager_pld):
            p.update_state(STEADY + step)
        out = model(**inputs, labels=inputs["input_ids"])
        out.loss.backward()
        expected = eager(**inputs, labels=inputs["input_ids"])
        assert kept_layers(model) == kept_layers(eager)
        patterns.add(kept_layers(model))
        torch.testing.assert_close(out.logits, expected.logits, rtol=1e-4, atol=1e-5)
    assert len(patterns) > 1
    model.eval()
    eager.eval()
    with torch.no_grad():
        torch.testing.assert_close(_output(model, inputs), _output(eager, inputs))


def test_every_config_form_converts(tmp_path) -> None:
    section = {"enabled": True, "theta": 0.5, "gamma": 0.001}
    for source in (
        section,
        ProgressiveLayerDropConfig(**section),
        load_config({"progressive_layer_drop": section, "fp16": {"enabled": True}}),
    ):
        model = make_gpt2(num_layers=2)
        convert_to_progressive_layer_drop(model, source)
        record = conversions(model)["pld"]
        assert record.path == "transformer.h"
        assert record.schedule.theta == 0.5
        revert_progressive_layer_drop(model)


def test_post_ln_models_get_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="leantrain.pld"):
        convert_to_progressive_layer_drop(MODEL_FACTORIES["bert"](), _schedule())
        convert_to_progressive_layer_drop(MODEL_FACTORIES["llama"](), _schedule())
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "meant for Pre-LayerNorm blocks" in warnings[0].getMessage()
    assert "'bert'" in warnings[0].getMessage()


def test_bad_surgery_is_refused_with_clear_errors() -> None:
    model = make_gpt2(num_layers=2)
    with pytest.raises(SurgeryError, match="wrapped by torch.compile"):
        convert_to_progressive_layer_drop(torch.compile(model), _schedule())
    with pytest.raises(SurgeryError, match="wrapped by DataParallel"):
        convert_to_progressive_layer_drop(nn.DataParallel(model), _schedule())
    with pytest.raises(SurgeryError, match="is not converted"):
        revert_progressive_layer_drop(model)
    with pytest.raises(SurgeryError, match="is not converted"):
        kept_layers(model)
    with pytest.raises(ConfigError, match="enabled: got false"):
        convert_to_progressive_layer_drop(model, {"theta": 0.5})
    with pytest.raises(ConfigError, match="did you mean 'gamma'"):
        convert_to_progressive_layer_drop(model, {"enabled": True, "gama": 0.1})
    with pytest.raises(UnknownModelError, match="Pass `layers=`"):
        convert_to_progressive_layer_drop(_Stack(), _schedule())
    with pytest.raises(UnknownModelError, match="has no submodule 'nope'"):
        convert_to_progressive_layer_drop(model, _schedule(), layers="nope")
    assert conversions(model) == {}
    convert_to_progressive_layer_drop(model, _schedule())
    with pytest.raises(SurgeryError, match="already converted"):
        convert_to_progressive_layer_drop(model, _schedule())
    twin = make_gpt2(num_layers=2)
    twin.transformer.h = model.transformer.h  # blocks shared with a converted model
    with pytest.raises(SurgeryError, match=r"block transformer.h.0 is already converted"):
        convert_to_progressive_layer_drop(twin, _schedule())
    empty = _Stack()
    empty.stack = nn.ModuleList()
    with pytest.raises(SurgeryError, match="'stack' is empty"):
        convert_to_progressive_layer_drop(empty, _schedule(), layers="stack")
