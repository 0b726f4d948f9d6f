"""Nothing is a silent no-op: a forgotten `handle.step()`, sections that do not run and a config
that turns nothing on are each said once; token counts that nothing needs are not a warning."""

from __future__ import annotations

import copy
import io
import logging
from typing import Any

import pytest
import torch
from conftest import make_gpt2, make_inputs

import leantrain

PLD = {"progressive_layer_drop": {"enabled": True, "theta": 0.5, "gamma": 0.1}}
LTD_SCHEDULE = {
    "min_value": 8,
    "max_value": 16,
    "schedule_config": {"require_steps": 4, "seq_per_step": 8},
}


def _ltd(de: bool, routing: bool = True, ltd: bool = True, **extra: Any) -> dict[str, Any]:
    section = {"enabled": ltd, "random_ltd_schedule": LTD_SCHEDULE, **extra}
    return {
        "data_efficiency": {
            "enabled": de,
            "data_routing": {"enabled": routing, "random_ltd": section},
        }
    }


def _messages(caplog: pytest.LogCaptureFixture, level: int = logging.WARNING) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= level and r.name.startswith("leantrain")
    ]


def _train_forwards(model: torch.nn.Module, n: int, handle: Any = None) -> None:
    """`n` training-mode forwards (no backward: the counter counts forwards), stepping the handle
    after each when one is given."""
    model.train()
    inputs = make_inputs("gpt2", batch=1, seq=8)
    with torch.no_grad():
        for _ in range(n):
            model(**inputs)
            if handle is not None:
                handle.step()


def test_a_forgotten_step_is_said_once(caplog: pytest.LogCaptureFixture) -> None:
    model = make_gpt2()
    leantrain.prepare(model, PLD, gradient_accumulation_steps=2)
    with caplog.at_level(logging.WARNING, logger="leantrain"):
        _train_forwards(model, 60)
    warned = _messages(caplog)
    assert len(warned) == 1
    assert "31 training forwards since handle.step() was last called (global step 0)" in warned[0]
    assert "pld/theta=1" in warned[0]


def test_stepping_or_evaluating_is_not_a_forgotten_step(caplog: pytest.LogCaptureFixture) -> None:
    model = make_gpt2()
    handle = leantrain.prepare(model, PLD)
    with caplog.at_level(logging.WARNING, logger="leantrain"):
        _train_forwards(model, 30, handle)
        model.eval()
        with torch.no_grad():
            for _ in range(30):
                model(**make_inputs("gpt2", batch=1, seq=8))
    assert not _messages(caplog)
    plain = handle.revert()
    with caplog.at_level(logging.WARNING, logger="leantrain"):
        _train_forwards(plain, 30)  # reverted: the counter is gone
    assert not _messages(caplog)


def test_batches_without_a_step_are_counted_too(caplog: pytest.LogCaptureFixture) -> None:
    """A compiled model's forwards are not counted (the traced graph holds no counter); the
    batches through `process_batch` still are."""
    model = make_gpt2()
    handle = leantrain.prepare(model, PLD, seq_length=16)
    with caplog.at_level(logging.WARNING, logger="leantrain"):
        for _ in range(25):
            handle.process_batch(make_inputs("gpt2"))
    (message,) = _messages(caplog)
    assert message.startswith("leantrain: 21 batches through handle.process_batch since")


def test_the_counter_leaves_compiled_graphs_alone() -> None:
    """fullgraph=True fails on anything dynamo cannot trace; a counter read in the graph would
    recompile every call."""
    model = make_gpt2()
    leantrain.prepare(model, {}, seq_length=16)
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    torch._dynamo.reset()
    inputs = make_inputs("gpt2")
    model.train()
    for _ in range(3):
        compiled(**inputs)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1


@pytest.mark.parametrize(
    ("config", "level", "said"),
    [
        (
            {"progressive_layer_drop": {"enabled": False}},
            logging.INFO,
            "progressive_layer_drop does not run: progressive_layer_drop.enabled is false",
        ),
        (
            _ltd(de=False),
            logging.WARNING,
            "data_efficiency.data_routing.random_ltd.enabled is true, but "
            "data_efficiency.enabled is false",
        ),
        (
            _ltd(de=True, routing=False),
            logging.WARNING,
            "but data_efficiency.data_routing.enabled is false",
        ),
    ],
    ids=["section-off", "enclosing-off", "routing-off"],
)
def test_sections_that_do_not_run_are_said(
    config: dict[str, Any], level: int, said: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="leantrain"):
        leantrain.prepare(make_gpt2(), config)
    records = [r for r in caplog.records if said in r.getMessage()]
    assert [r.levelno for r in records] == [level]
    nothing = [m for m in _messages(caplog) if "no technique is enabled" in m]
    assert nothing == [
        "leantrain.prepare: no technique is enabled, since every section it gives "
        "is off (above); the model is unchanged and handle.step() only counts tokens"
    ]


def test_a_config_without_any_section_says_so(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="leantrain"):
        leantrain.prepare(make_gpt2(), {"train_batch_size": 8})
    (message,) = _messages(caplog)
    assert "it has none of the sections progressive_layer_drop, curriculum_learning" in message


def test_unknown_token_counts_warn_only_where_an_lr_follows_them(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Without a dataset or a micro batch the counts stay 0: noise for PLD, which does not read
    them; a warning for a layer-token LR schedule, which does."""
    with caplog.at_level(logging.WARNING, logger="leantrain"):
        handle = leantrain.prepare(make_gpt2(), PLD)
        handle.step()
        handle.metrics()
    assert not _messages(caplog)
    lr = {"enabled": True, "total_layer_tokens": 10_000}
    config = _ltd(de=True, layer_token_lr_schedule=lr)
    with caplog.at_level(logging.WARNING, logger="leantrain"):
        handle = leantrain.prepare(make_gpt2(), config)
        handle.step()
    (message,) = _messages(caplog)
    assert "token counts stay 0, so the LR that random-LTD sets by them does not move" in message


def test_a_prepared_model_still_copies_and_pickles(caplog: pytest.LogCaptureFixture) -> None:
    """The counter's hook rides along inert: no handle (nor its data loader) in the copy."""
    model = make_gpt2()
    handle = leantrain.prepare(
        model, PLD, [{"input_ids": torch.arange(16)}] * 8, micro_batch_size=2
    )
    copied = copy.deepcopy(model)
    buffer = io.BytesIO()
    torch.save(model, buffer)
    assert buffer.tell() > 0
    with caplog.at_level(logging.WARNING, logger="leantrain"):
        _train_forwards(copied, 30)
    assert not _messages(caplog)
    assert handle.model is model
