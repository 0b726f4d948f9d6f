"""Sequence-length warmup: truncation, reshape and the collate wrapper."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from leantrain.curriculum import (
    CurriculumScheduler,
    SeqlenWarmupCollator,
    reshape_batch,
    truncate_batch,
)
from leantrain.errors import ConfigError


def _batch(b: int = 3, s: int = 16) -> dict[str, torch.Tensor]:
    ids = torch.arange(b * s).reshape(b, s)
    return {
        "input_ids": ids,
        "labels": ids + 1000,
        "attention_mask": torch.ones(b, s, dtype=torch.long),
        "token_type_ids": torch.zeros(b, s, dtype=torch.long),
        "position_ids": torch.arange(s).expand(b, s),
        "my_mask": ids % 2,
        "label": torch.arange(b),
    }


def test_truncate_cuts_every_sequence_tensor() -> None:
    batch = _batch()
    out = truncate_batch(batch, 5, extra_keys=["my_mask"])
    for key in ("input_ids", "labels", "attention_mask", "token_type_ids", "position_ids"):
        assert torch.equal(out[key], batch[key][:, :5])
    assert torch.equal(out["my_mask"], batch["my_mask"][:, :5])
    assert torch.equal(out["label"], batch["label"])
    assert truncate_batch(batch, 64)["input_ids"] is batch["input_ids"]  # nothing to cut
    assert batch["input_ids"].shape == (3, 16)  # the input is not modified
    with pytest.raises(ConfigError, match="positive"):
        truncate_batch(batch, 0)


def test_reshape_keeps_tokens_per_step() -> None:
    batch = _batch()
    out = reshape_batch(batch, 4)
    assert out["input_ids"].shape == (12, 4)
    assert out["input_ids"].numel() == batch["input_ids"].numel()
    assert torch.equal(out["input_ids"].reshape(3, 16), batch["input_ids"])
    assert torch.equal(out["labels"], out["input_ids"] + 1000)
    assert torch.equal(out["position_ids"], torch.arange(4).expand(12, 4))
    assert torch.equal(out["label"], torch.arange(3).repeat_interleave(4))
    odd = reshape_batch(batch, 5)  # 16 // 5 = 3 rows of 5 per sample, last token dropped
    assert odd["input_ids"].shape == (9, 5)
    assert torch.equal(odd["input_ids"][:3].reshape(-1), batch["input_ids"][0, :15])


def _scheduler() -> CurriculumScheduler:
    return CurriculumScheduler(
        {
            "enabled": True,
            "curriculum_type": "seqlen",
            "min_difficulty": 4,
            "max_difficulty": 16,
            "schedule_type": "fixed_linear",
            "schedule_config": {"total_curriculum_step": 3, "difficulty_step": 4},
        }
    )


class _Rows(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 64

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": torch.full((16,), i), "attention_mask": torch.ones(16)}


def test_collator_follows_the_scheduler() -> None:
    sched = _scheduler()
    collate = SeqlenWarmupCollator(None, sched)
    loader = DataLoader(_Rows(), batch_size=2, collate_fn=collate)
    lengths = []
    for step, batch in enumerate(loader):
        lengths.append(batch["input_ids"].shape[1])
        sched.update_difficulty(step + 1)
        if step == 4:
            break
    assert lengths == [4, 8, 12, 16, 16]
    reshaping = SeqlenWarmupCollator(None, _scheduler(), mode="reshape")
    assert reshaping([_Rows()[0], _Rows()[1]])["input_ids"].shape == (8, 4)


def test_collator_difficulty_reaches_dataloader_workers() -> None:
    sched = _scheduler()
    sched.update_difficulty(3)  # set in the parent after the collator was built
    loader = DataLoader(
        _Rows(), batch_size=2, collate_fn=SeqlenWarmupCollator(None, sched), num_workers=1
    )
    sched.update_difficulty(2)  # stays at max: DeepSpeed semantics
    assert next(iter(loader))["input_ids"].shape == (2, 16)
