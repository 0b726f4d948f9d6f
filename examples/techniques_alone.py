"""Each technique alone, without `leantrain.prepare`: a reversible conversion and a controller
you step yourself. PLD from its arguments; random-LTD from a real DeepSpeedExamples config
(`deepspeed_configs/ds_config_gpt_base_random_ltd.json`: GPT-2's 12 blocks, 10 of them keeping
128 tokens at first), with the LR following consumed layer-tokens.

    python examples/techniques_alone.py [--steps 10]
"""

from __future__ import annotations

import argparse
from itertools import islice
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from toy import ByteBlocks, tiny_gpt2

import leantrain

DS_CONFIG = Path(__file__).parent / "deepspeed_configs" / "ds_config_gpt_base_random_ltd.json"


def pld_alone(model: torch.nn.Module, loader: DataLoader, steps: int) -> None:
    """Progressive Layer Dropping for `steps` optimizer steps, then the plain model again."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    # [docs:pld-alone]
    pld = leantrain.ProgressiveLayerDrop(theta=0.5, gamma=0.001)  # or .from_config(ds_config)
    leantrain.convert_to_progressive_layer_drop(model, pld)  # finds BERT/GPT-2/Llama/ViT blocks
    for step, batch in enumerate(islice(loader, steps)):
        pld.update_state(step)  # θ(step), once per optimizer step; the blocks read it
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        print({"pld/theta": pld.get_theta()})
    leantrain.revert_progressive_layer_drop(model)  # the plain model again, same state_dict keys
    # [/docs:pld-alone]


def random_ltd_alone(model: torch.nn.Module, loader: DataLoader, steps: int, ds_config: Path):
    """Random-LTD for `steps` optimizer steps, with its layer-token LR; then the plain model."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()
    # [docs:random-ltd-alone]
    ltd = leantrain.RandomLTDScheduler(ds_config)  # the whole DeepSpeed file, or its section
    leantrain.convert_to_random_ltd(model, ltd)  # before torch.compile, DDP or FSDP
    lr = leantrain.LayerTokenLRScheduler(  # optional: the LR decays by consumed layer-tokens
        optimizer, ltd, total_layer_tokens=ltd.total_layer_tokens(steps)
    )
    for batch in islice(loader, steps):
        ltd.step()  # once per optimizer step, before its forwards
        model(**batch).loss.backward()
        optimizer.step()
        lr.step()
        optimizer.zero_grad()
        print(ltd.metrics())  # random_ltd/reserved_length, random_ltd/consumed_layer_tokens
    leantrain.revert_random_ltd(model)
    # [/docs:random-ltd-alone]
    return ltd


def main(argv: list[str] | None = None) -> leantrain.RandomLTDScheduler:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--config", type=Path, default=DS_CONFIG, help="a random-LTD config")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    pld_alone(tiny_gpt2(), DataLoader(ByteBlocks(), batch_size=4, shuffle=True), args.steps)
    long = DataLoader(ByteBlocks(seq=256), batch_size=2, shuffle=True)  # r = 128 of 256 at first
    return random_ltd_alone(tiny_gpt2(layers=12, positions=256), long, args.steps, args.config)


if __name__ == "__main__":
    main()
