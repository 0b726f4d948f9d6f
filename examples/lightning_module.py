"""leantrain in a PyTorch Lightning `LightningModule`: prepare in `__init__` (or `setup()` under
DDP), the handle's data loader, one `handle.step()` per optimizer step, the handle's state in
Lightning's checkpoints.

    python examples/lightning_module.py [--steps 20] [--out runs/lightning]
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import lightning as L
import torch
from toy import CONFIG, ByteBlocks, tiny_gpt2

import leantrain


# [docs:lightning]
class LeantrainModule(L.LightningModule):
    """A causal LM trained with leantrain's techniques."""

    def __init__(self, model: torch.nn.Module, config: Any, dataset: Any) -> None:
        super().__init__()
        self.model = model
        self.handle = leantrain.prepare(model, config, dataset, micro_batch_size=4)

    def train_dataloader(self) -> Any:
        return self.handle.dataloader()  # with Trainer(use_distributed_sampler=False)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self.model(**self.handle.process_batch(batch)).loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.model.parameters(), lr=1e-3)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        while self.handle.global_step < self.trainer.global_step:  # once per optimizer step
            self.handle.step()
        self.log_dict(self.handle.metrics())

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["leantrain"] = self.handle.state_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.handle.load_state_dict(checkpoint["leantrain"])


# [/docs:lightning]


def trainer(steps: int, out: Path) -> L.Trainer:
    """A Lightning Trainer for the module (one process here)."""
    return L.Trainer(
        max_steps=steps,
        use_distributed_sampler=False,  # the handle's batch sampler already shards by rank
        default_root_dir=out,
        enable_progress_bar=False,
        enable_model_summary=False,
        logger=False,
    )


def main(argv: list[str] | None = None) -> LeantrainModule:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path("runs/lightning"))
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    module = LeantrainModule(tiny_gpt2(), CONFIG, ByteBlocks())
    trainer(args.steps, args.out).fit(module)
    print(module.handle.global_step, module.handle.metrics())
    return module


if __name__ == "__main__":
    main()
