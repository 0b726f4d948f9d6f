"""examples/lightning_module.py's module (the docs' Lightning code), run in a real
`lightning.Trainer` with all three techniques: every schedule advances once per optimizer step,
and the handle's state rides in the checkpoint."""

from __future__ import annotations

import importlib
import logging
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import all_three_sections, make_gpt2, make_inputs
from torch.utils.data import Dataset

L = pytest.importorskip("lightning")

EXAMPLES = Path(__file__).parents[2] / "examples"

SEQ, STEPS = 32, 4


class Blocks(Dataset):
    """Random 32-token blocks (dict samples), as a tokenised corpus gives them."""

    def __init__(self, n: int = 32) -> None:
        self.ids = make_inputs("gpt2", batch=n, seq=SEQ, seed=1)["input_ids"]

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


@pytest.fixture(scope="module")
def example_module() -> type:
    """examples/lightning_module.py's LeantrainModule (the docs show it), imported as the script
    imports its neighbours."""
    sys.path.insert(0, str(EXAMPLES))
    try:
        return importlib.import_module("lightning_module").LeantrainModule
    finally:
        sys.path.remove(str(EXAMPLES))


def _module(module_class: type) -> Any:
    """The example's module with a probe: the handle's step when training starts."""

    class Probed(module_class):  # type: ignore[misc, valid-type]
        def on_train_start(self) -> None:
            self.started_at = self.handle.global_step  # restored before training

    torch.manual_seed(0)
    config = all_three_sections(gamma=0.1, curriculum_steps=STEPS, ltd_steps=STEPS)
    return Probed(make_gpt2(), config, Blocks())


def _trainer(root: Path, steps: int) -> Any:
    return L.Trainer(
        max_steps=steps,
        accelerator="cpu",
        devices=1,
        use_distributed_sampler=False,  # the handle's sampler already shards by rank
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        default_root_dir=root,
    )


@pytest.fixture(autouse=True)
def _quiet_lightning() -> Any:
    """Lightning's own advice (worker counts, log intervals) is not what these tests check."""
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module="lightning")
        warnings.filterwarnings("ignore", module="pytorch_lightning")
        yield


def test_lightning_trainer_steps_every_schedule_and_resumes(
    tmp_path: Path, example_module: type
) -> None:
    module = _module(example_module)
    trainer = _trainer(tmp_path, STEPS)
    trainer.fit(module)
    handle = module.handle
    assert handle.global_step == trainer.global_step == STEPS
    metrics = handle.metrics()
    assert metrics["pld/theta"] == pytest.approx(0.5 * torch.exp(torch.tensor(-0.4)).item() + 0.5)
    assert metrics["curriculum/difficulty"] == SEQ  # warmed up to the full length
    assert metrics["random_ltd/reserved_length"] == SEQ
    assert metrics["tokens/consumed"] > 0 and metrics["tokens/layer_tokens"] > 0

    path = tmp_path / "last.ckpt"
    trainer.save_checkpoint(path)
    resumed = _module(example_module)
    assert resumed.handle.global_step == 0
    _trainer(tmp_path, STEPS + 1).fit(resumed, ckpt_path=path)
    assert resumed.started_at == STEPS and resumed.handle.global_step == STEPS + 1
    handle.step()  # where the uninterrupted run would be after one more step
    assert resumed.handle.metrics()["pld/theta"] == pytest.approx(handle.metrics()["pld/theta"])
