"""Sequence-length warmup: truncation, reshape and the collate wrapper."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
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


def _deepspeed_hf_reshape(x: torch.Tensor, d: int) -> torch.Tensor:
    """DeepSpeedExamples' `data_post_process` for `seqlen_reshape` (GPT fine-tuning with
    curriculum), restated: fold every row into rows of d, append each row's last d tokens, keep
    the first ceil(B·S / d) rows."""
    num_token = x.numel()
    reshape_len = (x.size(1) // d) * d
    rows = torch.cat((x[:, :reshape_len].contiguous().view(-1, d), x[:, -d:]), 0)
    return rows[: min(math.ceil(num_token / d), rows.size(0))]


@settings(max_examples=60, deadline=None)
@given(b=st.integers(1, 5), s=st.integers(2, 40), data=st.data())
def test_reshape_matches_deepspeeds_example(b: int, s: int, data: st.DataObject) -> None:
    d = data.draw(st.integers(1, s - 1))
    batch = _batch(b, s)
    out = reshape_batch(batch, d)
    for key in ("input_ids", "labels", "attention_mask", "token_type_ids"):
        assert torch.equal(out[key], _deepspeed_hf_reshape(batch[key], d)), key
    rows = out["input_ids"].shape[0]
    assert b * s <= rows * d < b * s + d  # tokens per step constant up to one row's padding
    assert torch.equal(out["position_ids"], torch.arange(d).expand(rows, d))
    # a per-sample tensor follows its rows: folds of sample i, then the tail rows of 0, 1, ...
    owner = torch.cat([torch.arange(b).repeat_interleave(s // d), torch.arange(b)])[:rows]
    assert torch.equal(out["label"], owner)


def test_reshape_with_a_remainder_keeps_the_tail_as_extra_rows() -> None:
    batch = _batch()  # 3 rows of 16
    odd = reshape_batch(batch, 5)  # 3 rows of 5 per sample, then ceil(3·1/5) = 1 tail row
    assert odd["input_ids"].shape == (10, 5)
    assert torch.equal(odd["input_ids"][:3].reshape(-1), batch["input_ids"][0, :15])
    assert torch.equal(odd["input_ids"][9], batch["input_ids"][0, -5:])  # sample 0's last 5


def _pairwise_mask(b: int, s: int) -> torch.Tensor:
    """A [B, 1, S, S] mask with distinct entries, as models taking 4-D masks get."""
    return torch.arange(b * s * s, dtype=torch.float32).reshape(b, 1, s, s)


def test_truncate_cuts_4d_masks_on_both_sequence_dimensions() -> None:
    batch = _batch() | {"attention_mask": _pairwise_mask(3, 16)}
    out = truncate_batch(batch, 5)
    assert torch.equal(out["attention_mask"], batch["attention_mask"][:, :, :5, :5])
    assert out["input_ids"].shape == (3, 5)
    heads = truncate_batch(
        batch | {"attention_mask": _pairwise_mask(3, 16).expand(3, 8, 16, 16)}, 5
    )
    assert heads["attention_mask"].shape == (3, 8, 5, 5)  # [B, H, S, S] too, even when H > d
    padding = truncate_batch(batch | {"attention_mask": torch.ones(3, 1, 1, 16)}, 5)
    assert padding["attention_mask"].shape == (3, 1, 1, 5)  # broadcast padding mask [B,1,1,S]


def test_reshape_folds_4d_masks_into_diagonal_blocks() -> None:
    mask = _pairwise_mask(2, 10)
    out = reshape_batch(_batch(2, 10) | {"attention_mask": mask}, 4)
    # rows: sample 0 folds [0:4], [4:8]; sample 1 folds; then the tails [6:10] of samples 0, 1
    want = [mask[0, :, 0:4, 0:4], mask[0, :, 4:8, 4:8], mask[1, :, 0:4, 0:4]]
    want += [mask[1, :, 4:8, 4:8], mask[0, :, 6:10, 6:10]]
    assert out["input_ids"].shape == (5, 4)
    assert torch.equal(out["attention_mask"], torch.stack(want))


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
