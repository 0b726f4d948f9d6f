"""leantrain with Hugging Face Accelerate: `prepare` before `accelerator.prepare`, and keep the
handle's data loader out of `accelerator.prepare` (it already gives each process its share).

    python examples/accelerate_loop.py [--steps 20]
    accelerate launch --num_processes 2 examples/accelerate_loop.py
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from accelerate import Accelerator, DistributedDataParallelKwargs
from toy import CONFIG, ByteBlocks, tiny_gpt2

import leantrain


def train(model: torch.nn.Module, config: Path, dataset: ByteBlocks, *, steps: int):
    """Train `steps` optimizer steps on every process Accelerate launched."""
    # [docs:accelerate]
    ddp = DistributedDataParallelKwargs(find_unused_parameters=True)  # PLD skips blocks
    accelerator = Accelerator(kwargs_handlers=[ddp])
    handle = leantrain.prepare(model, config, dataset, micro_batch_size=4,
                               rank=accelerator.process_index,
                               world_size=accelerator.num_processes)  # fmt: skip
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model, optimizer = accelerator.prepare(model, optimizer)  # after leantrain.prepare
    model.train()
    for batch in handle.dataloader():  # this process's share: not through accelerator.prepare
        batch = {k: v.to(accelerator.device) for k, v in batch.items()}
        accelerator.backward(model(**batch).loss)
        optimizer.step()
        optimizer.zero_grad()
        handle.step()
        if handle.global_step == steps:
            break
    # [/docs:accelerate]
    accelerator.print(handle.global_step, handle.metrics())
    return handle


def main(argv: list[str] | None = None) -> leantrain.LeantrainHandle:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args(argv)
    torch.manual_seed(0)  # the same initial weights in every process
    return train(tiny_gpt2(), CONFIG, ByteBlocks(), steps=args.steps)


if __name__ == "__main__":
    main()
