"""A fourth technique is one class and one registration: a tiny test-only technique runs
through `prepare`, the plain loop, `config check`, the HF Trainer callback and the trainer, and
is an arm of `leantrain compare`, its schedule scaled to each budget."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
from conftest import SEQ, make_gpt2, make_inputs
from pydantic import Field
from torch import nn
from torch.utils.data import Dataset
from torch.utils.hooks import RemovableHandle
from transformers import Trainer, TrainingArguments

import leantrain
from leantrain.adopt import TECHNIQUES, register_technique
from leantrain.adopt.hf import STATE_FILE, attach
from leantrain.cli import main
from leantrain.compare.arms import (
    arm_names,
    arm_recipe,
    parse_arms,
    recipe_techniques,
    scale_to_budget,
)
from leantrain.config import LeantrainConfig
from leantrain.config.raw import scaled_steps
from leantrain.config.resolve import section_of
from leantrain.config.schema import Section
from leantrain.errors import ConfigError
from leantrain.models import BlockList
from leantrain.technique import Requirements, Setup, Technique
from leantrain.trainer import recipe_from_dict, train

KEY = "forward_counter"


class ForwardCounterConfig(Section):
    """`forward_counter`: the section of the test-only technique."""

    enabled: bool = Field(False, description="Count training forwards.")
    until_step: int | None = Field(None, ge=1, description="Count until this step (None: always).")


class ForwardCounter(Technique):
    """Counts training forwards of the first block and the batches it sees (test only)."""

    name = KEY
    sections = (KEY,)
    columns: ClassVar[Mapping[str, str]] = {f"{KEY}/forwards": "f"}

    def __init__(self, blocks: BlockList, until_step: int | None = None) -> None:
        self.blocks = blocks
        self.until_step = until_step
        self.forwards = 0
        self.batches = 0
        self.steps: list[int] = []
        self.hook: RemovableHandle | None = None

    @classmethod
    def enabled(cls, config: LeantrainConfig) -> bool:
        return section_of(config, ForwardCounterConfig, KEY).enabled

    @classmethod
    def requirements(cls, config: LeantrainConfig) -> Requirements:
        return Requirements(converts_model=True)

    @classmethod
    def describe(cls, config: LeantrainConfig, *, num_layers: int, at_step: int) -> list[str]:
        on = cls.enabled(config)
        return [f"{KEY}: {'on, counts training forwards' if on else 'off'}"]

    @classmethod
    def scale_steps(cls, raw: dict[str, Any], factor: float) -> None:
        section = raw.get(KEY)
        if isinstance(section, dict) and section.get("until_step"):
            section["until_step"] = scaled_steps(section["until_step"], factor)

    @classmethod
    def from_config(cls, config: LeantrainConfig, setup: Setup) -> ForwardCounter:
        return cls(setup.blocks, section_of(config, ForwardCounterConfig, KEY).until_step)

    def apply(self, model: nn.Module) -> None:
        self.hook = self.blocks.blocks[0].register_forward_pre_hook(self._count)

    def _count(self, module: nn.Module, args: Any) -> None:
        until = self.until_step
        self.forwards += int(module.training and (until is None or self.steps[-1] < until))

    def revert(self, model: nn.Module) -> None:
        assert self.hook is not None
        self.hook.remove()

    def step(self, global_step: int) -> None:
        self.steps.append(global_step)

    def process_batch(self, batch: Any) -> Any:
        self.batches += 1
        return batch

    def metrics(self) -> dict[str, float]:
        return {f"{KEY}/forwards": float(self.forwards)}

    def state_dict(self) -> dict[str, Any]:
        return {"version": 1, "forwards": self.forwards}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.forwards = int(state["forwards"])


@pytest.fixture
def counter() -> Iterator[None]:
    """ForwardCounter registered at the end of the list for one test."""
    saved = list(TECHNIQUES)
    register_technique(ForwardCounter)
    yield
    TECHNIQUES[:] = saved


def with_pld() -> dict[str, Any]:
    """PLD and the counter, micro batch 2, accumulation 2."""
    return {
        "train_micro_batch_size_per_gpu": 2,
        "gradient_accumulation_steps": 2,
        KEY: {"enabled": True},
        "progressive_layer_drop": {"enabled": True, "gamma": 0.1},
    }


class LMDataset(Dataset):
    """Random token sequences with labels."""

    def __init__(self, n: int = 16) -> None:
        self.ids = torch.randint(1, 97, (n, SEQ), generator=torch.Generator().manual_seed(0))

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


@pytest.mark.usefixtures("counter")
def test_prepare_loops_over_a_registered_technique() -> None:
    model = make_gpt2()
    handle = leantrain.prepare(model, with_pld(), LMDataset(), seq_length=SEQ)
    assert [t.name for t in handle.techniques] == ["pld", KEY]  # the list's order
    counter = handle.techniques[-1]
    assert isinstance(counter, ForwardCounter) and counter.steps == [0]
    model.train()
    batches = iter(handle.dataloader())
    for _ in range(3):
        for _ in range(2):
            model(**next(batches)).loss.backward()
        handle.step()
    assert counter.forwards == counter.batches == 6 and counter.steps == [0, 1, 2, 3]
    assert handle.metrics()[f"{KEY}/forwards"] == 6.0
    assert handle.columns()[f"{KEY}/forwards"] == "f"
    state = handle.state_dict()
    assert state["techniques"][KEY] == {"version": 1, "forwards": 6}
    again = leantrain.prepare(make_gpt2(), with_pld(), LMDataset(), seq_length=SEQ)
    again.load_state_dict(state)
    assert again.metrics() == handle.metrics()
    handle.revert()
    model(**make_inputs("gpt2"))
    assert counter.forwards == 6  # reverted: the hook is gone


@pytest.mark.usefixtures("counter")
def test_config_check_describes_it_and_a_bad_section_names_its_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "ds.json"
    path.write_text(json.dumps({KEY: {"enabled": True}, "optimizer": {"type": "Adam"}}))
    assert main(["config", "check", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert f"{KEY}: on, counts training forwards" in lines
    assert "optimizer: kept, not used by leantrain" in lines
    assert lines[-1] == f"leantrain.prepare will apply: {KEY} (surgery order: {KEY})"
    with pytest.raises(ConfigError, match=f"{KEY}.enabled: got 'maybe'"):
        leantrain.prepare(make_gpt2(), {KEY: {"enabled": "maybe"}})


@pytest.mark.usefixtures("counter")
def test_hf_trainer_steps_logs_and_saves_it(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = make_gpt2()
    cfg = {KEY: {"enabled": True}}
    handle = leantrain.prepare(model, cfg, micro_batch_size=2, gradient_accumulation_steps=2)
    args = TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=3,
        per_device_train_batch_size=2,
        gradient_accumulation_steps=2,
        logging_steps=1,
        save_strategy="steps",
        save_steps=3,
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
    )
    trainer = Trainer(model=model, args=args, train_dataset=LMDataset())
    attach(trainer, handle)
    trainer.train()
    counter = handle.techniques[0]
    assert isinstance(counter, ForwardCounter)
    assert counter.forwards == counter.batches == 6 and counter.steps == [0, 1, 2, 3]
    logged = [h[f"{KEY}/forwards"] for h in trainer.state.log_history if "loss" in h]
    assert logged == [2.0, 4.0, 6.0]
    saved = torch.load(tmp_path / "checkpoint-3" / STATE_FILE, weights_only=False)
    assert saved["techniques"][KEY]["forwards"] == 6


@pytest.mark.usefixtures("counter")
def test_trainer_logs_its_column_and_resumes_it(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(f"line {i:04d} of a tiny corpus\n" for i in range(300)))
    recipe: dict[str, Any] = {
        "task": "causal_lm",
        "output_dir": str(tmp_path / "run"),
        "model": {
            "family": "gpt2",
            "config": {"n_layer": 2, "n_embd": 8, "n_head": 2, "n_positions": 32},
        },
        "data": {"train": str(corpus), "tokenizer": "byte", "seq_len": 16, "valid_subset": 4},
        "optim": {"micro_batch_size": 2, "grad_accum": 2, "max_steps": 3},
        "eval": {"interval": 3, "max_batches": 1},
        "checkpoint_interval": 2,
        "device": "cpu",
        KEY: {"enabled": True},
    }
    train(recipe_from_dict(recipe), stop_at=2, progress=False)
    train(recipe_from_dict(recipe), resume=True, progress=False)
    with (tmp_path / "run" / "metrics.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [float(r[f"{KEY}/forwards"]) for r in rows] == [2.0, 4.0, 6.0]  # resumed at 4


@pytest.mark.usefixtures("counter")
def test_compare_scales_it_to_a_budget_and_ablates_it() -> None:
    raw: dict[str, Any] = {
        "optim": {"max_steps": 400},
        KEY: {"enabled": True, "until_step": 100},
        "progressive_layer_drop": {"enabled": True, "gamma": 0.01},
    }
    assert ForwardCounter.arm == KEY and arm_names()[-1] == KEY  # its name, last in the list
    available = recipe_techniques(raw)
    assert available == {"pld", KEY}
    assert parse_arms(f"pld+{KEY},{KEY}", available) == ["baseline", f"pld+{KEY}", KEY]
    assert KEY not in arm_recipe(raw, "pld") and KEY not in arm_recipe(raw, "baseline")
    assert arm_recipe(raw, KEY) == {"optim": {"max_steps": 400}, KEY: raw[KEY]}
    run = scale_to_budget(arm_recipe(raw, "leantrain"), 100, reference=400)
    assert run[KEY] == {"enabled": True, "until_step": 25}
    assert run["progressive_layer_drop"]["gamma"] == pytest.approx(0.04)
    with pytest.raises(ConfigError, match="does not enable"):
        parse_arms(KEY, recipe_techniques({KEY: {"enabled": False}}) | {"pld"})


@pytest.mark.usefixtures("counter")
def test_its_step_valued_setting_is_the_one_scaled() -> None:
    model = make_gpt2()
    cfg = {"train_micro_batch_size_per_gpu": 2, KEY: {"enabled": True, "until_step": 1}}
    handle = leantrain.prepare(model, cfg, LMDataset(), seq_length=SEQ)
    model.train()
    batches = iter(handle.dataloader())
    for _ in range(3):
        model(**next(batches)).loss.backward()
        handle.step()
    assert handle.metrics()[f"{KEY}/forwards"] == 1.0  # counted during step 0 only
