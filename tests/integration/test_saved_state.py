"""State saved by leantrain 0.1.0 loads and continues the same way (tests/fixtures/state_0.1.0,
written by tests/fixtures/write_state.py at commit 1c61e42)."""

from __future__ import annotations

import copy
import csv
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import make_gpt2

import leantrain
from leantrain.trainer import recipe_from_dict, train

FIXTURES = Path(__file__).parents[1] / "fixtures" / "state_0.1.0"
EXPECTED: dict[str, Any] = json.loads((FIXTURES / "expected.json").read_text())


def token_dataset(n: int = 24, seq: int = 16) -> list[dict[str, torch.Tensor]]:
    """`n` samples of `seq` tokens (a handle's state depends only on how many there are)."""
    ids = torch.randint(1, 97, (n, seq), generator=torch.Generator().manual_seed(0))
    return [{"input_ids": row, "attention_mask": torch.ones(seq, dtype=torch.long)} for row in ids]


@pytest.mark.parametrize("curriculum", ["data_efficiency", "legacy"])
def test_handle_state_of_0_1_0_loads_and_continues(curriculum: str) -> None:
    case = EXPECTED[f"handle_{curriculum}"]
    handle = leantrain.prepare(make_gpt2(), case["config"], token_dataset(), seq_length=16)
    handle.load(FIXTURES / f"handle_{curriculum}.pt")
    assert handle.global_step == 3
    assert handle.metrics() == pytest.approx(case["after_load"])
    assert handle.batch_sampler is not None
    assert next(iter(handle.batch_sampler)) == case["next_micro_batch"]
    handle.step()
    handle.step()
    assert handle.metrics() == pytest.approx(case["after_two_steps"])


def test_trainer_checkpoint_of_0_1_0_resumes(tmp_path: Path) -> None:
    case = EXPECTED["trainer"]
    corpus = tmp_path / "corpus.txt"
    lines = case["corpus"]
    corpus.write_text("".join(lines["line"].format(i=i) for i in range(lines["lines"])))
    recipe = copy.deepcopy(case["recipe"])
    recipe["data"]["train"] = str(corpus)
    recipe["output_dir"] = str(tmp_path / "run")
    shutil.copytree(FIXTURES / "trainer" / "checkpoints", tmp_path / "run" / "checkpoints")
    train(recipe_from_dict(recipe), resume=True, progress=False)
    with (tmp_path / "run" / "metrics.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["step"] for r in rows] == ["5", "6"]
    for got, want in zip(rows, case["rows_after"], strict=True):
        for key in (
            "lr",
            "tokens",
            "layer_tokens",
            "pld/theta",
            "random_ltd/reserved_length",
            "curriculum/difficulty",
            "tokens/effective_seqlen",
        ):
            assert float(got[key]) == pytest.approx(float(want[key]), rel=1e-12), key
        assert float(got["loss"]) == pytest.approx(float(want["loss"]), rel=1e-5)
