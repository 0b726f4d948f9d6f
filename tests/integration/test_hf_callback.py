"""The Hugging Face integration in a real `transformers.Trainer` run on a tiny GPT-2."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import SEQ, make_gpt2
from torch.utils.data import Dataset
from transformers import Trainer, TrainingArguments

import leantrain
from leantrain.adopt.hf import STATE_FILE, LeantrainCallback, attach
from leantrain.curriculum import CurriculumSampler
from leantrain.pld import pld_theta
from leantrain.random_ltd import reserved_length

STEPS = 4


class LMDataset(Dataset):
    """Random token sequences with labels (dict samples, the Trainer's default collator stacks)."""

    def __init__(self, n: int = 32) -> None:
        g = torch.Generator().manual_seed(0)
        self.ids = torch.randint(1, 97, (n, SEQ), generator=g)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


def config(*, warmup: bool) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "progressive_layer_drop": {"enabled": True, "theta": 0.5, "gamma": 0.2},
        "data_efficiency": {
            "enabled": True,
            "data_routing": {
                "enabled": True,
                "random_ltd": {
                    "enabled": True,
                    "random_ltd_layer_id": [1, 2],
                    "random_ltd_schedule": {
                        "min_value": 4,
                        "max_value": SEQ,
                        "schedule_config": {"require_steps": 4, "seq_per_step": 2},
                    },
                },
            },
        },
    }
    if warmup:
        cfg["curriculum_learning"] = {
            "enabled": True,
            "curriculum_type": "seqlen",
            "min_difficulty": 8,
            "max_difficulty": SEQ,
            "schedule_type": "fixed_linear",
            "schedule_config": {"total_curriculum_step": 4, "difficulty_step": 2},
        }
    return cfg


#: Data Efficiency curriculum by truncation (DeepSpeed's `seqlen_truncate`), 8 -> 16 tokens.
SAMPLING = {
    "enabled": True,
    "curriculum_learning": {
        "enabled": True,
        "curriculum_metrics": {
            "seqlen_truncate": {
                "clustering_type": "single_cluster",
                "min_difficulty": 8,
                "max_difficulty": SEQ,
                "schedule_type": "fixed_linear",
                "schedule_config": {"total_curriculum_step": 4, "difficulty_step": 2},
            }
        },
    },
}


def training_args(out: Path, **overrides: Any) -> TrainingArguments:
    kwargs: dict[str, Any] = {
        "output_dir": str(out),
        "max_steps": STEPS,
        "per_device_train_batch_size": 2,
        "gradient_accumulation_steps": 2,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": [],
        "use_cpu": True,
        "disable_tqdm": True,
        "learning_rate": 1e-3,
        "seed": 0,
    }
    return TrainingArguments(**{**kwargs, **overrides})


class Recorder(LeantrainCallback):
    """Records the handle's values as each training step begins, and batch lengths seen."""

    def __init__(self, handle: leantrain.LeantrainHandle) -> None:
        super().__init__(handle)
        self.begins: list[tuple[int, float, float]] = []

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        m = self.handle.metrics()
        self.begins.append((state.global_step, m["pld/theta"], m["random_ltd/reserved_length"]))


def test_callback_advances_schedules_with_trainer_steps(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = make_gpt2()
    handle = leantrain.prepare(
        model, config(warmup=False), micro_batch_size=2, gradient_accumulation_steps=2
    )
    recorder = Recorder(handle)
    trainer = Trainer(
        model=model, args=training_args(tmp_path), train_dataset=LMDataset(), callbacks=[recorder]
    )
    trainer.train()
    assert handle.global_step == trainer.state.global_step == STEPS
    # each optimizer step t ran at θ(t) and r(t)
    assert [b[0] for b in recorder.begins] == list(range(STEPS))
    for t, theta, r in recorder.begins:
        assert theta == pytest.approx(pld_theta(t, 0.5, 0.2))
        assert r == reserved_length(t, min_value=4, max_value=SEQ, require_steps=4, seq_per_step=2)
    # the namespaced metrics are in the Trainer's log history, at the step they belong to
    logged = [h for h in trainer.state.log_history if "loss" in h]
    assert [h["step"] for h in logged] == list(range(1, STEPS + 1))
    for h in logged:
        assert h["pld/theta"] == pytest.approx(pld_theta(h["step"], 0.5, 0.2))
        assert "random_ltd/reserved_length" in h
        assert "tokens/layer_tokens" in h
    assert logged[-1]["tokens/consumed"] > logged[0]["tokens/consumed"] > 0


def test_attach_truncates_batches_and_saves_state(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = make_gpt2()
    handle = leantrain.prepare(
        model, config(warmup=True), micro_batch_size=2, gradient_accumulation_steps=2
    )
    lengths: list[tuple[int, int]] = []
    trainer = Trainer(
        model=model,
        args=training_args(tmp_path, save_strategy="steps", save_steps=2),
        train_dataset=LMDataset(),
    )
    attach(trainer, handle)
    original = trainer.training_step

    def record(model: Any, inputs: dict[str, torch.Tensor], *args: Any) -> torch.Tensor:
        lengths.append((trainer.state.global_step, inputs["input_ids"].shape[1]))
        return original(model, inputs, *args)

    trainer.training_step = record  # type: ignore[method-assign]
    trainer.train()
    # seqlen warmup 8 -> 16 over 4 steps in multiples of 2; DeepSpeed's curriculum step is
    # 1-based, so every micro-batch of global step t is cut to d(t + 1) = 10, 12, 14, 16 —
    # including the first micro-batch of each step, which accelerate collates a step ahead
    want = {0: 10, 1: 12, 2: 14, 3: 16}
    assert lengths == [(t, want[t]) for t in range(STEPS) for _ in range(2)]
    logged = [h for h in trainer.state.log_history if "loss" in h]
    assert [h["curriculum/difficulty"] for h in logged] == [12, 14, 16, 16]
    saved = tmp_path / "checkpoint-2" / STATE_FILE
    assert saved.is_file()
    state = torch.load(saved, weights_only=False)
    assert state["global_step"] == 2


def test_attach_wires_the_curriculum_sampler(tmp_path: Path) -> None:
    cfg = config(warmup=False)
    cfg["data_efficiency"]["data_sampling"] = SAMPLING
    data = LMDataset()
    torch.manual_seed(0)
    model = make_gpt2()
    handle = leantrain.prepare(model, cfg, data, micro_batch_size=2, gradient_accumulation_steps=2)
    # the order the curriculum sampler draws, from an identical fresh sampler
    reference = CurriculumSampler(
        cfg, micro_batch_size=2, gradient_accumulation_steps=2, num_samples=len(data)
    )
    order = list(itertools.islice(iter(reference), 2 * STEPS))
    trainer = Trainer(model=model, args=training_args(tmp_path), train_dataset=data)
    attach(trainer, handle)
    seen: list[torch.Tensor] = []
    original = trainer.training_step

    def record(model: Any, inputs: dict[str, torch.Tensor], *args: Any) -> torch.Tensor:
        seen.append(inputs["input_ids"].cpu())
        return original(model, inputs, *args)

    trainer.training_step = record  # type: ignore[method-assign]
    trainer.train()
    assert len(seen) == len(order) == 2 * STEPS
    for k, (ids, batch) in enumerate(zip(order, seen, strict=True)):
        length = 10 + 2 * (k // 2) if k < 6 else SEQ  # d(t + 1) for micro-batch k of step k // 2
        torch.testing.assert_close(batch, data.ids[ids][:, :length])


def run_trainer(
    out: Path, cfg: dict[str, Any], resume: Path | None = None
) -> list[dict[str, float]]:
    """Train STEPS steps (checkpoint at step 2) with `cfg`; the loss and metric records."""
    torch.manual_seed(0)
    model = make_gpt2()
    data = LMDataset()
    handle = leantrain.prepare(model, cfg, data, micro_batch_size=2, gradient_accumulation_steps=2)
    args = training_args(out, save_strategy="steps", save_steps=2, dataloader_num_workers=0)
    trainer = Trainer(model=model, args=args, train_dataset=data)
    attach(trainer, handle)
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    return [h for h in trainer.state.log_history if "loss" in h]


@pytest.mark.parametrize("curriculum", ["legacy", "data_efficiency"])
def test_resume_from_a_trainer_checkpoint_continues_exactly(
    tmp_path: Path, curriculum: str
) -> None:
    cfg = config(warmup=curriculum == "legacy")
    if curriculum == "data_efficiency":
        cfg["data_efficiency"]["data_sampling"] = SAMPLING
    full = run_trainer(tmp_path, cfg)
    resumed = run_trainer(tmp_path, cfg, resume=tmp_path / "checkpoint-2")
    resumed = [h for h in resumed if h["step"] > 2]  # the history before comes from the checkpoint
    assert [h["step"] for h in resumed] == [3, 4]
    for got, want in zip(resumed, full[2:], strict=True):
        for key in ("pld/theta", "random_ltd/reserved_length", "curriculum/difficulty"):
            assert got[key] == want[key]
        for key in ("tokens/consumed", "tokens/layer_tokens"):
            assert got[key] == pytest.approx(want[key])
        assert got["loss"] == pytest.approx(want["loss"], rel=1e-4)
