"""The shared invariant checker: what every technique's surgery must keep true on every model.

Each `check_*` takes a model row, a technique row (see `settings.py`) and the shared plain
model, converts its own copy and asserts one invariant. `test_grid.py` runs them all on every
(model, technique) pair; a technique's own tests may call them too.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import transformers
from blocks import calls_of, first, hidden_of
from settings import (
    AUTO_CLASS,
    ModelCase,
    TechniqueCase,
    build,
    forward,
    fresh,
    labels_for,
    make_inputs,
    outputs,
)
from torch import Tensor, nn

from leantrain.models import find_stacks
from leantrain.surgery import conversions, has_mixin

__all__ = [
    "check_compile_step",
    "check_eval_bit_equal",
    "check_gradients",
    "check_keys_and_revert",
    "check_loss_decreases",
    "check_neutral_training_bit_equal",
    "check_no_future_leak",
    "check_padding_invariance",
    "check_save_pretrained",
]


def _loss(model: nn.Module, case: ModelCase, inputs: dict[str, Tensor]) -> Tensor:
    loss = outputs(case, model(**labels_for(case, inputs)))[1]
    assert loss is not None
    return loss


def _blocks(model: nn.Module, case: ModelCase) -> list[nn.Module]:
    return [b for s in find_stacks(model, case.layers) for b in dict.fromkeys(s.blocks)]


# -- surgery keeps the model -------------------------------------------------------------------


def check_keys_and_revert(case: ModelCase, tech: TechniqueCase, plain: nn.Module) -> None:
    """Convert keeps state_dict keys and values; revert gives back the plain classes, no hooks."""
    model = fresh(plain)
    keys = list(model.state_dict())
    classes = {name: type(m) for name, m in model.named_modules()}
    hooks = sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in model.modules())
    tech.convert(model, case, True)
    assert list(model.state_dict()) == keys
    assert any(has_mixin(b, tech.mixin) for b in _blocks(model, case))
    plain.load_state_dict(model.state_dict(), strict=True)  # a plain twin loads it as is
    tech.revert(model)
    assert {name: type(m) for name, m in model.named_modules()} == classes
    assert sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in model.modules()) == hooks
    assert not conversions(model)
    assert list(model.state_dict()) == keys


def check_eval_bit_equal(case: ModelCase, tech: TechniqueCase, plain: nn.Module) -> None:
    """Eval output of the converted model (and of the reverted one) is the plain model's, bit for bit."""
    model = fresh(plain)
    inputs = make_inputs(case)
    with torch.no_grad():
        expected = forward(plain, case, inputs)
        tech.convert(model, case, True)
        model.train()
        forward(model, case, inputs)  # a training forward in between changes nothing
        model.eval()
        assert torch.equal(forward(model, case, inputs), expected)
        tech.revert(model)
        assert torch.equal(forward(model, case, inputs), expected)


def check_neutral_training_bit_equal(
    case: ModelCase, tech: TechniqueCase, plain: nn.Module
) -> None:
    """Training output equals the plain model's bit for bit when the technique drops nothing."""
    model = fresh(plain)
    reference = fresh(plain).train()
    tech.convert(model, case, False)
    model.train()
    inputs = make_inputs(case)
    with torch.no_grad():
        assert torch.equal(forward(model, case, inputs), forward(reference, case, inputs))
    assert not tech.dropped(model)


def _changed(
    case: ModelCase, inputs: dict[str, Tensor], key: str, where: Tensor
) -> dict[str, Tensor]:
    """`inputs` with the token ids of `key` replaced where `where` [B, S] is True."""
    ids = inputs[key].clone()
    ids[where] = (ids[where] + 11) % 94 + 3
    return {**inputs, key: ids}


def _twin_forwards(
    case: ModelCase, tech: TechniqueCase, plain: nn.Module, change: str, where: Any
) -> list[tuple[Tensor, Tensor]]:
    """Outputs of a dropping model on a batch and on the batch with the ids of input `change`
    replaced where `where(inputs)` [B, S] is True, with the same draws, for three draws."""
    model = fresh(plain)
    controller = tech.convert(model, case, True)
    model.train()
    inputs = make_inputs(case)
    changed = _changed(case, inputs, change, where(inputs))
    pairs, dropped = [], False
    with torch.no_grad():
        for seed in range(3):
            rewind = tech.rewind_point(controller)
            a = forward(model, case, inputs, seed)
            dropped |= tech.dropped(model)
            rewind()
            pairs.append((a, forward(model, case, changed, seed)))
    assert dropped
    return pairs


def _last(inputs: dict[str, Tensor], key: str) -> Tensor:
    last = torch.zeros(inputs[key].shape, dtype=torch.bool)
    last[:, -1] = True
    return last


def check_no_future_leak(case: ModelCase, tech: TechniqueCase, plain: nn.Module) -> None:
    """While dropping, changing the last token changes no earlier output (causal outputs only)."""
    key = "decoder_input_ids" if case.task == "seq2seq" else "input_ids"
    for a, b in _twin_forwards(case, tech, plain, key, lambda inputs: _last(inputs, key)):
        torch.testing.assert_close(a[:, :-1], b[:, :-1], rtol=0, atol=1e-6)
        assert not torch.allclose(a[:, -1], b[:, -1])


def check_padding_invariance(case: ModelCase, tech: TechniqueCase, plain: nn.Module) -> None:
    """While dropping, the tokens under padding never change the outputs of real tokens."""
    padding = make_inputs(case)["attention_mask"] == 0
    for a, b in _twin_forwards(case, tech, plain, "input_ids", lambda inputs: padding):
        if case.task == "seq2seq":  # every decoder output reads the encoder's real tokens
            torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
        else:
            torch.testing.assert_close(a[~padding], b[~padding], rtol=0, atol=1e-6)


# -- training ----------------------------------------------------------------------------------


def check_block(case: ModelCase, tech: TechniqueCase, plain: nn.Module) -> None:
    """The technique's block-level semantics (`TechniqueCase.block_check`), under the model's
    default attention implementation and, where that is another one, under eager attention."""
    model = fresh(plain)
    controller = tech.convert(model, case, True)
    inputs = make_inputs(case)
    tech.block_check(model, case, controller, inputs)
    if getattr(getattr(model, "config", None), "_attn_implementation", "eager") != "eager":
        eager = replace(case, config={**case.config, "attn_implementation": "eager"})
        model = build(eager)
        assert model.config._attn_implementation == "eager"
        controller = tech.convert(model, eager, True)
        tech.block_check(model, eager, controller, inputs)


def check_gradients(case: ModelCase, tech: TechniqueCase, plain: nn.Module) -> None:
    """While dropping, gradients are finite and reach every block that ran, none that did not."""
    model = fresh(plain)
    tech.convert(model, case, True)
    model.train()
    inputs = make_inputs(case)
    stacks = find_stacks(model, case.layers)
    for seed in range(4):
        model.zero_grad(set_to_none=True)
        with calls_of(stacks) as calls:
            torch.manual_seed(seed)
            _loss(model, case, inputs).backward()
        ran: dict[nn.Module, bool] = {}
        for call in calls:
            ran[call.block] = ran.get(call.block, False) or first(call.out) is not hidden_of(call)
        for name, p in model.named_parameters():
            assert p.grad is None or torch.isfinite(p.grad).all(), name
        for block, did in ran.items():
            grads = [p.grad for p in block.parameters()]
            if did:
                assert any(g is not None and g.abs().sum() > 0 for g in grads), type(block).__name__
            else:
                assert all(g is None for g in grads), type(block).__name__
    assert tech.dropped(model)


def check_loss_decreases(case: ModelCase, tech: TechniqueCase, plain: nn.Module) -> None:
    """A few optimizer steps with the technique dropping lower the (eval) loss on the batch."""
    model = fresh(plain)
    tech.convert(model, case, True)
    inputs = make_inputs(case)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    with torch.no_grad():
        before = float(_loss(model.eval(), case, inputs))
    model.train()
    for step in range(8):
        torch.manual_seed(step)
        _loss(model, case, inputs).backward()
        optimizer.step()
        optimizer.zero_grad()
    with torch.no_grad():
        after = float(_loss(model.eval(), case, inputs))
    assert math.isfinite(after) and after < before, (before, after)


def check_save_pretrained(
    case: ModelCase, tech: TechniqueCase, plain: nn.Module, out: Path
) -> None:
    """`save_pretrained` of the converted model names only plain classes and loads into plain
    transformers classes with the same weights and outputs."""
    model = fresh(plain)
    tech.convert(model, case, True)
    model.save_pretrained(out)
    text = (out / "config.json").read_text()
    assert "leantrain" not in text and tech.mixin.__name__ not in text
    assert json.loads(text)["architectures"] == [type(plain).__name__]
    loaded = getattr(transformers, AUTO_CLASS[case.task]).from_pretrained(out).eval()
    assert all(type(m).__module__.startswith(("transformers.", "torch.")) for m in loaded.modules())
    inputs = make_inputs(case)
    with torch.no_grad():
        assert torch.equal(forward(loaded, case, inputs), forward(model.eval(), case, inputs))


def check_compile_step(
    case: ModelCase, tech: TechniqueCase, plain: nn.Module, backend: str = "eager"
) -> None:
    """With every block compiled on its own (after surgery), a dropping training step runs."""
    model = fresh(plain)
    tech.convert(model, case, True)
    for block in _blocks(model, case):
        block.compile(backend=backend, dynamic=False)
    model.train()
    torch._dynamo.reset()
    try:
        for _ in range(5):  # a step that drops something (PLD may keep every block)
            model.zero_grad(set_to_none=True)
            loss = _loss(model, case, make_inputs(case))
            loss.backward()
            assert torch.isfinite(loss)
            assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())
            if tech.dropped(model):
                break
        assert tech.dropped(model)
    finally:
        torch._dynamo.reset()
