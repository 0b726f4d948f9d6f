"""`leantrain.prepare` inside an Accelerate training loop (one CPU process)."""

from __future__ import annotations

import pytest
import torch
from accelerate import Accelerator
from conftest import SEQ, make_gpt2
from test_prepare import TokenDataset, all_three, expected

import leantrain


@pytest.mark.parametrize("prepare_loader", [False, True])
def test_accelerate_loop(prepare_loader: bool) -> None:
    """Convert before `accelerator.prepare`; one `handle.step()` per optimizer step.

    `accelerator.prepare(loader)` rebuilds the DataLoader (dropping the handle's per-batch
    post-processing), so that pattern calls `handle.process_batch` in the loop; it is idempotent,
    so calling it on the handle's own loader too is harmless.
    """
    cfg = all_three("data_efficiency")
    torch.manual_seed(0)
    model = make_gpt2()
    handle = leantrain.prepare(model, cfg, TokenDataset(), gradient_accumulation_steps=1)
    accelerator = Accelerator(cpu=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loader = handle.dataloader()
    if prepare_loader:
        model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    else:
        model, optimizer = accelerator.prepare(model, optimizer)
    model.train()
    for t, batch in zip(range(5), loader, strict=False):
        batch = handle.process_batch(batch)
        want = expected(t, cfg)
        assert batch["input_ids"].shape[1] == want["curriculum/difficulty"] <= SEQ
        loss = model(**batch, labels=batch["input_ids"]).loss
        accelerator.backward(loss)
        optimizer.step()
        optimizer.zero_grad()
        handle.step()
        assert handle.metrics()["pld/theta"] == pytest.approx(expected(t + 1, cfg)["pld/theta"])
    assert handle.global_step == 5
    unwrapped = accelerator.unwrap_model(model)
    assert unwrapped is handle.model
    assert list(handle.revert().state_dict()) == list(unwrapped.state_dict())
