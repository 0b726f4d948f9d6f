"""leantrain in your own PyTorch training loop, on one process.

`prepare` converts the model in place and returns a handle; the handle's data loader draws the
batches (cut to the current sequence length); `handle.step()` runs once per optimizer step; the
handle's state is saved beside the model's. Trains the toy GPT-2 (`toy.py`) with
`ds_config.json`: PLD, sequence-length warmup and random-LTD.

    python examples/plain_loop.py [--steps 20] [--out runs/plain_loop]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from toy import CONFIG, ByteBlocks, tiny_gpt2

import leantrain


def train(model: torch.nn.Module, config: Path, dataset: ByteBlocks, *, steps: int, out: Path):
    """Train `steps` optimizer steps; save the model, optimizer and handle states in `out`."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device).train()
    # [docs:plain-loop]
    accumulation = 2
    handle = leantrain.prepare(model, config, dataset, micro_batch_size=4,
                               gradient_accumulation_steps=accumulation)  # fmt: skip
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for micro_step, batch in enumerate(handle.dataloader()):  # cut to this step's length
        batch = {k: v.to(device) for k, v in batch.items()}
        loss = model(**batch).loss / accumulation
        loss.backward()
        if (micro_step + 1) % accumulation == 0:
            optimizer.step()
            optimizer.zero_grad()
            handle.step()  # once per optimizer step: advances θ, r and the difficulty
            print(handle.global_step, handle.metrics())
            if handle.global_step == steps:
                break
    torch.save(
        {
            "model": handle.plain_state_dict(),  # plain keys: loads into the unconverted model
            "optimizer": optimizer.state_dict(),
            "leantrain": handle.state_dict(),  # schedules, data order, token counts
        },
        out / "checkpoint.pt",
    )
    # [/docs:plain-loop]
    return handle


def main(argv: list[str] | None = None) -> leantrain.LeantrainHandle:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path("runs/plain_loop"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    return train(tiny_gpt2(), CONFIG, ByteBlocks(), steps=args.steps, out=args.out)


if __name__ == "__main__":
    main()
