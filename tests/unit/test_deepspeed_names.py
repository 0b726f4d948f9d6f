"""Each controller's real method is the protocol's `step(global_step)`; DeepSpeed's names
(`update_state`, `update_seq`, `update_difficulty`) are aliases of it, for people coming from
DeepSpeed, so either name drives the same schedule."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from leantrain.curriculum import CurriculumScheduler
from leantrain.pld import ProgressiveLayerDrop
from leantrain.random_ltd import RandomLTDScheduler

RANDOM_LTD = {
    "enabled": True,
    "random_ltd_schedule": {
        "min_value": 8,
        "max_value": 64,
        "schedule_type": "fixed_linear",
        "schedule_config": {"require_steps": 10, "seq_per_step": 8},
    },
}
METRIC = {
    "index_to_sample_path": "unused",
    "min_difficulty": 8,
    "max_difficulty": 64,
    "schedule_type": "fixed_linear",
    "schedule_config": {"total_curriculum_step": 10, "difficulty_step": 8},
}
CONTROLLERS: dict[str, tuple[Callable[[], Any], str]] = {
    "pld": (lambda: ProgressiveLayerDrop(theta=0.5, gamma=0.1), "update_state"),
    "random_ltd": (
        lambda: RandomLTDScheduler(
            RANDOM_LTD, total_layer_num=4, random_ltd_layer_num=2, global_batch_size=2
        ),
        "update_seq",
    ),
    "curriculum": (lambda: CurriculumScheduler(METRIC), "update_difficulty"),
}


@pytest.mark.parametrize("name", CONTROLLERS)
def test_the_deepspeed_name_is_an_alias_of_step(name: str) -> None:
    build, deepspeed_name = CONTROLLERS[name]
    assert getattr(type(build()), deepspeed_name) is type(build()).step
    by_step, by_alias = build(), build()
    for t in (0, 3, 3, 7, 12):  # a repeated step (gradient accumulation) counts once
        assert by_step.step(t) == getattr(by_alias, deepspeed_name)(t)
        assert by_step.state_dict() == by_alias.state_dict()
    assert by_step.state_dict() != build().state_dict()  # the schedule moved
