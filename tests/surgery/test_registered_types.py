"""Every registered model type is in the grid, describes its blocks truthfully, and goes through
`leantrain.prepare` and the trainer's `model.family` without `layers=`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from settings import BATCH, CASES, TECHNIQUES, ModelCase, build, make_inputs

import leantrain
from leantrain.models import find_stacks, registered_model_types
from leantrain.surgery import conversions, forward_slots
from leantrain.trainer.model import build_model
from leantrain.trainer.recipe import recipe_from_dict
from leantrain.trainer.task import TaskData

pytestmark = pytest.mark.usefixtures("one_thread")

_TRAINER_TASK = {
    "causal_lm": "causal_lm",
    "masked_lm": "masked_lm",
    "image": "image_classification",
}
_HF = [pytest.param(c, id=c.id) for c in CASES if c.model_type is not None]


def test_every_registered_type_is_in_the_grid() -> None:
    assert set(registered_model_types()) == {c.model_type for c in CASES if c.model_type}


@pytest.mark.parametrize("case", _HF)
def test_the_registry_describes_the_blocks(case: ModelCase) -> None:
    """Each stack's blocks return what `Stack.block_outputs` says, and every argument the
    registry names is one the block's forward takes (no stale entry after an HF update)."""
    model = build(case)
    seen: dict[str, int] = {}
    hooks = []
    for found in find_stacks(model):
        assert found.stack is not None
        slots = forward_slots(found.blocks[0])
        named = [found.stack.mask_arg, *found.stack.routes, *found.stack.echo_outputs.values()]
        for name in filter(None, named):
            assert name in slots.names or slots.var_keyword, (found.path, name)

        def record(module: Any, args: Any, out: Any, path: str = found.path) -> None:
            seen[path] = len(out) if isinstance(out, tuple) else 0

        hooks.append(found.blocks[0].register_forward_hook(record))
        seen[found.path] = -1
    with torch.no_grad():
        model(**make_inputs(case))
    for h in hooks:
        h.remove()
    assert seen == {s.path: s.stack.block_outputs for s in find_stacks(model) if s.stack}


def _trainer_inputs(case: ModelCase, task: str) -> dict[str, torch.Tensor]:
    batch = make_inputs(case)
    batch.pop("decoder_input_ids", None)
    if task == "image_classification":
        return {**batch, "labels": torch.arange(BATCH)}
    if task == "sequence_classification":  # T5 reads the sentence at its <eos> token
        last = batch["attention_mask"].sum(1) - 1
        batch["input_ids"][torch.arange(BATCH), last] = 2
        return {**batch, "labels": torch.arange(BATCH) % 2}
    return {**batch, "labels": batch["input_ids"]}


@pytest.mark.parametrize(
    "case",
    [pytest.param(c, id=c.model_type) for c in CASES if c.model_type and not c.ltd_layers],
)
def test_trainer_family_and_prepare_without_layers(case: ModelCase, tmp_path: Path) -> None:
    (tmp_path / "train.txt").write_text("x")
    task = case.trainer_task or _TRAINER_TASK[case.task]
    fields: dict[str, Any] = {"num_labels": 10} if task == "image_classification" else {}
    if case.task != "image":
        fields = {"vocab_size": 97, "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}
        fields |= {"num_labels": 2} if task == "sequence_classification" else {}
    recipe = recipe_from_dict(
        {
            "task": task,
            "model": {"family": case.model_type, "config": case.config},
            "data": {"train": str(tmp_path / "train.txt"), "seq_len": 16}
            | ({"glue_task": "sst2"} if task == "sequence_classification" else {}),
        }
    )
    torch.manual_seed(0)
    model = build_model(
        recipe, TaskData(train=[], valid=None, collate_fn=list, model_fields=fields)
    )
    ltd = next(t for t in TECHNIQUES if t.name == "random_ltd").why_not(case) is None
    schedule = {
        "min_value": 8,
        "max_value": 64,
        "schedule_config": {"require_steps": 4, "seq_per_step": 4},
    }
    config: dict[str, Any] = {
        "progressive_layer_drop": {"enabled": True, "theta": 0.5, "gamma": 0.1}
    }
    if ltd:
        routing = {
            "enabled": True,
            "random_ltd": {"enabled": True, "random_ltd_schedule": schedule},
        }
        config["data_efficiency"] = {"enabled": True, "data_routing": routing}
    handle = leantrain.prepare(model, config, micro_batch_size=BATCH)
    record = conversions(model)
    assert len(record["pld"].stacks) == len(find_stacks(model))  # both stacks of T5 and BART
    assert ("random_ltd" in record) == ltd
    model.train()
    for _ in range(2):
        loss = model(**_trainer_inputs(case, task)).loss
        loss.backward()
        assert torch.isfinite(loss)
        handle.step()
    handle.revert()
    assert not conversions(model)


@pytest.mark.parametrize(
    "case", [pytest.param(c, id=c.id) for c in CASES if c.task == "seq2seq" and not c.ltd_layers]
)
def test_prepare_summary_counts_the_blocks_of_every_stack(case: ModelCase) -> None:
    """PLD through `prepare` converts encoder and decoder; its summary names both stacks with
    their own block counts. With `layers=`, PLD converts (and names) only that stack."""
    config = {"progressive_layer_drop": {"enabled": True, "theta": 0.5, "gamma": 0.1}}
    model = build(case)
    stacks = find_stacks(model)
    assert len(stacks) == 2
    handle = leantrain.prepare(model, config)
    expected = " and ".join(f"the {len(s)} blocks of {s.path}" for s in stacks)
    assert f"{expected} skipped" in repr(handle)
    handle.revert()
    decoder = stacks[1]
    handle = leantrain.prepare(model, config, layers=decoder.path)
    assert [s.path for s in conversions(model)["pld"].stacks] == [decoder.path]
    assert f"the {len(decoder)} blocks of {decoder.path} skipped" in repr(handle)
    assert stacks[0].path not in repr(handle)
    handle.revert()
