"""leantrain with DistributedDataParallel under torchrun: every process prepares the same model,
wraps it in DDP *after* `prepare`, and draws its own share of each global batch.

    torchrun --standalone --nproc_per_node 2 examples/torchrun_ddp.py [--steps 20]

NCCL on GPUs, gloo on CPUs. PLD's coins are shared by every rank (all skip the same blocks, so
none waits on another); random-LTD draws different tokens on each rank.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from toy import CONFIG, ByteBlocks, tiny_gpt2

import leantrain


def train(model: torch.nn.Module, config: Path, dataset: ByteBlocks, *, steps: int, device: str):
    """Train `steps` optimizer steps in this process of the group."""
    # [docs:torchrun]
    handle = leantrain.prepare(model, config, dataset, micro_batch_size=4)  # rank: from dist
    ddp = DistributedDataParallel(
        model.to(device),
        find_unused_parameters=handle.requirements.find_unused_parameters,  # PLD: True
    )
    optimizer = torch.optim.AdamW(ddp.parameters(), lr=1e-3)
    ddp.train()
    for batch in handle.dataloader():  # this rank's micro-batch of each global batch
        batch = {k: v.to(device) for k, v in batch.items()}
        ddp(**batch).loss.backward()  # gradients averaged over the ranks
        optimizer.step()
        optimizer.zero_grad()
        handle.step()
        if handle.global_step == steps:
            break
    # [/docs:torchrun]
    return handle


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args(argv)
    cuda = torch.cuda.is_available()
    dist.init_process_group("nccl" if cuda else "gloo")
    device = f"cuda:{os.environ.get('LOCAL_RANK', 0)}" if cuda else "cpu"
    torch.manual_seed(0)  # the same initial weights on every rank
    handle = train(tiny_gpt2(), CONFIG, ByteBlocks(), steps=args.steps, device=device)
    rank = f"{dist.get_rank()}/{dist.get_world_size()}"
    print(f"rank {rank} {handle.global_step} {handle.metrics()}")  # one string: ranks share stdout
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
